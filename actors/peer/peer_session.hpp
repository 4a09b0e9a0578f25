// PEER SESSION (seed: P2PConnectionICE + ProxyP2PSession +
// P2PConnectionImplementator): one authenticated, encrypted session with one
// other node. It owns one ICE agent (through the ICE driver) and one QUIC
// connection on the selected pair (in a quic_link, driven on the ICE thread
// where the agent allows), and multiplexes streams for its owners. When the
// path dies it runs an ICE restart: a new agent (a new generation) under the
// same QUIC connection (session_path.cpp, docs/sessions.md "Path changes").
// Only the PEER MANAGER creates it; it ends itself through its close
// protocol and the manager reacts to the down_msg.
//
// States (transition_to() enforces the table):
//
//   connecting_ice ──ICE ready──▶ handshaking ──handshake done──▶ ready
//        │                            │                           │  ▲
//        │ ICE failed, timeout,       │ handshake failed,         │  │ stream
//        │ bye, stop                  │ identity mismatch,        │  │ opened
//        │                            │ timeout, bye, stop        ▼  │
//        │                            │                       lingering
//        │                            │                           │ linger
//        over, ▼                            ▼                           ▼ stop,
//        bye
//      closed ◀──────────────────── closing ◀───────────────── (ready too)
//
// - ready → lingering when the last stream ends (or at once when ready has
//   no stream); lingering → ready when a stream opens, which bumps the
//   linger generation so the pending linger timer is ignored (atomic cancel).
// - lingering → closing only through the close handshake both ends agree
//   on (session_close.hpp: propose, accept or reject, cancel by a stream);
//   the linger is the opener's, sent on the control stream.
// - closing: a CONNECTION_CLOSE is written, owners hear (session_down_atom),
//   the ICE agent is closed; then closed, and the actor quits.
// - Before QUIC exists (connecting_ice) there is nothing to close politely:
//   the session sends the peer a `bye` Signal and goes to closed directly.
// - As it ends it tells the manager (failed_atom, session_id, caf::error why,
//   final admin::SessionStatus): why's code says the class (ec::ice_failed,
//   timeout, handshake_failed, identity_mismatch, peer_offline when the peer
//   said so, session_lost; unspecified for a stop or the idle linger), its
//   text is the close reason people read.
//
// A stream the peer opens has no owner at first: the session reads its
// StreamOpen preamble itself (bounded by session_settings::max_preamble,
// within preamble_timeout), consuming those bytes at once, then calls the
// handler factory ONCE with what it read. A stream whose preamble is
// oversize, malformed, cut short by a FIN or late, or whose resource the
// factory refuses, is answered with a StreamOpenResult error and a FIN by
// the session itself (and what the peer still sends on it is consumed).
//
// Source files: peer_session.cpp (life cycle), peer_session_streams.cpp
// (the stream table), peer_session_opening.cpp (reading a peer-opened
// stream's StreamOpen and spawning its owner), session_path.cpp (ICE
// restarts). A stream's owner never changes: the factory spawns the final
// one.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/actors.hpp"
#include "actors/common/preamble.hpp"
#include "actors/ice/ice_driver.hpp"
#include "actors/identity/identity.hpp"
#include "actors/peer/quic_link.hpp"
#include "actors/peer/session_close.hpp"
#include "actors/quic/quic_connection.hpp"
#include "proto/admin.pb.h"
#include "proto/tunnel.pb.h"

