// QUIC PIPE: a test fixture that joins two quic_connections in memory, with
// virtual time, a fixed one-way delay and optional random loss. No sockets,
// no threads, no sleeping: each step delivers what is due, runs due timers,
// lets both sides write, and jumps the clock to the next event. Datagrams
// travel on the path each side's write() names; a dead path drops them. Used by
// the unit tests and by tests/bench/quic_bench.cpp; header-only so the library
// carries none of it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "actors/quic/quic_connection.hpp"

namespace p2proxy {

class quic_pipe {
public:
  /// Both ends; either may be replaced (e.g. the server created later).
  quic_connection* a = nullptr;
  quic_connection* b = nullptr;
  /// Virtual monotonic clock in nanoseconds.
  quic_time now = 1'000'000'000;
  /// One-way delay of every datagram. Keep it above 0, here and in any other
  /// virtual-time network: a datagram delivered and ACKed at the instant it
  /// was sent gives ngtcp2 an RTT of 0 and no bandwidth sample (its rate
  /// sampler drops zero intervals), so BBR2's estimate is then whatever
  /// sample crossed a timer jump (one small packet ACKed after a PTO: a few
  /// KB/s). Once loss ends Startup it paces at that and transfers crawl.
  quic_time delay = 250'000;
  /// Probability that a datagram is dropped, from a seeded generator.
  double loss = 0.0;
  /// A frozen end neither receives, writes nor runs timers: it stopped
  /// answering, as far as its peer can tell.
  bool a_frozen = false;
  bool b_frozen = false;
  /// The path's largest UDP payload: bigger datagrams are dropped, as a
  /// router with a smaller MTU and DF set would (QUIC's PMTUD then settles
  /// below it).
  size_t mtu = SIZE_MAX;
  /// Paths (quic_path_id) that drop everything, both ways.
  std::vector<quic_path_id> dead_paths;

  uint64_t delivered = 0;
  uint64_t dropped = 0;

  explicit quic_pipe(uint64_t seed = 0x9e3779b97f4a7c15ull) : rng_(seed | 1) {}

  /// One round: deliver due datagrams, run due timers, write. Returns false
  /// when nothing is in flight and neither side has a timer (quiescent).
  bool step() {
    while (!queue_.empty() && queue_.front().at <= now) {
      auto f = std::move(queue_.front());
      queue_.pop_front();
      auto* to = f.to_b ? b : a;
      bool frozen = f.to_b ? b_frozen : a_frozen;
      if (to == nullptr || frozen)
        continue;
      ++delivered;
      to->receive(reinterpret_cast<const uint8_t*>(f.data.data()),
                  f.data.size(), now, f.path);
    }
    timers(a, a_frozen);
    timers(b, b_frozen);
    drain(a, a_frozen, true);
    drain(b, b_frozen, false);
    auto next = UINT64_MAX;
    if (!queue_.empty())
      next = queue_.front().at;
    if (a != nullptr && !a_frozen)
      next = std::min(next, a->expiry());
    if (b != nullptr && !b_frozen)
      next = std::min(next, b->expiry());
    if (next == UINT64_MAX)
      return false;
    if (next > now) {
      now = next;
      stuck_ = 0;
    } else if (++stuck_ > 10000) {
      // A timer that stays due without effect would spin forever.
      now += 1000;
      stuck_ = 0;
    }
    return true;
  }

  /// Steps until `done()` holds; false if the pipe went quiet or `limit`
  /// nanoseconds of virtual time passed first.
  template <class Pred>
  bool run_until(Pred done, quic_time limit = 120'000'000'000ull) {
    auto deadline = now + limit;
    while (!done()) {
      if (now > deadline || !step())
        return done();
    }
    return true;
  }

  /// Steps for `span` nanoseconds of virtual time.
  void run_for(quic_time span) {
    auto deadline = now + span;
    while (now < deadline && step()) {
    }
    now = std::max(now, deadline);
  }

  size_t in_flight() const {
    return queue_.size();
  }

private:
  struct flight {
    quic_time at;
    bool to_b;
    std::string data;
    quic_path_id path;
  };

  void timers(quic_connection* c, bool frozen) {
    if (c != nullptr && !frozen && c->expiry() <= now)
      c->on_expiry(now);
  }

  void drain(quic_connection* c, bool frozen, bool from_a) {
    if (c == nullptr || frozen)
      return;
    constexpr size_t batch = 64;
    // A batch ends early where the next datagram goes on another path:
    // write until nothing comes (bounded).
    for (int i = 0; i < 256; ++i) {
      out_.clear();
      c->write(now, out_, batch);
      auto path = c->write_path();
      bool dead = std::find(dead_paths.begin(), dead_paths.end(), path)
                  != dead_paths.end();
      for (auto& d : out_) {
        if (dead || d.size() > mtu || (loss > 0 && uniform() < loss)) {
          ++dropped;
          continue;
        }
        queue_.push_back({now + delay, from_a, std::move(d), path});
      }
      if (out_.empty())
        break;
    }
  }

  double uniform() {
    // xorshift64*: deterministic for a given seed.
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return static_cast<double>((rng_ * 2685821657736338717ull) >> 11)
           / 9007199254740992.0;
  }

  std::deque<flight> queue_;
  std::vector<std::string> out_;
  uint64_t rng_;
  int stuck_ = 0;
};

} // namespace p2proxy
