#include <string>

#include <gtest/gtest.h>

#include "actors/peer/peer_session.hpp"

using namespace p2proxy;

namespace {

candidate_pair pair_of(std::string lt, std::string la, std::string rt,
                       std::string ra) {
  return candidate_pair{std::move(lt), std::move(la), std::move(rt),
                        std::move(ra)};
}

const candidate_pair direct
  = pair_of("srflx", "198.18.0.2:40000", "srflx", "198.18.0.3:52000");
const candidate_pair relayed
  = pair_of("relay", "198.18.0.1:49152", "srflx", "198.18.0.3:52000");

} // namespace

TEST(path_history, the_pair_reads_as_people_write_it) {
  EXPECT_EQ(direct.text(), "srflx 198.18.0.2:40000 -> srflx 198.18.0.3:52000");
  EXPECT_TRUE(relayed.relayed());
  EXPECT_FALSE(direct.relayed());
  EXPECT_TRUE(candidate_pair{}.empty());
}

TEST(path_history, reasons_name_what_changed) {
  EXPECT_EQ(path_change_reason({}, direct), "initial");
  EXPECT_EQ(path_change_reason({}, relayed), "initial");
  EXPECT_EQ(path_change_reason(relayed, direct), "upgrade");
  EXPECT_EQ(path_change_reason(direct, relayed), "fallback");
  // The peer's NAT mapped it anew: same hosts, another port.
  auto rebound
    = pair_of("srflx", "198.18.0.2:40000", "prflx", "198.18.0.3:61000");
  EXPECT_EQ(path_change_reason(direct, rebound), "rebinding");
  auto v6 = pair_of("host", "[2001:db8::1]:5000", "host", "[2001:db8::2]:6000");
  auto v6b
    = pair_of("host", "[2001:db8::1]:5001", "host", "[2001:db8::2]:6000");
  EXPECT_EQ(path_change_reason(v6, v6b), "rebinding");
  auto other = pair_of("host", "198.18.1.2:40000", "host", "198.18.2.2:52000");
  EXPECT_EQ(path_change_reason(direct, other), "switch");
  auto relayed2
    = pair_of("relay", "198.18.0.1:49153", "relay", "198.18.0.1:49160");
  EXPECT_EQ(path_change_reason(relayed, relayed2), "switch");
}