namespace p2proxy {

enum class session_state {
  connecting_ice,
  handshaking,
  ready,
  lingering,
  closing,
  closed
};

const char* to_string(session_state s);
bool session_transition_allowed(session_state from, session_state to);

/// A stream the peer opened, as the session read it: its StreamOpen and the
/// bytes that came after it.
struct peer_stream_open {
  int64_t stream_id = -1;
  std::string peer; // the node that opened it
  tunnel::StreamOpen open;
  /// Stream bytes after the StreamOpen, NOT yet consumed: the owner
  /// reports them (stream_consumed_atom) once it has passed them on, as it
  /// does for every later byte. (The preamble's own bytes the session
  /// consumed already.)
  std::string first_bytes;
  bool peer_fin = false; // the stream's FIN came with them
  /// Opened by this node's own listener through the LOCAL SESSION
  /// (local_session.hpp), not by a peer.
  bool local = false;
};

/// Spawns the actor that owns a stream the peer opened (the export's owner
/// or a test resource), once its StreamOpen is in. Called by the session,
/// once per stream, which monitors the result and then sends it the
/// stream's messages (credit first). An error instead refuses the stream:
/// its code picks the StreamOpenResult code (ec::unknown_resource ->
/// UNKNOWN_RESOURCE, ec::denied -> DENIED, ec::target_refused,
/// ec::target_unreachable; any other -> BAD_REQUEST), its text is the
/// answer's text.
using stream_handler_factory = std::function<caf::expected<stream_owner_actor>(
  caf::local_actor* session, peer_stream_open open)>;

/// How the session finds a dead path and moves off it (session_path.cpp,
/// docs/sessions.md "Path changes").
struct path_settings {
  /// Bytes waited this long for an ACK with nothing heard from the peer
  /// (counted from the later of the last packet heard and the last look
  /// that found nothing in flight), or the agent said "failed" /
  /// "disconnected": the session runs an ICE restart.
  std::chrono::milliseconds silence_limit{3000};
  /// A restart whose agent found no pair within this is abandoned; the
  /// next one waits restart_backoff, doubled per failure up to 8 times it.
  std::chrono::milliseconds restart_deadline{10000};
  std::chrono::milliseconds restart_backoff{1000};
  /// The replaced agent keeps receiving this long (packets in flight).
  std::chrono::milliseconds retire_after{5000};
  /// A relayed session probes for a direct pair this long after it became
  /// relayed, then doubling up to upgrade_max.
  std::chrono::milliseconds upgrade_first{10000};
  std::chrono::milliseconds upgrade_max{120000};
  /// How often the session looks at its path.
  std::chrono::milliseconds check_every{1000};
};

struct session_settings {
  std::chrono::milliseconds idle_linger{30000};
  std::chrono::milliseconds connect_timeout{20000}; // ICE + handshake
  /// Bytes an owner may have on its way into a stream before it must wait
  /// for (stream_credit_atom).
  uint64_t owner_credit = 1024 * 1024;
  /// A peer-opened stream's StreamOpen: its size limit and how long it may
  /// take to arrive.
  size_t max_preamble = p2proxy::max_preamble;
  std::chrono::milliseconds preamble_timeout{10000};
  quic_settings quic;
  path_settings paths;
};

struct session_args {
  uint64_t session_id = 0;
  std::string peer;         // the node id we expect at the far end
  bool controlling = false; // the opener; the QUIC client
  std::shared_ptr<const identity> me;
  std::shared_ptr<ice_driver> ice;
  caf::actor link;                // SIGNAL LINK, for Signals to the peer
  caf::actor manager;             // PEER MANAGER
  stream_handler_factory handler; // for peer-opened streams; may be empty
  session_settings settings;
  std::string remote_ufrag; // controlled side: from the offer
  std::string remote_pwd;
};

struct session_stream {
  stream_owner_actor owner;
  std::string pending;    // from the owner; QUIC has taken pending_off
  size_t pending_off = 0; // bytes of it (dropped in bulk, not per write:
                          // erasing the front on every partial write
                          // moved up to a window per ack batch)
  size_t unsent() const {
    return pending.size() - pending_off;
  }
  bool pending_fin = false;
  bool fin_queued = false; // FIN handed to QUIC
  bool peer_fin = false;   // the peer's FIN was handed to the owner
  uint64_t granted = 0;    // credit the owner has not used yet
  bool closed = false;
  /// A peer-opened stream whose StreamOpen is still arriving (no owner yet).
  std::optional<preamble_reader> opening;
  /// The owner, attached to the stream's flow: it takes its datagrams.
  flow_owner_actor flow;
};

/// A selected candidate pair as the ICE agent reports it.
struct candidate_pair {
  std::string local_type, local_addr, remote_type, remote_addr;
  bool empty() const {
    return local_type.empty();
  }
  bool relayed() const {
    return local_type == "relay" || remote_type == "relay";
  }
  /// "host 198.18.1.2:5000 -> srflx 198.18.0.3:6000"
  std::string text() const;
  bool operator==(const candidate_pair& o) const {
    return local_type == o.local_type && local_addr == o.local_addr
           && remote_type == o.remote_type && remote_addr == o.remote_addr;
  }
};

/// Why the selected pair went from `from` to `to`: "initial" (the first),
/// "upgrade" (relayed to direct), "fallback" (direct to relayed),
/// "rebinding" (the same candidates' ends at another port of the same
/// address: a NAT mapped anew) or "switch" (ICE chose another pair).
std::string path_change_reason(const candidate_pair& from,
                               const candidate_pair& to);

/// What a session past its setup does when the addresses ICE gathers on
/// changed (net_change_atom; docs/sessions.md, "Path changes"):
/// - restart: the address the current pair's packets leave from (`base`;
///   when empty, a host candidate's own address) was removed;
/// - probe: otherwise, on a relayed pair: look for a direct pair now;
/// - none: a direct pair whose address stays (the silence check still
///   watches it).
enum class network_reaction { none, restart, probe };
network_reaction
react_to_network_change(const candidate_pair& current, const std::string& base,
                        const std::vector<std::string>& removed);

/// The IP of "198.18.1.2:5000" or "[2001:db8::1]:5000", without the port
/// and brackets.
std::string ip_of_address(const std::string& addr);

/// One change of the selected pair, for the status (pathHistory).
struct path_change {
  std::chrono::system_clock::time_point time;
  std::string from, to, reason;
  uint64_t gen = 0;      // the ICE generation of `to`
  bool migrated = false; // QUIC validated it and sends there
};

/// The newest changes a session keeps.
inline constexpr size_t max_path_history = 32;

/// One ICE generation in flight: the restart's new agent.
struct ice_generation {
  uint64_t gen = 0;
  std::shared_ptr<ice_agent> agent;
  bool mine = false;        // this side started it
  bool answered = false;    // the peer's credentials are in
  bool direct_only = false; // an upgrade probe: no TURN on either end
  bool connected = false;   // its ICE state reached connected/ready
  candidate_pair pair;      // its selected pair so far
  std::string reason;       // why it started, for the log
  uint64_t deadline = 0;    // abandoned then (now_ns clock)
};

/// The session's ICE generations: the current one (the agent QUIC sends
/// on), at most one restart in flight, at most one retiring agent.
struct session_paths {
  uint64_t gen = 0;     // the current generation
  uint64_t highest = 0; // the highest either side used
  std::optional<ice_generation> pending;
  std::shared_ptr<ice_agent> retiring;
  uint64_t retiring_gen = 0;
  uint64_t retire_at = 0;
  bool current_failed = false;     // the current agent said failed/disconnected
  uint64_t switched_at = 0;        // the last switch (now_ns clock)
  uint64_t nothing_waiting_at = 0; // the last look with no byte in flight
  unsigned failures = 0;           // failed restarts in a row (backoff)
  uint64_t next_restart = 0;       // no restart before (now_ns clock)
  unsigned upgrade_tries = 0;
  uint64_t next_upgrade = 0; // 0: not relayed
  bool checking = false;     // the path_check_atom loop runs
  uint64_t quic_path = 0;    // the generation QUIC sends on, last seen
  // Counters for the status.
  uint64_t restarts = 0, restarts_failed = 0, glare = 0, upgrades = 0;
  uint64_t migrations = 0;      // QUIC moved to a new generation's pair
  uint64_t network_changes = 0; // heard past the setup (net_change_atom)
};

struct peer_session_state {
  static inline const char* name = "peer_session";

