#include <gtest/gtest.h>

#include "actors/cluster/cluster.hpp"

using namespace p2proxy;

TEST(redis_url, host_port_and_database) {
  std::string why;
  auto a = parse_redis_url("redis://10.0.0.5:6380/2", why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->host, "10.0.0.5");
  EXPECT_EQ(a->port, 6380);
  EXPECT_EQ(a->db, 2);
  EXPECT_EQ(a->to_string(), "10.0.0.5:6380/2");
  auto b = parse_redis_url("redis://redis.example", why);
  ASSERT_TRUE(b) << why;
  EXPECT_EQ(b->port, 6379);
  EXPECT_EQ(b->db, 0);
  auto c = parse_redis_url("redis://[::1]:7000", why);
  ASSERT_TRUE(c) << why;
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 7000);
}

TEST(redis_url, mistakes_say_what_is_wrong) {
  struct bad {
    const char* url;
    const char* reason;
  };
  for (auto [url, reason] :
       {bad{"http://h:1", "redis://"}, bad{"redis://:6379", "host is missing"},
        bad{"redis://h:0", "not a port"}, bad{"redis://h:70000", "not a port"},
        bad{"redis://h:x", "not a port"},
        bad{"redis://h:1/x", "not a database"},
        bad{"redis://h:1/", "not a database"},
        bad{"redis://u:p@h:1", "not supported"}}) {
    std::string why;
    EXPECT_FALSE(parse_redis_url(url, why)) << url;
    EXPECT_NE(why.find(reason), std::string::npos) << url << ": " << why;
  }
}

TEST(instance_id, new_ids_look_like_ids_and_differ) {
  auto a = new_instance_id();
  auto b = new_instance_id();
  EXPECT_TRUE(looks_like_instance_id(a)) << a;
  EXPECT_NE(a, b);
  EXPECT_FALSE(looks_like_instance_id("0123456789abcdeg"));
  EXPECT_FALSE(looks_like_instance_id("0123456789abcde"));
  EXPECT_FALSE(looks_like_instance_id(""));
}
