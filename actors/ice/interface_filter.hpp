// Which local addresses ICE gathers host candidates on (`[ice] interfaces`
// and `[ice] exclude`, docs/configuration.md). Plain code without libnice:
// the driver lists the machine's addresses (list_interfaces) when an agent
// opens and hands libnice only the chosen ones, so an interface that comes
// and goes (a container's veth, a VPN's tun) is judged by the same rules
// each time.
//
// A pattern is one of
//   - an address prefix in CIDR form: "10.0.0.0/8", "fe80::/10";
//   - an IP address: "192.168.1.20", "2001:db8::1";
//   - an interface name, where `*` stands for any run of characters:
//     "eth0", "wl*", "br-*".
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace p2proxy {

struct interface_address {
  std::string name; // the interface, "eth0"
  std::string ip;   // its address in text form, without a scope
  bool loopback = false;
};

/// `exclude` when the configuration sets none: link-local IPv6 and the
/// usual virtual, container and VPN interfaces.
std::vector<std::string> default_interface_excludes();

/// Empty when `pattern` is usable, else why not (for a configuration
/// error).
std::string interface_pattern_error(std::string_view pattern);

/// True when `pattern` names `a` (its interface or its address).
bool interface_pattern_matches(std::string_view pattern,
                               const interface_address& a);

struct interface_choice {
  std::vector<interface_address> used;
  /// Each skipped address with why ("loopback", "not in interfaces",
  /// "excluded by docker*").
  std::vector<std::pair<interface_address, std::string>> skipped;
};

/// An address is used when it matches a pattern of `include` (or `include`
/// is empty) and none of `exclude`. A loopback address is used only when
/// `include` names it.
interface_choice choose_interfaces(const std::vector<interface_address>& all,
                                   const std::vector<std::string>& include,
                                   const std::vector<std::string>& exclude);

/// The machine's IPv4 and IPv6 addresses on interfaces that are up.
std::vector<interface_address> list_interfaces();

/// "eth0 198.18.1.2, eth0 2001:db8::2" (or "none").
std::string describe_interfaces(const std::vector<interface_address>& xs);

} // namespace p2proxy