  session_args args;
  session_state state = session_state::connecting_ice;
  std::shared_ptr<ice_agent> agent;
  /// The QUIC connection, driven on the ICE thread where the agent allows.
  std::shared_ptr<quic_link> link;
  std::map<int64_t, session_stream> streams;
  std::deque<int64_t> send_order; // round-robin over streams with data
  uint64_t timer_gen = 0;         // QUIC timer generation
  uint64_t armed_expiry = UINT64_MAX;
  uint64_t linger_gen = 0;
  uint64_t connect_gen = 0;
  bool flush_scheduled = false;
  caf::error close_error;   // why it ended: a p2proxy code and its text
  std::string close_reason; // the text, for the status
  std::chrono::system_clock::time_point linger_deadline;
  close_handshake close; // session_close.cpp
  // ICE facts for the status.
  std::string local_type, local_addr, remote_type, remote_addr;
  std::deque<path_change> path_history; // oldest first, bounded
  session_paths paths;                  // session_path.cpp
  uint64_t local_candidates = 0, remote_candidates = 0;
  /// Datagrams from the peer for a flow nobody here attached (no such
  /// stream, or its owner takes no datagrams): counted and dropped.
  uint64_t datagrams_unknown_flow = 0;
};

using peer_session_actor = caf::stateful_actor<peer_session_state>;

caf::behavior peer_session(peer_session_actor* self, session_args args);

/// The session's row in the status (admin::SessionStatus).
admin::SessionStatus session_status(const peer_session_state& st);

} // namespace p2proxy
