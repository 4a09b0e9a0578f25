#include "actors/common/backoff.hpp"

#include <algorithm>

namespace p2proxy {

backoff::backoff(duration first, duration max, uint64_t seed)
  : first_(first), max_(std::max(first, max)), rng_(seed) {}

backoff::duration backoff::ceiling() const {
  auto base = first_.count();
  for (uint32_t i = 0; i < attempt_ && base < max_.count(); ++i)
    base *= 2;
  return duration{std::min<int64_t>(base, max_.count())};
}

backoff::duration backoff::next() {
  auto hi = ceiling().count();
  auto lo = hi / 2;
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  if (attempt_ < 64)
    ++attempt_;
  return duration{dist(rng_)};
}

} // namespace p2proxy
