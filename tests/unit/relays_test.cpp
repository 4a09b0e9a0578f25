// TURN REST credentials, the login's IceServers as a node reads them, and
// netcheck's verdicts from raw probe findings.
#include <gtest/gtest.h>

#include "actors/server/relay_credentials.hpp"
#include "node/netcheck.hpp"
#include "node/wiring.hpp"

using namespace p2proxy;

TEST(relay_credentials, password_is_base64_hmac_sha1_as_coturn_computes_it) {
  // python3: base64.b64encode(hmac.new(b"north", b"1700000000:alice",
  //                                    hashlib.sha1).digest())
  EXPECT_EQ(turn_rest_password("north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
}

TEST(relay_credentials, user_names_expiry_and_node) {
  relay_options opts;
  opts.turn.push_back(endpoint{"turn.example", 3478});
  opts.turn_secret = "north";
  opts.turn_ttl = std::chrono::seconds(100);
  auto now = std::chrono::system_clock::from_time_t(1700000000);
  auto s = make_ice_servers(opts, "NODE", now);
  ASSERT_EQ(s.turn_size(), 1);
  EXPECT_EQ(s.turn(0).user(), "1700000100:NODE");
  EXPECT_EQ(s.expires_unix(), 1700000100u);
  EXPECT_EQ(s.turn(0).password(),
            turn_rest_password("north", "1700000100:NODE"));
}

TEST(relay_credentials, without_a_secret_turn_goes_out_without_credentials) {
  relay_options opts;
  opts.turn.push_back(endpoint{"turn.example", 3478});
  auto s = make_ice_servers(opts, "NODE", std::chrono::system_clock::now());
  ASSERT_EQ(s.turn_size(), 1);
  EXPECT_EQ(s.turn(0).user(), "");
  EXPECT_EQ(s.expires_unix(), 0u);
}

TEST(servers_from_login, port_only_entries_name_the_signaling_server) {
  signal::IceServers s;
  s.add_stun(":3479");
  s.add_stun("stun.example:19302");
  s.add_stun("not an endpoint");
  auto t = s.add_turn();
  t->set_server(":3478");
  t->set_user("u");
  t->set_password("p");
  auto got = servers_from_login(s, "198.18.0.10");
  ASSERT_EQ(got.stun.size(), 2u); // the malformed one is skipped
  EXPECT_EQ(got.stun[0].to_string(), "198.18.0.10:3479");
  EXPECT_EQ(got.stun[1].to_string(), "stun.example:19302");
  ASSERT_EQ(got.turn.size(), 1u);
  EXPECT_EQ(got.turn[0].server.to_string(), "198.18.0.10:3478");
  EXPECT_EQ(got.turn[0].user, "u");
  auto v6 = servers_from_login(s, "2001:db8::1");
  EXPECT_EQ(v6.stun[0].to_string(), "[2001:db8::1]:3479");
}

TEST(provided_servers, own_settings_win_kind_by_kind) {
  ice_settings own;
  own.stun.push_back(endpoint{"own-stun", 1});
  own.provided = std::make_shared<provided_servers>();
  own.provided->set({{endpoint{"srv-stun", 2}},
                     {ice_turn_server{endpoint{"srv-turn", 3}, "u", "p"}}});
  auto eff = effective_servers(own);
  ASSERT_EQ(eff.stun.size(), 1u);
  EXPECT_EQ(eff.stun[0].host, "own-stun");
  ASSERT_EQ(eff.turn.size(), 1u);
  EXPECT_EQ(eff.turn[0].server.host, "srv-turn");
}

namespace {

stun_binding_answer answer(const char* server_host, const char* mapped) {
  stun_binding_answer a;
  a.server = endpoint{server_host, 3479};
  a.answered = mapped != nullptr;
  if (mapped != nullptr)
    a.mapped = mapped;
  return a;
}

std::string path_for(const netcheck_result& r, const std::string& peer) {
  for (auto& p : r.paths)
    if (p.peer == peer)
      return p.path;
  return "?";
}

} // namespace

TEST(netcheck_classify, same_mapping_from_two_addresses_is_independent) {
  netcheck_result r;
  r.local_address = "192.168.1.2";
  r.stun = {answer("a", "203.0.113.5:4000"), answer("b", "203.0.113.5:4000")};
  classify(r);
  EXPECT_EQ(r.udp, "works");
  EXPECT_EQ(r.mapping, "endpoint-independent");
  EXPECT_TRUE(r.behind_nat);
  EXPECT_NE(r.mapping_note.find("two server addresses"), std::string::npos);
  EXPECT_EQ(path_for(r, "endpoint-independent NAT"), "direct");
  EXPECT_EQ(path_for(r, "endpoint-dependent (symmetric) NAT"),
            "none: needs a relay, and none works");
}

TEST(netcheck_classify, different_mappings_are_dependent) {
  netcheck_result r;
  r.local_address = "192.168.1.2";
  r.stun = {answer("a", "203.0.113.5:4000"), answer("a", "203.0.113.5:4001")};
  turn_check relay;
  relay.allocated = true;
  r.relay.push_back(relay);
  classify(r);
  EXPECT_EQ(r.mapping, "endpoint-dependent");
  EXPECT_NE(r.mapping_note.find("two ports of one server address"),
            std::string::npos);
  EXPECT_EQ(path_for(r, "public (no NAT)"), "direct");
  EXPECT_EQ(path_for(r, "endpoint-independent NAT"), "relayed (TURN over UDP)");
}

TEST(netcheck_classify, no_answer_is_blocked_and_one_answer_is_unknown) {
  netcheck_result blocked;
  blocked.stun = {answer("a", nullptr), answer("b", nullptr)};
  turn_check tcp;
  tcp.tcp = true;
  tcp.allocated = true;
  blocked.relay.push_back(tcp);
  classify(blocked);
  EXPECT_EQ(blocked.udp, "blocked");
  EXPECT_EQ(blocked.mapping, "unknown");
  EXPECT_EQ(path_for(blocked, "public (no NAT)"), "relayed (TURN over TCP)");
  netcheck_result one;
  one.local_address = "198.18.1.2";
  one.stun = {answer("a", "198.18.1.2:5000"), answer("b", nullptr)};
  classify(one);
  EXPECT_EQ(one.udp, "works");
  EXPECT_EQ(one.mapping, "unknown");
  EXPECT_FALSE(one.behind_nat);
  netcheck_result nothing;
  classify(nothing);
  EXPECT_EQ(nothing.udp, "unknown");
}
