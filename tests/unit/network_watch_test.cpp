// The NETWORK WATCH's plain parts (diffing address sets, counting netlink
// events) and a session's reaction to a change (react_to_network_change).
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "actors/ice/network_watch.hpp"
#include "actors/peer/peer_session.hpp"

using namespace p2proxy;

namespace {

interface_address addr(std::string name, std::string ip) {
  return interface_address{std::move(name), std::move(ip), false};
}

/// Appends one netlink message of `type` with `payload` bytes of zeros.
void add_message(std::vector<unsigned char>& buf, uint16_t type,
                 size_t payload) {
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(payload));
  h.nlmsg_type = type;
  size_t at = buf.size();
  buf.resize(at + NLMSG_SPACE(payload), 0);
  std::memcpy(buf.data() + at, &h, sizeof h);
}

candidate_pair pair_of(std::string lt, std::string la, std::string rt,
                       std::string ra) {
  return candidate_pair{std::move(lt), std::move(la), std::move(rt),
                        std::move(ra)};
}

} // namespace

TEST(network_watch, diff_names_what_came_and_what_went) {
  std::vector<interface_address> before{addr("eth0", "198.18.1.2"),
                                        addr("eth0", "2001:db8::2")};
  std::vector<interface_address> now{addr("eth0", "2001:db8::2"),
                                     addr("eth1", "198.18.1.3")};
  auto d = diff_addresses(before, now);
  ASSERT_EQ(d.added.size(), 1u);
  EXPECT_EQ(d.added[0].ip, "198.18.1.3");
  ASSERT_EQ(d.removed.size(), 1u);
  EXPECT_EQ(d.removed[0].ip, "198.18.1.2");
  EXPECT_EQ(describe_diff(d), "+eth1 198.18.1.3, -eth0 198.18.1.2");
}

TEST(network_watch, the_same_set_in_another_order_is_no_change) {
  std::vector<interface_address> a{addr("eth0", "198.18.1.2"),
                                   addr("wlan0", "198.18.5.2")};
  std::vector<interface_address> b{a[1], a[0]};
  auto d = diff_addresses(a, b);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(describe_diff(d), "none");
  EXPECT_TRUE(diff_addresses({}, {}).empty());
}

TEST(network_watch, an_excluded_interface_coming_and_going_is_no_change) {
  // What the watch compares: the addresses choose_interfaces() keeps.
  auto excl = default_interface_excludes();
  std::vector<interface_address> before{addr("eth0", "198.18.1.2")};
  auto with_veth = before;
  with_veth.push_back(addr("veth12ab", "172.17.0.1"));
  with_veth.push_back(addr("docker0", "172.18.0.1"));
  with_veth.push_back(addr("eth0", "fe80::1"));
  auto a = choose_interfaces(before, {}, excl).used;
  auto b = choose_interfaces(with_veth, {}, excl).used;
  EXPECT_TRUE(diff_addresses(a, b).empty());
  with_veth.push_back(addr("eth1", "198.18.7.2"));
  auto c = choose_interfaces(with_veth, {}, excl).used;
  auto d = diff_addresses(a, c);
  ASSERT_EQ(d.added.size(), 1u);
  EXPECT_EQ(d.added[0].name, "eth1");
}

TEST(network_watch, counts_link_and_address_messages_only) {
  std::vector<unsigned char> buf;
  add_message(buf, RTM_NEWADDR, sizeof(ifaddrmsg) + 8);
  add_message(buf, RTM_NEWROUTE, sizeof(rtmsg));
  add_message(buf, RTM_DELLINK, sizeof(ifinfomsg) + 3); // padded to 4
  add_message(buf, RTM_DELADDR, sizeof(ifaddrmsg));
  add_message(buf, RTM_NEWLINK, sizeof(ifinfomsg));
  add_message(buf, NLMSG_DONE, 4);
  EXPECT_EQ(count_interface_events(buf.data(), buf.size()), 4u);
  EXPECT_EQ(count_interface_events(buf.data(), 0), 0u);
}

