// The PEER MANAGER's look-up cache: bounded, expiring, replaced by newer
// answers.
#include "actors/peer/name_cache.hpp"

#include <gtest/gtest.h>

using namespace p2proxy;
using namespace std::chrono_literals;
using owners = std::vector<std::string>;

namespace {

const auto t0 = name_cache::clock::time_point{} + 1h;

} // namespace

TEST(name_cache, answers_what_was_put_until_it_expires) {
  name_cache c{4, 10min};
  c.put("cam", {"node-a"}, t0);
  EXPECT_EQ(c.get("cam", t0 + 9min), owners{"node-a"});
  EXPECT_EQ(c.get("cam", t0 + 10min), owners{});
  EXPECT_EQ(c.size(), 0u) << "an expired entry is dropped";
  EXPECT_EQ(c.get("nothing", t0), owners{});
}

TEST(name_cache, a_newer_answer_replaces_and_an_empty_one_forgets) {
  name_cache c{4, 10min};
  c.put("cam", {"node-a"}, t0);
  c.put("cam", {"node-b"}, t0 + 1min); // the owner changed
  EXPECT_EQ(c.get("cam", t0 + 2min), owners{"node-b"});
  EXPECT_EQ(c.get("cam", t0 + 10min), owners{"node-b"}) << "renewed";
  c.put("cam", {}, t0 + 3min); // the owner vanished
  EXPECT_EQ(c.get("cam", t0 + 3min), owners{});
  EXPECT_EQ(c.size(), 0u);
}

TEST(name_cache, is_bounded_and_makes_room_by_age) {
  name_cache c{3, 10min};
  for (int i = 0; i < 3; ++i)
    c.put("n" + std::to_string(i), {"node"}, t0 + std::chrono::seconds(i));
  c.put("n3", {"node"}, t0 + 5s);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.get("n0", t0 + 6s), owners{}) << "the oldest made room";
  EXPECT_EQ(c.get("n3", t0 + 6s), owners{"node"});
  // Expired entries go first, before any live one.
  name_cache d{2, 10s};
  d.put("old", {"x"}, t0);
  d.put("live", {"y"}, t0 + 8s);
  d.put("new", {"z"}, t0 + 12s);
  EXPECT_EQ(d.get("live", t0 + 12s), owners{"y"});
  EXPECT_EQ(d.get("new", t0 + 12s), owners{"z"});
  auto names = d.names(t0 + 12s);
  EXPECT_EQ(names.size(), 2u);
}

TEST(name_cache, capacity_zero_keeps_nothing) {
  name_cache c{0, 10min};
  c.put("cam", {"node-a"}, t0);
  EXPECT_EQ(c.size(), 0u);
}
