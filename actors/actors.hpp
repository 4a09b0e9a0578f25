// Every actor interface of p2proxy in one place: the atoms, the message
// shapes each actor accepts, and who sends them. Role names are in capitals.
//
// Conventions
// - Frames travel between actors as serialized protobuf (std::string), so a
//   message needs no type registration and the wire format is the only one.
// - INTERNAL: marks a message an actor sends to itself (timers carry a
//   generation number so a stale timer is ignored).
// - Every actor answers (status_atom) -> std::string, a serialized
//   admin::ActorStatus; the admin port is built on it.
#pragma once

#include <caf/atom.hpp>

namespace p2proxy {

// --- common -----------------------------------------------------------------
/// (status_atom) -> std::string (serialized admin::ActorStatus)
using status_atom = caf::atom_constant<caf::atom("status")>;
/// (stop_atom, std::string reason): end through the close protocol.
using stop_atom = caf::atom_constant<caf::atom("stop")>;

// --- FRAME CONNECTION (one TCP connection carrying length-prefixed frames) ---
// owner -> conn:  (frame_atom, std::string payload)   send one frame
//                 (close_atom)                        flush and close
// conn -> owner:  (conn_up_atom, uint64_t tag, caf::actor conn, std::string peer)
//                 (frame_atom, std::string payload)   one complete frame
//                 (conn_down_atom, std::string reason) the connection is gone;
//                                                     the conn has ended itself
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using conn_up_atom = caf::atom_constant<caf::atom("conn_up")>;
using conn_down_atom = caf::atom_constant<caf::atom("conn_down")>;

// --- CONNECTOR (opens FRAME CONNECTIONs; the seam faked in actor tests) ------
// link -> connector: (connect_atom, uint64_t tag, std::string host, uint16_t port, caf::actor owner)
//   success: the new conn sends (conn_up_atom, tag, conn, peer) to owner
//   failure: connector sends (conn_fail_atom, uint64_t tag, std::string reason) to owner
using connect_atom = caf::atom_constant<caf::atom("connect")>;
using conn_fail_atom = caf::atom_constant<caf::atom("conn_fail")>;

// --- SIGNAL LINK (the node's link to the signaling server) ------------------
// (lookup_atom, std::string name) -> std::vector<std::string> node ids
//     error: not online, timeout
// (signal_atom, std::string serialized signal::Signal)  send to Signal.to
// (register_atom, std::vector<std::string> names)       set the export names
// (sink_atom, caf::actor) who receives incoming Signals (the PEER MANAGER):
//     link -> sink: (signal_atom, std::string serialized signal::Signal)
//                   (peer_off_atom, std::string peer, uint64_t session_id, std::string text)
// INTERNAL: (tick_atom, uint64_t gen)       heartbeat tick
//           (retry_atom, uint64_t gen)      backoff over, connect again
//           (timeout_atom, uint64_t gen)    connect/login attempt took too long
//           (lookup_timeout_atom, uint64_t request_id)
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using signal_atom = caf::atom_constant<caf::atom("signal")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using sink_atom = caf::atom_constant<caf::atom("sink")>;
using peer_off_atom = caf::atom_constant<caf::atom("peer_off")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using lookup_timeout_atom = caf::atom_constant<caf::atom("lk_timeout")>;
/// (probe_atom, std::string node_id) -> uint64_t microseconds through the server
using probe_atom = caf::atom_constant<caf::atom("probe")>;
/// INTERNAL: (probe_timeout_atom, uint64_t nonce)
using probe_timeout_atom = caf::atom_constant<caf::atom("pr_timeout")>;

// --- DIRECTORY (signaling server: who is online, who exports what) ----------
// (login_atom, std::string node_id, caf::actor client, std::string address)
//     -> bool  registers client; a previous client of node_id is told
//              (replaced_atom) and ends itself
// (logout_atom, std::string node_id, caf::actor client)  only if still current
// (register_atom, std::string node_id, std::vector<std::string> names)
// (lookup_atom, std::string name) -> std::vector<std::string> node ids
// (route_atom, std::string to, std::string serialized Envelope) -> bool online
// directory -> client: (replaced_atom), (deliver_atom, std::string serialized Envelope)
using login_atom = caf::atom_constant<caf::atom("login")>;
using logout_atom = caf::atom_constant<caf::atom("logout")>;
using replaced_atom = caf::atom_constant<caf::atom("replaced")>;
using route_atom = caf::atom_constant<caf::atom("route")>;
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;
/// (nodes_atom) -> std::string serialized admin::ServerStatus (nodes only)
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;

// --- NODE SUPERVISOR / ADMIN -------------------------------------------------
/// (get_atom) -> std::string JSON of admin::NodeStatus (or ServerStatus);
/// the SIGNAL LINK alone answers with a serialized admin::SignalLinkStatus
using get_atom = caf::atom_constant<caf::atom("get")>;
/// (metrics_atom) -> std::string Prometheus text
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;

// --- SIGNALING SERVER additions (actors/server/) ---------------------------
// No new atoms. Message shapes the server side uses beyond those above:
// - directory -> client: (replaced_atom, std::string by_address): the address
//   of the newer login, quoted in the Error{REPLACED} the old node receives.
// - SIGNAL SERVER -> client: (stop_atom, std::string reason): the client sends
//   Error{SHUTTING_DOWN} to its node, closes and ends itself.
// - SIGNAL SERVER: (get_atom) -> std::string JSON of admin::ServerStatus,
//   (metrics_atom) -> std::string Prometheus text, (stop_atom, reason).
// - SIGNAL CLIENT INTERNAL: (timeout_atom, uint64_t gen) login/heartbeat
//   deadline.

} // namespace p2proxy
