// SIGNAL CLIENT: the signaling server's side of one node's connection. It
// greets the node with a nonce, checks its Login (token, node id = hash of
// the key, signature), registers it in the DIRECTORY and then serves its
// Register / Lookup / Signal / Ping frames. Protocol: docs/protocol.md.
//
// It talks to a FRAME CONNECTION (actors/signal/frame_conn.hpp) that it owns:
// the SIGNAL SERVER spawns the client first, then hands the accepted socket
// to a frame connection whose owner is the client, so the client starts with
// the connection's (conn_up_atom, ...) once TLS is up. The Login's signature
// must cover that TLS session's channel binding. Actor tests replace the
// connection with a fake that records frames.
//
// Unauthenticated connections are the attacker's: the client checks cheap
// things first (frame size in the connection, then the token, then the id's
// hash) and the signature last, logs their failures only at debug level,
// and tells the SIGNAL SERVER once how the attempt ended (attempt_atom), so
// that only failed or unfinished attempts count against an address and the
// server logs them per address once a minute.
//
//   waiting_conn ──conn_up──▶ awaiting_login ──valid Login──▶ authorizing
//        │                          │                              │
//        │                          │ bad Login, other frame,      │ DIRECTORY
//        │                          │ login timeout, bad frame     │ accepted
//        │                          ▼                              ▼
//        └───login timeout───▶   closed   ◀── conn_down, replaced, ── online
//                                           heartbeat timeout, stop
//
// closed is final: on entering it the client sends its Error frame (if any)
// and (close_atom) to the connection, logs out of the DIRECTORY when it had
// logged in, and ends itself. The SIGNAL SERVER only sees the down_msg.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/server/signal_server.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

/// Counters shared by the SIGNAL SERVER and its clients. Atomics, not
/// messages: they change on every frame, and the server only reads them
/// when asked for its status.
struct server_metrics {
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> logins{0};
  std::atomic<uint64_t> frames_in{0};
  std::atomic<uint64_t> frames_out{0};
  /// Connections the server ended: failed logins, rate limits, protocol
  /// errors, timeouts and replaced logins (not the node's own close).
  std::atomic<uint64_t> dropped_connections{0};
  /// The cluster's figures (docs/cluster.md); null without --redis.
  std::shared_ptr<cluster_metrics> cluster;
  /// Failed logins by the signal::ErrorCode sent for them.
  std::array<std::atomic<uint64_t>, 16> login_failures{};

  void count_login_failure(signal::ErrorCode code) {
    auto i = static_cast<size_t>(code);
    if (i < login_failures.size())
      ++login_failures[i];
  }
  uint64_t total_login_failures() const {
    uint64_t n = 0;
    for (auto& x : login_failures)
      n += x.load();
    return n;
  }
};

/// The error codes that count as failed logins, with their metric labels.
struct login_failure_label {
  signal::ErrorCode code;
  const char* label;
};
extern const std::array<login_failure_label, 7> login_failure_labels;

struct signal_client_state {
  enum class state {
    waiting_conn,   // spawned, the FRAME CONNECTION has not reported yet
    awaiting_login, // Hello sent; only a Login is acceptable
    authorizing,    // Login verified; waiting for the DIRECTORY to take it
    online,         // logged in; serving frames
    closed,         // final: the client is ending itself
  };

  state current = state::waiting_conn;
  caf::actor directory;
  caf::actor server; // hears (attempt_atom, ...) once; may be invalid
  bool attempt_reported = false;
  caf::actor conn;
  std::string binding; // the TLS channel binding the Login must sign
  server_options opts;
  std::shared_ptr<server_metrics> metrics;
  std::string peer;    // "addr:port" as seen by the server
  std::string nonce;   // the Hello nonce the Login must sign
  std::string node_id; // set once authorized
  bool logged_in = false;
  // Timer generation: a (timeout_atom, gen) with an older gen is stale.
  uint64_t timer_gen = 0;
  caf::actor_clock::time_point last_frame;

  /// Moves to `next`; asserts that the transition table allows it.
  void transition_to(state next);

  static const char* to_string(state s);
  static inline const char* name = "signal_client";
};

using signal_client_actor = caf::stateful_actor<signal_client_state>;

/// Spawn with sys.spawn(signal_client, directory, opts, metrics, server);
/// the connection introduces itself with (conn_up_atom, tag, conn, peer,
/// key id, channel binding, CA problem) or fails with (conn_fail_atom, tag,
/// reason). Tells `server` (attempt_atom, logged_in, why_not) once.
/// Accepts besides the connection's messages:
///   (evict_atom, std::string reason)         from the SIGNAL SERVER
///   (replaced_atom, std::string by_address)  from the DIRECTORY
///   (deliver_atom, std::string envelope)     from the DIRECTORY
///   (stop_atom, std::string reason)          from the SIGNAL SERVER
///   (status_atom) -> std::string serialized admin::ActorStatus
///   INTERNAL: (timeout_atom, uint64_t gen)   login or heartbeat deadline
caf::behavior signal_client(signal_client_actor* self, caf::actor directory,
                            server_options opts,
                            std::shared_ptr<server_metrics> metrics,
                            caf::actor server);

} // namespace p2proxy
