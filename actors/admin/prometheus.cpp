#include "actors/admin/prometheus.hpp"

#include <cassert>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

namespace p2proxy {

std::string metric_value::to_string() const {
  switch (kind_) {
    case kind::unsigned_int:
      return fmt::format("{}", unsigned_);
    case kind::signed_int:
      return fmt::format("{}", signed_);
    case kind::real:
      if (std::isnan(real_))
        return "NaN";
      if (std::isinf(real_))
        return real_ > 0 ? "+Inf" : "-Inf";
      return fmt::format("{}", real_);
  }
  return "NaN";
}

namespace {

/// Backslash and newline always; the double quote only in label values.
std::string escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

} // namespace

std::string escape_label_value(std::string_view text) {
  return escape(text, true);
}

std::string escape_help(std::string_view text) {
  return escape(text, false);
}

void prometheus_writer::counter(std::string_view name, std::string_view help,
                                metric_value value,
                                const metric_labels& labels) {
  add("counter", name, help, value, labels);
}

void prometheus_writer::gauge(std::string_view name, std::string_view help,
                              metric_value value, const metric_labels& labels) {
  add("gauge", name, help, value, labels);
}

void prometheus_writer::add(const char* type, std::string_view name,
                            std::string_view help, metric_value value,
                            const metric_labels& labels) {
  auto [it, fresh] = index_.emplace(std::string{name}, families_.size());
  if (fresh)
    families_.push_back({std::string{name}, std::string{help}, type, {}});
  auto& fam = families_[it->second];
  // One name with two types is a bug in the caller, not input to handle.
  assert(std::strcmp(fam.type, type) == 0 && "metric family changed its type");
  std::string sample{name};
  if (!labels.empty()) {
    sample += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i > 0)
        sample += ',';
      sample += labels[i].first;
      sample += "=\"";
      sample += escape_label_value(labels[i].second);
      sample += '"';
    }
    sample += '}';
  }
  sample += ' ';
  sample += value.to_string();
  fam.samples.push_back(std::move(sample));
}

std::string prometheus_writer::str() const {
  std::string out;
  for (auto& fam : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", fam.name,
                       escape_help(fam.help), fam.name, fam.type);
    for (auto& sample : fam.samples) {
      out += sample;
      out += '\n';
    }
  }
  return out;
}

} // namespace p2proxy
