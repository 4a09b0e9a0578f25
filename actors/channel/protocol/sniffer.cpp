#include "actors/channel/protocol/sniffer.hpp"

#include <algorithm>
#include <utility>

#include "proto/tunnel.pb.h"

namespace p2proxy {

const char* to_string(sniff_error x) {
  switch (x) {
    case sniff_error::none:
      return "none";
    case sniff_error::bad_request:
      return "bad_request";
    case sniff_error::line_too_long:
      return "line_too_long";
    case sniff_error::head_too_large:
      return "head_too_large";
    case sniff_error::no_resource:
      return "no_resource";
    case sniff_error::unsupported:
      return "unsupported";
    case sniff_error::redirect:
      return "redirect";
    case sniff_error::timeout:
      return "timeout";
    case sniff_error::eof:
      return "eof";
    case sniff_error::overflow:
      return "overflow";
  }
  return "?";
}

sniff_result sniff_failure(sniff_error err, std::string reply,
                           std::string reason) {
  sniff_result r;
  r.state = sniff_state::failed;
  r.error = err;
  r.reply = std::move(reply);
  r.reason = std::move(reason);
  return r;
}

const char* to_string(open_failure x) {
  switch (x) {
    case open_failure::unknown_resource:
      return "unknown_resource";
    case open_failure::denied:
      return "denied";
    case open_failure::peer_unreachable:
      return "peer_unreachable";
    case open_failure::target_refused:
      return "target_refused";
    case open_failure::target_unreachable:
      return "target_unreachable";
    case open_failure::overloaded:
      return "overloaded";
    case open_failure::bad_request:
      return "bad_request";
    case open_failure::internal:
      return "internal";
  }
  return "?";
}

open_failure open_failure_from_code(int code) {
  using r = tunnel::StreamOpenResult;
  switch (code) {
    case r::UNKNOWN_RESOURCE:
      return open_failure::unknown_resource;
    case r::DENIED:
      return open_failure::denied;
    case r::TARGET_REFUSED:
      return open_failure::target_refused;
    case r::TARGET_UNREACHABLE:
      return open_failure::target_unreachable;
    case r::BAD_REQUEST:
      return open_failure::bad_request;
    case r::OVERLOADED:
      return open_failure::overloaded;
    default:
      return open_failure::internal;
  }
}

namespace sniff {

head_scanner::status head_scanner::scan(std::string_view buf) {
  auto end = std::min(buf.size(), max_head_);
  for (auto i = scanned_; i < end; ++i) {
    if (buf[i] != '\n')
      continue;
    auto len = i - line_start_;
    if (len > 0 && buf[i - 1] == '\r')
      --len;
    if (!first_line_done_) {
      if (len > max_line_)
        return status::line_too_long;
      first_line_done_ = true;
    } else if (len == 0) {
      head_size_ = i + 1;
      scanned_ = i + 1;
      return status::complete;
    }
    line_start_ = i + 1;
  }
  scanned_ = end;
  // Without a line end the first line may still be too long already (one
  // extra byte is allowed for a CR).
  if (!first_line_done_ && end > max_line_ + 1)
    return status::line_too_long;
  if (buf.size() >= max_head_)
    return status::head_too_large;
  return status::need_more;
}

bool line_reader::next(std::string_view& line) {
  if (rest_.empty())
    return false;
  auto pos = rest_.find('\n');
  if (pos == std::string_view::npos) {
    line = rest_;
    rest_ = {};
  } else {
    line = rest_.substr(0, pos);
    rest_.remove_prefix(pos + 1);
  }
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  return true;
}

namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

} // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size()
         && iequals(s.substr(0, prefix.size()), prefix);
}

bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s) {
    auto ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9');
    if (!ok
        && std::string_view{"!#$%&'*+-.^_`|~"}.find(c)
             == std::string_view::npos)
      return false;
  }
  return true;
}

bool split_header(std::string_view line, std::string_view& name,
                  std::string_view& value) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos)
    return false;
  name = line.substr(0, colon);
  if (!is_token(name))
    return false;
  value = trim_ows(line.substr(colon + 1));
  return true;
}

bool split_start_line(std::string_view line, std::string_view& a,
                      std::string_view& b, std::string_view& c) {
  auto s1 = line.find(' ');
  if (s1 == std::string_view::npos)
    return false;
  auto s2 = line.find(' ', s1 + 1);
  if (s2 == std::string_view::npos)
    return false;
  a = line.substr(0, s1);
  b = line.substr(s1 + 1, s2 - s1 - 1);
  c = line.substr(s2 + 1);
  return !a.empty() && !b.empty() && !c.empty();
}

bool garbage_method(std::string_view buf) {
  auto end = buf.find(' ');
  auto method = buf.substr(0, end);
  if (method.size() > 32)
    return true;
  return !method.empty() && !is_token(method);
}

bool parse_decimal(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 15)
    return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9')
      return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  out = v;
  return true;
}

bool valid_resource_name(std::string_view s) {
  if (s.empty() || s.size() > max_resource_name)
    return false;
  for (char c : s) {
    auto ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'
              || c == '~';
    if (!ok)
      return false;
  }
  return true;
}

std::string printable(std::string_view s, size_t max) {
  std::string out;
  auto n = std::min(s.size(), max);
  out.reserve(n + 3);
  for (size_t i = 0; i < n; ++i) {
    auto c = s[i];
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (s.size() > max)
    out += "...";
  return out;
}

std::string_view find_header(std::string_view head, std::string_view name) {
  // A partial last line could hold a truncated value: ignore it.
  auto last = head.rfind('\n');
  head = last == std::string_view::npos ? std::string_view{}
                                        : head.substr(0, last + 1);
  line_reader lines{head};
  std::string_view line;
  lines.next(line); // the start line
  while (lines.next(line)) {
    if (line.empty())
      break;
    std::string_view n, v;
    if (split_header(line, n, v) && iequals(n, name))
      return v;
  }
  return {};
}

} // namespace sniff

} // namespace p2proxy
