#include "actors/common/backoff.hpp"

#include <gtest/gtest.h>

using namespace p2proxy;
using std::chrono::milliseconds;

TEST(backoff, doubles_from_one_second_to_thirty_with_jitter) {
  backoff b{milliseconds{1000}, milliseconds{30000}, 42};
  const int64_t ceilings[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (auto hi : ceilings) {
    EXPECT_EQ(b.ceiling().count(), hi);
    auto d = b.next().count();
    EXPECT_GE(d, hi / 2);
    EXPECT_LE(d, hi);
  }
}

TEST(backoff, never_exceeds_the_maximum_after_many_attempts) {
  backoff b{milliseconds{1000}, milliseconds{30000}, 7};
  for (int i = 0; i < 200; ++i) {
    auto d = b.next().count();
    EXPECT_LE(d, 30000);
    EXPECT_GE(d, 500);
  }
}

TEST(backoff, reset_starts_over) {
  backoff b{milliseconds{1000}, milliseconds{30000}, 1};
  for (int i = 0; i < 5; ++i)
    b.next();
  b.reset();
  EXPECT_EQ(b.ceiling().count(), 1000);
  EXPECT_LE(b.next().count(), 1000);
}

TEST(backoff, jitter_spreads_nodes_apart) {
  // Two nodes with different seeds do not retry in lockstep.
  backoff a{milliseconds{1000}, milliseconds{30000}, 1};
  backoff b{milliseconds{1000}, milliseconds{30000}, 2};
  int same = 0;
  for (int i = 0; i < 10; ++i)
    same += a.next() == b.next();
  EXPECT_LT(same, 10);
}
