#include "node/config_reader.hpp"

#include <cctype>
#include <string>

#include <fmt/format.h>

#include "actors/identity/identity.hpp"

namespace p2proxy::config_detail {

bool is_resource_name(std::string_view s) {
  auto first_ok
    = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (s.empty() || s.size() > 63 || !first_ok(s.front()))
    return false;
  for (char c : s)
    if (!first_ok(c) && c != '-' && c != '_' && c != '.')
      return false;
  return true;
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

int line_of(const toml::node& n) {
  return static_cast<int>(n.source().begin.line);
}

std::string join(const std::vector<std::string_view>& xs) {
  std::string out;
  for (auto x : xs) {
    if (!out.empty())
      out += ", ";
    out += x;
  }
  return out;
}

std::string dotted(const std::string& prefix, std::string_view name) {
  if (prefix.empty())
    return std::string{name};
  return prefix + "." + std::string{name};
}

void reader::fail(int line, const std::string& key,
                  const std::string& reason) const {
  throw config_error(file_, line, key, reason);
}

void reader::check_keys(const toml::table& t, const std::string& prefix,
                        const std::vector<std::string_view>& known) const {
  for (auto&& [k, v] : t) {
    bool ok = false;
    for (auto name : known)
      ok = ok || k.str() == name;
    if (ok)
      continue;
    auto line = static_cast<int>(k.source().begin.line);
    if (line == 0)
      line = line_of(v);
    fail(line, dotted(prefix, k.str()),
         fmt::format("unknown key '{}' (known: {})", k.str(), join(known)));
  }
}

const toml::table* reader::table_at(const toml::table& root,
                                    std::string_view name) {
  auto n = root.get(name);
  if (n == nullptr)
    return nullptr;
  if (!n->is_table())
    fail(line_of(*n), std::string{name},
         fmt::format("expected a table [{}], got {}", name, type_name(*n)));
  return n->as_table();
}

void reader::missing(const toml::table* t, const std::string& key,
                     const std::string& hint) const {
  fail(t != nullptr ? line_of(*t) : 0, key, "missing; " + hint);
}

std::string reader::string_of(const toml::node& n, const std::string& key,
                              const std::string& like) const {
  if (!n.is_string())
    fail(line_of(n), key,
         fmt::format("expected {}, got {}", like, type_name(n)));
  return n.as_string()->get();
}

endpoint reader::endpoint_of(const toml::node& n, const std::string& key,
                             bool allow_port_zero) const {
  auto text = string_of(n, key, endpoint_like);
  std::string why;
  auto ep = parse_endpoint(text, why);
  if (!ep)
    fail(line_of(n), key,
         fmt::format("invalid address \"{}\": {}; write it like "
                     "\"127.0.0.1:7000\"",
                     text, why));
  if (ep->port == 0 && !allow_port_zero)
    fail(line_of(n), key,
         fmt::format("invalid address \"{}\": port 0 cannot be connected to",
                     text));
  return *ep;
}

milliseconds reader::duration_of(const toml::node& n, const std::string& key,
                                 bool allow_zero) const {
  auto text = string_of(n, key, duration_like);
  milliseconds out{0};
  if (!parse_duration(text, out))
    fail(line_of(n), key,
         fmt::format("invalid duration \"{}\"; expected a whole number and "
                     "a unit (ms, s, m, h), like \"500ms\", \"15s\" or "
                     "\"2m\"",
                     text));
  if (out.count() == 0 && !allow_zero)
    fail(line_of(n), key, "must be longer than 0");
  return out;
}

uint64_t reader::size_of(const toml::node& n, const std::string& key) const {
  int64_t value = -1;
  if (n.is_integer()) {
    value = n.as_integer()->get();
  } else if (n.is_string()) {
    auto text = n.as_string()->get();
    size_t pos = 0;
    while (pos < text.size()
           && std::isdigit(static_cast<unsigned char>(text[pos])))
      ++pos;
    auto unit = text.substr(pos);
    int64_t mult = unit == "" || unit == "B" ? 1
                   : unit == "KiB"           ? 1024
                   : unit == "MiB"           ? 1024 * 1024
                   : unit == "GiB"           ? int64_t{1} << 30
                                             : -1;
    if (pos > 0 && pos <= 12 && mult > 0)
      value = std::stoll(text.substr(0, pos)) * mult;
  }
  if (value < 64 * 1024 || value > (int64_t{1} << 32))
    fail(line_of(n), key,
         "expected a size between 64KiB and 4GiB, like \"16MiB\" or "
         "16777216");
  return static_cast<uint64_t>(value);
}

const toml::array& reader::array_of(const toml::node& n, const std::string& key,
                                    const std::string& like) const {
  if (!n.is_array())
    fail(line_of(n), key,
         fmt::format("expected {}, got {}", like, type_name(n)));
  return *n.as_array();
}

std::string
reader::protocol_of(const toml::node& n, const std::string& key,
                    const std::vector<std::string_view>& known) const {
  auto text = string_of(n, key, "a string like \"tcp\"");
  for (auto k : known)
    if (text == k)
      return text;
  fail(line_of(n), key,
       fmt::format("unknown protocol \"{}\" (known: {})", text, join(known)));
}

std::string reader::resource_of(const toml::node& n,
                                const std::string& key) const {
  auto text = string_of(n, key, "a string like \"cam1\"");
  if (!is_resource_name(text))
    fail(line_of(n), key,
         fmt::format("invalid resource name \"{}\"; use 1-63 characters "
                     "a-z, 0-9, '-', '_', '.', starting with a letter or "
                     "digit",
                     text));
  return text;
}

std::string reader::node_id_of(const toml::node& n, const std::string& key,
                               bool allow_star) const {
  auto text = string_of(n, key, "a node id string");
  if (looks_like_node_id(text) || (allow_star && text == "*"))
    return text;
  fail(line_of(n), key,
       fmt::format("\"{}\" is not a node id{} (52 characters a-z and 2-7, as "
                   "printed by `p2proxy id --key node.key`)",
                   text, allow_star ? " or \"*\"" : ""));
}

std::string reader::resolve(const std::string& p) const {
  std::filesystem::path path{p};
  if (path.is_relative() && !dir_.empty())
    return (dir_ / path).string();
  return p;
}

const toml::table* reader::entry_table(const toml::node& n,
                                       const std::string& key,
                                       const std::string& like) const {
  if (!n.is_table())
    fail(line_of(n), key,
         fmt::format("expected {}, got {}", like, type_name(n)));
  return n.as_table();
}

const toml::array* reader::entries(const toml::table& root,
                                   const char* name) const {
  auto n = root.get(name);
  if (n == nullptr)
    return nullptr;
  if (!n->is_array())
    fail(line_of(*n), name,
         fmt::format("expected [[{}]] entries, got {}", name, type_name(*n)));
  return n->as_array();
}

} // namespace p2proxy::config_detail
