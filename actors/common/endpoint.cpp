#include "actors/common/endpoint.hpp"

#include <charconv>
#include <ctime>

#include <fmt/format.h>

namespace p2proxy {

std::string endpoint::to_string() const {
  if (host.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::optional<endpoint> parse_endpoint(std::string_view text,
                                       std::string& why) {
  endpoint ep;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) {
      why = "missing ']' after an IPv6 address";
      return std::nullopt;
    }
    ep.host = std::string{text.substr(1, close - 1)};
    auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      why = "missing port (expected [HOST]:PORT)";
      return std::nullopt;
    }
    port_text = rest.substr(1);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "missing port (expected HOST:PORT)";
      return std::nullopt;
    }
    if (text.find(':') != colon) {
      why = "an IPv6 address needs brackets, as in [::1]:7000";
      return std::nullopt;
    }
    ep.host = std::string{text.substr(0, colon)};
    port_text = text.substr(colon + 1);
  }
  if (ep.host.empty()) {
    why = "missing host (expected HOST:PORT)";
    return std::nullopt;
  }
  unsigned long port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(),
                                   port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{}
      || ptr != port_text.data() + port_text.size()) {
    why = fmt::format("port '{}' is not a number", port_text);
    return std::nullopt;
  }
  if (port > 65535) {
    why = fmt::format("port {} out of range (0-65535)", port);
    return std::nullopt;
  }
  ep.port = static_cast<uint16_t>(port);
  return ep;
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto tt = system_clock::to_time_t(t);
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, ms);
}

} // namespace p2proxy
