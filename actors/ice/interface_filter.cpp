#include "actors/ice/interface_filter.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <array>
#include <cstring>
#include <optional>

#include <fmt/format.h>

namespace p2proxy {

namespace {

/// An address as bytes: 4 for IPv4, 16 for IPv6.
struct ip_bytes {
  std::array<unsigned char, 16> b{};
  size_t len = 0;
};

std::optional<ip_bytes> parse_ip(std::string_view text) {
  std::string s{text};
  ip_bytes out;
  if (::inet_pton(AF_INET, s.c_str(), out.b.data()) == 1) {
    out.len = 4;
    return out;
  }
  if (::inet_pton(AF_INET6, s.c_str(), out.b.data()) == 1) {
    out.len = 16;
    return out;
  }
  return std::nullopt;
}

struct cidr {
  ip_bytes net;
  size_t bits = 0;
};

std::optional<cidr> parse_cidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos)
    return std::nullopt;
  auto ip = parse_ip(text.substr(0, slash));
  auto digits = text.substr(slash + 1);
  if (!ip || digits.empty() || digits.size() > 3)
    return std::nullopt;
  size_t bits = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9')
      return std::nullopt;
    bits = bits * 10 + static_cast<size_t>(ch - '0');
  }
  if (bits > ip->len * 8)
    return std::nullopt;
  return cidr{*ip, bits};
}

bool in_prefix(const cidr& c, const ip_bytes& a) {
  if (a.len != c.net.len)
    return false;
  size_t full = c.bits / 8;
  if (std::memcmp(a.b.data(), c.net.b.data(), full) != 0)
    return false;
  size_t rest = c.bits % 8;
  if (rest == 0)
    return true;
  auto mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a.b[full] & mask) == (c.net.b[full] & mask);
}

/// `*` matches any run of characters (also none); nothing else is special.
bool glob_match(std::string_view pat, std::string_view name) {
  size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = n;
    } else if (p < pat.size() && pat[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*')
    ++p;
  return p == pat.size();
}

bool any_match(const std::vector<std::string>& pats, const interface_address& a,
               std::string* which = nullptr) {
  for (auto& p : pats)
    if (interface_pattern_matches(p, a)) {
      if (which != nullptr)
        *which = p;
      return true;
    }
  return false;
}

} // namespace

std::vector<std::string> default_interface_excludes() {
  return {"fe80::/10", "docker*", "veth*",      "br-*", "virbr*",
          "tun*",      "wg*",     "tailscale*", "zt*",  "nebula*"};
}

std::string interface_pattern_error(std::string_view pattern) {
  if (pattern.empty())
    return "an empty pattern";
  if (pattern.find('/') != std::string_view::npos)
    return parse_cidr(pattern)
             ? std::string{}
             : fmt::format("\"{}\" is not an address prefix like "
                           "\"10.0.0.0/8\" or \"fe80::/10\"",
                           pattern);
  if (parse_ip(pattern))
    return {};
  for (char ch : pattern)
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\0')
      return fmt::format("\"{}\" is neither an interface name (with * "
                         "globs), an address nor a prefix",
                         pattern);
  if (pattern.size() > 64)
    return fmt::format("\"{}\" is too long for an interface name",
                       pattern.substr(0, 64));
  return {};
}

bool interface_pattern_matches(std::string_view pattern,
                               const interface_address& a) {
  if (pattern.find('/') != std::string_view::npos) {
    auto c = parse_cidr(pattern);
    auto ip = parse_ip(a.ip);
    return c && ip && in_prefix(*c, *ip);
  }
  if (auto p = parse_ip(pattern)) {
    auto ip = parse_ip(a.ip);
    return ip && ip->len == p->len
           && std::memcmp(ip->b.data(), p->b.data(), ip->len) == 0;
  }
  return glob_match(pattern, a.name);
}

interface_choice choose_interfaces(const std::vector<interface_address>& all,
                                   const std::vector<std::string>& include,
                                   const std::vector<std::string>& exclude) {
  interface_choice out;
  for (auto& a : all) {
    std::string which;
    if (!include.empty() && !any_match(include, a))
      out.skipped.emplace_back(a, "not in interfaces");
    else if (a.loopback && include.empty())
      out.skipped.emplace_back(a, "loopback");
    else if (any_match(exclude, a, &which))
      out.skipped.emplace_back(a, "excluded by " + which);
    else
      out.used.push_back(a);
  }
  return out;
}

std::vector<interface_address> list_interfaces() {
  std::vector<interface_address> out;
  ifaddrs* head = nullptr;
  if (::getifaddrs(&head) != 0)
    return out;
  for (auto* i = head; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_flags & IFF_UP) == 0)
      continue;
    char text[INET6_ADDRSTRLEN] = {};
    auto family = i->ifa_addr->sa_family;
    if (family == AF_INET)
      ::inet_ntop(AF_INET,
                  &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr,
                  text, sizeof text);
    else if (family == AF_INET6)
      ::inet_ntop(
        AF_INET6,
        &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr, text,
        sizeof text);
    else
      continue;
    out.push_back(interface_address{i->ifa_name != nullptr ? i->ifa_name : "",
                                    text, (i->ifa_flags & IFF_LOOPBACK) != 0});
  }
  ::freeifaddrs(head);
  return out;
}

std::string describe_interfaces(const std::vector<interface_address>& xs) {
  if (xs.empty())
    return "none";
  std::string out;
  for (auto& a : xs) {
    if (!out.empty())
      out += ", ";
    out += a.name + " " + a.ip;
  }
  return out;
}

} // namespace p2proxy
