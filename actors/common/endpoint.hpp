// HOST:PORT as users write it ("127.0.0.1:7000", "[::1]:7000",
// "signal.example.net:7000"), and RFC 3339 time stamps for status documents.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace p2proxy {

struct endpoint {
  std::string host;
  uint16_t port = 0;

  std::string to_string() const;
};

/// Parses HOST:PORT; on failure returns nullopt and sets `why` to a one-line
/// reason ("missing port", "port 70000 out of range" ...).
std::optional<endpoint> parse_endpoint(std::string_view text, std::string& why);

/// RFC 3339 in UTC with milliseconds, e.g. 2026-11-25T13:40:00.123Z.
std::string rfc3339(std::chrono::system_clock::time_point t);

} // namespace p2proxy
