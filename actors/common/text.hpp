// Small text helpers shared by the protocol parsers (the channel's sniffers,
// the admin port's HTTP front).
#pragma once

#include <string_view>

namespace p2proxy {

/// `s` without leading and trailing spaces and tabs (HTTP/RTSP's OWS).
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

} // namespace p2proxy
