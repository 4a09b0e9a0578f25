// SIGNAL LINK: the node's one link to the signaling server (seed: "P2P
// Server Management"). It logs in with the node key, registers the export
// names, sends heartbeats, reconnects with jittered exponential backoff and
// re-registers after every reconnect, answers directory look-ups, relays
// Signals to and from the actor that owns sessions, and answers probes.
// The server answers each Register name by name (RegisterResult): the
// status's `registrations` show each export registered, pending or refused
// (NAME_TAKEN and the owners), and the log says so.
//
// States and transitions (transition_to() enforces the table):
//
//            start                 conn_up             LoginOk
//   idle ───────────▶ connecting ───────────▶ logging_in ───────────▶ online
//                       │   ▲                    │                      │
//      conn_fail/timeout│   │retry timer         │conn_down/Error/ │conn_down/
//                       ▼   │                    │timeout │dead/Error
//                      backoff ◀─────────────────┴──────────────────────┘
//
//   any state ──stop──▶ stopped   (the link closes its connection and quits)
//
// Timers carry a generation number; every new connection attempt bumps it,
// so a timer armed for an earlier attempt is ignored.
// The connection itself is a FRAME CONNECTION made by the CONNECTOR
// (actors/signal/frame_conn.hpp): the seam that actor tests fake. It is TLS
// 1.3; the link logs in only to a server whose key it trusts (pinned, CA-
// verified or trusted on first use: actors/signal/server_trust.hpp), else
// it backs off with an error naming the expected and the presented id. The
// Login's signature covers the session's channel binding.
//
// Errors are p2proxy errors (actors/common/error.hpp) whose code says why:
// - (lookup_atom, name) answers the ids of the other nodes that own and
//   export `name` (never this node: it does not open sessions to itself;
//   see link_exports.hpp); an empty list when none online does (not an error:
//   GET /v1/lookup shows it, and a CHANNEL turns it into ec::unknown_resource).
//   It fails with ec::not_online (not logged in), ec::timeout (no answer in
//   time), ec::link_down (the link dropped or stopped meanwhile), or the code
//   of the server's Error.
// - (probe_atom, node id): the same, and ec::peer_offline.
// - (signal_atom, Signal): ec::not_online, ec::protocol_error (malformed).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_clock.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <caf/response_promise.hpp>

#include "actors/common/backoff.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/identity/identity.hpp"
#include "actors/signal/server_trust.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"

namespace p2proxy {

struct signal_link_config {
  /// The server connected to (or tried) now; with `servers` set, the link
  /// keeps it pointing at the current one.
  endpoint server;
  /// Every server of a cluster ([signal] server = [...]); empty: `server`
  /// alone. The link shuffles them (by `seed`) and tries them in turn: each
  /// failed attempt or lost link moves to the next, after the usual
  /// backoff delay (docs/cluster.md).
  std::vector<endpoint> servers;
  /// Which server key ids the link logs in to (actors/signal/server_trust).
  server_trust trust;
  std::string token;
  std::chrono::milliseconds heartbeat{15000};
  std::chrono::milliseconds dead_after{45000};
  std::chrono::milliseconds backoff_first{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds lookup_timeout{5000};
  /// From asking the CONNECTOR to LoginOk.
  std::chrono::milliseconds login_timeout{15000};
  std::vector<std::string> exports;
  uint64_t seed = 0; // backoff jitter
  /// Called (in the link's actor) with the STUN/TURN servers the server
  /// hands out at login and with each refresh of its TURN credentials. It
  /// must only store them (node/wiring.cpp: the ICE driver reads them).
  std::function<void(const signal::IceServers&)> on_ice_servers;
  /// `p2proxy netcheck`: log in only to learn the servers; the server does
  /// not list this login and closes after LoginOk.
  bool probe_only = false;
};

enum class link_state {
  idle,
  connecting,
  logging_in,
  online,
  backoff,
  stopped
};

const char* to_string(link_state s);

/// Whether the table allows `from` -> `to`.
bool link_transition_allowed(link_state from, link_state to);

struct signal_link_state {
  static inline const char* name = "signal_link";

  signal_link_config cfg;
  std::shared_ptr<const identity> id;
  caf::actor connector;
  caf::actor sink;     // PEER MANAGER (or whoever owns sessions)
  caf::actor conn;     // the current FRAME CONNECTION, if any
  std::string binding; // its TLS channel binding, which the Login signs

  link_state state = link_state::idle;
  size_t server_index = 0; // into cfg.servers
  uint64_t gen = 0;        // attempt generation, for timers and conn tags
  backoff retry;
  caf::actor_clock::time_point last_rx;
  uint64_t ping_seq = 0;

  struct pending_lookup {
    caf::response_promise rp;
    std::string name;
  };
  uint64_t next_request = 1;
  std::map<uint64_t, pending_lookup> lookups;

  struct pending_probe {
    caf::response_promise rp;
    std::string peer;
    caf::actor_clock::time_point sent;
  };
  std::map<uint64_t, pending_probe> probes;

  // Status.
  admin::SignalLinkStatus status;
  std::deque<admin::LinkEvent> history;
};

using signal_link_actor = caf::stateful_actor<signal_link_state>;

/// Spawn with self->spawn(signal_link, cfg, id, connector, sink); it starts
/// connecting at once. `sink` may be invalid (Signals are then counted and
/// dropped) and set later with (sink_atom, actor).
/// Besides the messages of actors/actors.hpp it answers
///   (probe_atom, std::string node_id) -> uint64_t round trip in microseconds
///   (get_atom) -> std::string serialized admin::SignalLinkStatus
caf::behavior signal_link(signal_link_actor* self, signal_link_config cfg,
                          std::shared_ptr<const identity> id,
                          caf::actor connector, caf::actor sink);

} // namespace p2proxy
