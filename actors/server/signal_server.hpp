// The signaling server: SIGNAL SERVER (accept loop, a broker), one SIGNAL
// CLIENT per connection, and the DIRECTORY (presence, exports, routing).
// Protocol: proto/signal.proto, docs/protocol.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "actors/cluster/cluster.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/server/names_policy.hpp"
#include "actors/server/relay_credentials.hpp"
#include "actors/signal/tls_channel.hpp"

namespace p2proxy {

struct server_options {
  endpoint listen;
  /// The server's certificate and key; start_signal_server refuses to run
  /// without them (there is no plaintext mode).
  std::shared_ptr<const tls_server_credentials> tls;
  std::string token;                              // empty: none required
  std::chrono::milliseconds login_timeout{10000}; // unauthenticated limit
  std::chrono::milliseconds heartbeat{15000};     // announced in Hello
  std::chrono::milliseconds dead_after{45000};    // silence that ends a node
  uint32_t login_burst = 30; // failed attempts per source ...
  std::chrono::milliseconds login_window{60000}; // ... per window
  /// Connections that have not logged in yet, all sources together; at the
  /// cap the oldest one of the source with the most makes room.
  uint32_t max_pending = 512;
  /// A source over its failure budget keeps at most this many unfinished
  /// connections; a newer one evicts its oldest.
  uint32_t max_pending_limited = 8;
  /// New connections accepted per second (in steps of a tenth of a second);
  /// the rest wait in the kernel's listen queue, so a crowd reconnecting at
  /// once (a failover, a restart) is admitted at a pace the server keeps up
  /// with instead of all starting TLS together. 0: no bound.
  uint32_t accept_rate = 500;
  names_options names; // who may export which name (the DIRECTORY's)
  relay_options relay; // STUN/TURN servers and credentials handed out
  /// Set with --redis: the server is one of a cluster (docs/cluster.md).
  std::optional<cluster_options> cluster;
};

/// Per-source login rate limit: a token bucket per remote address holding
/// up to `burst` attempts and refilling `burst` per `window`. The SIGNAL
/// SERVER takes one attempt for each failed or unfinished login only, so a
/// node that logs in is never refused for its address. burst == 0 turns the
/// limit off.
class login_rate_limiter {
public:
  using clock = std::chrono::steady_clock;

  login_rate_limiter(uint32_t burst, std::chrono::milliseconds window)
    : burst_(burst), window_(window) {}

  /// Takes one attempt for `address` at `now`; false when none is left.
  /// `first_refusal` (optional) tells whether this is the first refusal
  /// since the address last got through, so a flood is logged once.
  bool allow(const std::string& address, clock::time_point now,
             bool* first_refusal = nullptr);

  /// True when `address` was refused an attempt within the last window (it
  /// stays limited that long, so an attacker whose failures pause for a
  /// refill is not let off at once). Takes no attempt.
  bool exhausted(const std::string& address, clock::time_point now);

  /// Addresses currently tracked (full buckets are forgotten over time).
  size_t tracked() const {
    return buckets_.size();
  }

private:
  struct bucket {
    double tokens;
    clock::time_point last;
    bool refusing;
    clock::time_point refused_at{}; // the last refusal
    bool ever_refused = false;
  };
  void refill(bucket& b, clock::time_point now) const;

  uint32_t burst_;
  std::chrono::milliseconds window_;
  std::map<std::string, bucket> buckets_;
};

/// Starts the server's actors in `sys` and binds `opts.listen` (port 0 picks
/// one; the bound port is stored in `bound_port`). Returns the SIGNAL SERVER,
/// which answers (get_atom) -> std::string JSON of admin::ServerStatus and
/// (metrics_atom) -> std::string Prometheus text, passes (reload_atom) on to
/// the DIRECTORY, and ends on (stop_atom, reason).
caf::expected<caf::actor> start_signal_server(caf::actor_system& sys,
                                              const server_options& opts,
                                              uint16_t& bound_port);

} // namespace p2proxy
