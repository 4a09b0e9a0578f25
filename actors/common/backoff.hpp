// Jittered exponential backoff for reconnects: the n-th delay is drawn
// uniformly from [base/2, base] where base = min(first * 2^n, max)
// ("equal jitter"), so a fleet of nodes that lost the same server does not
// come back in lockstep, yet no node waits longer than `max`.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace p2proxy {

class backoff {
public:
  using duration = std::chrono::milliseconds;

  backoff(duration first = std::chrono::seconds(1),
          duration max = std::chrono::seconds(30), uint64_t seed = 0);

  /// The delay before the next attempt; advances the schedule.
  duration next();

  /// The upper bound of the next delay, without advancing.
  duration ceiling() const;

  /// Back to the first delay (after a successful login).
  void reset() {
    attempt_ = 0;
  }

  uint32_t attempt() const {
    return attempt_;
  }

private:
  duration first_;
  duration max_;
  uint32_t attempt_ = 0;
  std::mt19937_64 rng_;
};

} // namespace p2proxy
