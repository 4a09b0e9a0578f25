#include "actors/ice/interface_filter.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "node/config.hpp"

using namespace p2proxy;

namespace {

interface_address addr(std::string name, std::string ip, bool lo = false) {
  return interface_address{std::move(name), std::move(ip), lo};
}

std::vector<std::string> used_ips(const interface_choice& c) {
  std::vector<std::string> out;
  for (auto& a : c.used)
    out.push_back(a.ip);
  return out;
}

std::string why_skipped(const interface_choice& c, const std::string& ip) {
  for (auto& [a, why] : c.skipped)
    if (a.ip == ip)
      return why;
  return "(used)";
}

/// A machine with a real NIC, Wi-Fi, loopback and the usual virtual ones.
const std::vector<interface_address> machine = {
  addr("lo", "127.0.0.1", true),    addr("lo", "::1", true),
  addr("eth0", "198.18.1.2"),       addr("eth0", "2001:db8::2"),
  addr("eth0", "fe80::1"),          addr("wlan0", "198.18.5.7"),
  addr("docker0", "172.17.0.1"),    addr("veth12ab", "fe80::42"),
  addr("br-3f2a", "172.18.0.1"),    addr("virbr0", "192.168.122.1"),
  addr("tun0", "10.8.0.2"),         addr("wg0", "10.9.0.2"),
  addr("tailscale0", "100.64.0.3"), addr("ztabcdef", "10.147.17.4"),
  addr("nebula1", "10.42.0.4"),
};

} // namespace

TEST(interface_filter, name_globs_match_whole_names_only) {
  auto a = addr("docker0", "172.17.0.1");
  EXPECT_TRUE(interface_pattern_matches("docker*", a));
  EXPECT_TRUE(interface_pattern_matches("docker0", a));
  EXPECT_TRUE(interface_pattern_matches("*0", a));
  EXPECT_TRUE(interface_pattern_matches("d*k*0", a));
  EXPECT_TRUE(interface_pattern_matches("*", a));
  EXPECT_FALSE(interface_pattern_matches("docker", a));
  EXPECT_FALSE(interface_pattern_matches("ocker*", a));
  EXPECT_FALSE(interface_pattern_matches("br-*", addr("br0", "10.0.0.1")));
  EXPECT_TRUE(interface_pattern_matches("br-*", addr("br-3f2a", "10.0.0.1")));
}

TEST(interface_filter, addresses_and_prefixes_match_the_address) {
  EXPECT_TRUE(interface_pattern_matches("fe80::/10", addr("eth0", "fe80::1")));
  EXPECT_TRUE(
    interface_pattern_matches("fe80::/10", addr("x", "febf:ffff::1")));
  EXPECT_FALSE(interface_pattern_matches("fe80::/10", addr("x", "fec0::1")));
  EXPECT_FALSE(
    interface_pattern_matches("fe80::/10", addr("eth0", "198.18.1.2")));
  EXPECT_TRUE(
    interface_pattern_matches("198.18.0.0/15", addr("eth0", "198.19.255.1")));
  EXPECT_FALSE(
    interface_pattern_matches("198.18.0.0/15", addr("eth0", "198.20.0.1")));
  EXPECT_TRUE(interface_pattern_matches("0.0.0.0/0", addr("x", "1.2.3.4")));
  EXPECT_FALSE(interface_pattern_matches("0.0.0.0/0", addr("x", "::1")));
  EXPECT_TRUE(interface_pattern_matches("10.8.0.2", addr("tun0", "10.8.0.2")));
  EXPECT_FALSE(interface_pattern_matches("10.8.0.2", addr("tun0", "10.8.0.3")));
  EXPECT_TRUE(
    interface_pattern_matches("2001:db8::2", addr("eth0", "2001:db8:0::2")));
  // An address pattern never matches by name, nor a name by address.
  EXPECT_FALSE(interface_pattern_matches("10.8.0.2", addr("10.8.0.2", "::1")));
}

TEST(interface_filter, malformed_patterns_are_refused_with_a_reason) {
  EXPECT_EQ(interface_pattern_error("eth0"), "");
  EXPECT_EQ(interface_pattern_error("wl*"), "");
  EXPECT_EQ(interface_pattern_error("10.0.0.0/8"), "");
  EXPECT_EQ(interface_pattern_error("fe80::/10"), "");
  EXPECT_EQ(interface_pattern_error("2001:db8::1"), "");
  EXPECT_NE(interface_pattern_error(""), "");
  EXPECT_NE(interface_pattern_error("10.0.0.0/33"), "");
  EXPECT_NE(interface_pattern_error("10.0.0/8"), "");
  EXPECT_NE(interface_pattern_error("fe80::/129"), "");
  EXPECT_NE(interface_pattern_error("eth0/x"), "");
  EXPECT_NE(interface_pattern_error("eth 0"), "");
  EXPECT_NE(interface_pattern_error(std::string(80, 'e')), "");
}

