// The cluster's small pure parts: the --redis URL and instance ids.
#include <random>

#include <fmt/format.h>

#include "actors/cluster/cluster.hpp"

namespace p2proxy {

std::string redis_address::to_string() const {
  auto h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return fmt::format("{}:{}/{}", h, port, db);
}

std::optional<redis_address> parse_redis_url(const std::string& url,
                                             std::string& why) {
  const std::string scheme = "redis://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    why = "must start with redis:// (redis://HOST:PORT[/DB])";
    return std::nullopt;
  }
  auto rest = url.substr(scheme.size());
  redis_address out;
  auto slash = rest.find('/');
  auto hostport = rest.substr(0, slash);
  if (slash != std::string::npos) {
    auto db = rest.substr(slash + 1);
    if (db.empty() || db.size() > 5
        || db.find_first_not_of("0123456789") != std::string::npos) {
      why = fmt::format("'{}' is not a database number", db);
      return std::nullopt;
    }
    out.db = std::stoi(db);
  }
  if (hostport.find('@') != std::string::npos) {
    why = "user names and passwords in the URL are not supported";
    return std::nullopt;
  }
  std::string port;
  if (!hostport.empty() && hostport.front() == '[') {
    auto close = hostport.find(']');
    if (close == std::string::npos) {
      why = "an IPv6 address needs its closing ]";
      return std::nullopt;
    }
    out.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size()) {
      if (hostport[close + 1] != ':') {
        why = "expected :PORT after the address";
        return std::nullopt;
      }
      port = hostport.substr(close + 2);
    }
  } else {
    auto colon = hostport.rfind(':');
    out.host = hostport.substr(0, colon);
    if (colon != std::string::npos)
      port = hostport.substr(colon + 1);
  }
  if (out.host.empty()) {
    why = "the host is missing (redis://HOST:PORT[/DB])";
    return std::nullopt;
  }
  if (!port.empty() || hostport.find(':') != std::string::npos) {
    if (port.empty() || port.size() > 5
        || port.find_first_not_of("0123456789") != std::string::npos
        || std::stoi(port) == 0 || std::stoi(port) > 65535) {
      why = fmt::format("'{}' is not a port (1-65535)", port);
      return std::nullopt;
    }
    out.port = static_cast<uint16_t>(std::stoi(port));
  }
  return out;
}

std::string new_instance_id() {
  std::random_device rd;
  uint64_t v = (uint64_t{rd()} << 32) ^ rd();
  return fmt::format("{:016x}", v);
}

bool looks_like_instance_id(const std::string& text) {
  return text.size() == 16
         && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

const char* cluster_metrics::to_string(int link) {
  switch (link) {
    case up:
      return "up";
    case connecting:
      return "connecting";
    default:
      return "down";
  }
}

} // namespace p2proxy