TEST(network_watch, a_truncated_or_malformed_message_ends_the_count) {
  std::vector<unsigned char> buf;
  add_message(buf, RTM_NEWADDR, sizeof(ifaddrmsg));
  size_t first = buf.size();
  add_message(buf, RTM_DELADDR, sizeof(ifaddrmsg));
  // The second message cut short: only the first counts.
  EXPECT_EQ(count_interface_events(buf.data(), buf.size() - 4), 1u);
  // A length below the header's: nothing after it is read.
  nlmsghdr bad{};
  bad.nlmsg_len = 4;
  bad.nlmsg_type = RTM_NEWLINK;
  std::memcpy(buf.data() + first, &bad, sizeof bad);
  EXPECT_EQ(count_interface_events(buf.data(), buf.size()), 1u);
  // Less than a header.
  EXPECT_EQ(count_interface_events(buf.data(), sizeof(nlmsghdr) - 1), 0u);
}

TEST(network_watch, a_session_restarts_when_its_address_went_away) {
  auto host = pair_of("host", "198.18.1.2:40000", "srflx", "198.18.0.3:5000");
  EXPECT_EQ(react_to_network_change(host, "198.18.1.2", {"198.18.1.2"}),
            network_reaction::restart);
  EXPECT_EQ(react_to_network_change(host, "198.18.1.2", {"198.18.9.9"}),
            network_reaction::none);
  EXPECT_EQ(react_to_network_change(host, "198.18.1.2", {}),
            network_reaction::none);
  // A reflexive candidate's address is the NAT's: its base decides.
  auto srflx = pair_of("srflx", "198.18.0.2:40000", "srflx", "198.18.0.3:5000");
  EXPECT_EQ(react_to_network_change(srflx, "198.18.1.2", {"198.18.1.2"}),
            network_reaction::restart);
  EXPECT_EQ(react_to_network_change(srflx, "198.18.1.2", {"198.18.0.2"}),
            network_reaction::none);
  // Unknown base on a direct pair: nothing to judge by; the silence check
  // still watches the path.
  EXPECT_EQ(react_to_network_change(srflx, "", {"198.18.1.2"}),
            network_reaction::none);
}

TEST(network_watch, a_relayed_session_probes_unless_its_base_went_away) {
  auto relayed
    = pair_of("relay", "198.18.0.1:49152", "srflx", "198.18.0.3:5000");
  EXPECT_EQ(react_to_network_change(relayed, "", {}), network_reaction::probe);
  EXPECT_EQ(react_to_network_change(relayed, "198.18.1.2", {"198.18.7.7"}),
            network_reaction::probe);
  EXPECT_EQ(react_to_network_change(relayed, "198.18.1.2", {"198.18.1.2"}),
            network_reaction::restart);
  // The peer's relay: ours is direct to it, still a relayed pair.
  auto theirs = pair_of("host", "198.18.1.2:40000", "relay", "198.18.0.1:5000");
  EXPECT_EQ(react_to_network_change(theirs, "198.18.1.2", {}),
            network_reaction::probe);
  EXPECT_EQ(react_to_network_change(candidate_pair{}, "", {"198.18.1.2"}),
            network_reaction::none);
}

TEST(network_watch, ip_of_address_drops_the_port_and_brackets) {
  EXPECT_EQ(ip_of_address("198.18.1.2:40000"), "198.18.1.2");
  EXPECT_EQ(ip_of_address("[2001:db8::1]:5000"), "2001:db8::1");
  EXPECT_EQ(ip_of_address("198.18.1.2"), "198.18.1.2");
}

TEST(network_watch, starts_and_stops_where_netlink_exists) {
  auto w = network_watch::start({}, network_watch_settings{});
  if (!w)
    GTEST_SKIP() << "no netlink here (the watch logged why)";
  w->stop();
  w->stop(); // idempotent; the destructor stops it again
}