TEST(interface_filter, defaults_keep_real_interfaces_and_drop_virtual_ones) {
  auto c = choose_interfaces(machine, {}, default_interface_excludes());
  EXPECT_EQ(used_ips(c), (std::vector<std::string>{"198.18.1.2", "2001:db8::2",
                                                   "198.18.5.7"}));
  EXPECT_EQ(why_skipped(c, "127.0.0.1"), "loopback");
  EXPECT_EQ(why_skipped(c, "fe80::1"), "excluded by fe80::/10");
  EXPECT_EQ(why_skipped(c, "172.17.0.1"), "excluded by docker*");
  EXPECT_EQ(why_skipped(c, "fe80::42"), "excluded by fe80::/10");
  for (auto ip : {"172.18.0.1", "192.168.122.1", "10.8.0.2", "10.9.0.2",
                  "100.64.0.3", "10.147.17.4", "10.42.0.4"})
    EXPECT_NE(why_skipped(c, ip).find("excluded by"), std::string::npos) << ip;
  EXPECT_EQ(c.used.size() + c.skipped.size(), machine.size());
}

TEST(interface_filter, interfaces_selects_and_exclude_still_applies) {
  auto c = choose_interfaces(machine, {"eth*"}, default_interface_excludes());
  EXPECT_EQ(used_ips(c),
            (std::vector<std::string>{"198.18.1.2", "2001:db8::2"}));
  EXPECT_EQ(why_skipped(c, "198.18.5.7"), "not in interfaces");
  EXPECT_EQ(why_skipped(c, "fe80::1"), "excluded by fe80::/10");
  // A VPN chosen on purpose: exclude set without it.
  c = choose_interfaces(machine, {"wg0"}, {"fe80::/10"});
  EXPECT_EQ(used_ips(c), (std::vector<std::string>{"10.9.0.2"}));
  // By prefix.
  c = choose_interfaces(machine, {"198.18.0.0/15"}, {});
  EXPECT_EQ(used_ips(c),
            (std::vector<std::string>{"198.18.1.2", "198.18.5.7"}));
}

TEST(interface_filter, loopback_only_when_named) {
  auto c = choose_interfaces(machine, {"lo"}, default_interface_excludes());
  EXPECT_EQ(used_ips(c), (std::vector<std::string>{"127.0.0.1", "::1"}));
  c = choose_interfaces(machine, {"127.0.0.1"}, {});
  EXPECT_EQ(used_ips(c), (std::vector<std::string>{"127.0.0.1"}));
  c = choose_interfaces(machine, {}, {});
  EXPECT_EQ(std::count_if(c.used.begin(), c.used.end(),
                          [](auto& a) { return a.loopback; }),
            0);
}

TEST(interface_filter, everything_excluded_leaves_nothing) {
  auto c = choose_interfaces(machine, {}, {"*"});
  EXPECT_TRUE(c.used.empty());
  EXPECT_EQ(c.skipped.size(), machine.size());
}

TEST(interface_filter, the_config_reads_and_checks_the_patterns) {
  auto base = std::string{"[signal]\nserver = \"127.0.0.1:7000\"\n"};
  auto cfg = parse_node_config(base, "t.toml");
  EXPECT_TRUE(cfg.interfaces.empty());
  EXPECT_EQ(cfg.exclude, default_interface_excludes());
  cfg = parse_node_config(base
                            + "[ice]\ninterfaces = [\"eth*\", \"10.0.0.0/8\"]\n"
                              "exclude = [\"eth9\"]\n",
                          "t.toml");
  EXPECT_EQ(cfg.interfaces, (std::vector<std::string>{"eth*", "10.0.0.0/8"}));
  EXPECT_EQ(cfg.exclude, (std::vector<std::string>{"eth9"}));
  cfg = parse_node_config(base + "[ice]\nexclude = []\n", "t.toml");
  EXPECT_TRUE(cfg.exclude.empty());
  try {
    parse_node_config(base + "[ice]\nexclude = [\"10.0.0.0/40\"]\n", "t.toml");
    ADD_FAILURE() << "a bad prefix was accepted";
  } catch (const config_error& e) {
    EXPECT_EQ(e.line, 4) << e.what();
    EXPECT_EQ(e.key, "ice.exclude[1]") << e.what();
  }
  try {
    parse_node_config(base + "[ice]\ninterfaces = \"eth0\"\n", "t.toml");
    ADD_FAILURE() << "a string instead of a list was accepted";
  } catch (const config_error& e) {
    EXPECT_EQ(e.key, "ice.interfaces") << e.what();
  }
}

TEST(interface_filter, idle_timeout_stays_below_the_ice_limit) {
  auto base = std::string{"[signal]\nserver = \"127.0.0.1:7000\"\n"};
  EXPECT_NO_THROW(
    parse_node_config(base + "[session]\nidle_timeout = \"45s\"\n", "t.toml"));
  try {
    parse_node_config(base + "[session]\nidle_timeout = \"60s\"\n", "t.toml");
    ADD_FAILURE() << "idle_timeout 60s was accepted";
  } catch (const config_error& e) {
    EXPECT_EQ(e.key, "session.idle_timeout") << e.what();
  }
}
