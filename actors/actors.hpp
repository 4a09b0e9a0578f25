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
// conn -> owner:  (conn_up_atom, uint64_t tag, caf::actor conn, std::string
// peer)
//                 (frame_atom, std::string payload)   one complete frame
//                 (conn_down_atom, std::string reason) the connection is gone;
//                                                     the conn has ended itself
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
using conn_up_atom = caf::atom_constant<caf::atom("conn_up")>;
using conn_down_atom = caf::atom_constant<caf::atom("conn_down")>;

// --- CONNECTOR (opens FRAME CONNECTIONs; the seam faked in actor tests) ------
// link -> connector: (connect_atom, uint64_t tag, std::string host, uint16_t
// port, caf::actor owner)
//   success: the new conn sends (conn_up_atom, tag, conn, peer) to owner
//   failure: connector sends (conn_fail_atom, uint64_t tag, std::string reason)
//   to owner
using connect_atom = caf::atom_constant<caf::atom("connect")>;
using conn_fail_atom = caf::atom_constant<caf::atom("conn_fail")>;

// --- SIGNAL LINK (the node's link to the signaling server) ------------------
// (lookup_atom, std::string name) -> std::vector<std::string> node ids
//     error: not online, timeout
// (signal_atom, std::string serialized signal::Signal)  send to Signal.to
// (register_atom, std::vector<std::string> names)       set the export names
// (sink_atom, caf::actor) who receives incoming Signals (the PEER MANAGER):
//     link -> sink: (signal_atom, std::string serialized signal::Signal)
//                   (peer_off_atom, std::string peer, uint64_t session_id,
//                   std::string text)
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
/// (probe_atom, std::string node_id) -> uint64_t microseconds through the
/// server
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
// directory -> client: (replaced_atom), (deliver_atom, std::string serialized
// Envelope)
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

// --- PEER MANAGER (the only creator and destroyer of PEER SESSIONs) ----------
// (open_atom, std::string node_id) -> caf::actor session, once it is ready;
//     error: peer offline, ICE failed, handshake failed, identity mismatch,
//     timeout (the text says which)
// (signal_atom, std::string serialized Signal)     from the SIGNAL LINK (sink)
// (peer_off_atom, peer, session_id, text)          from the SIGNAL LINK
// (get_atom) -> std::string serialized admin::SessionList
// session -> manager: (ready_atom, uint64_t session_id)
//                     (failed_atom, uint64_t session_id, std::string reason,
//                      std::string final admin::SessionStatus) as it ends
//   and the manager's down_msg when the session has ended.
using open_atom = caf::atom_constant<caf::atom("open")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using failed_atom = caf::atom_constant<caf::atom("failed")>;

// --- PEER SESSION
// --------------------------------------------------------------- manager ->
// session: (signal_atom, std::string serialized Signal)
//                     (stop_atom, std::string reason)   graceful close
// owner -> session:   (stream_open_atom, caf::actor owner) -> int64_t stream id
//                     (stream_write_atom, int64_t id, std::string bytes, bool
//                     fin) (stream_consumed_atom, int64_t id, uint64_t bytes)
//                     (stream_reset_atom, int64_t id, uint64_t app_error)
// session -> owner:   (stream_data_atom, int64_t id, std::string bytes, bool
// fin)
//                     (stream_credit_atom, int64_t id, uint64_t bytes) may
//                     write
//                         that many more bytes
//                     (stream_reset_atom, int64_t id, uint64_t app_error)
//                     (stream_closed_atom, int64_t id)
//                     (session_down_atom, std::string reason)
// session -> stream handler (peer-opened streams): as to an owner, after the
//     handler factory spawned it for (session, id).
// INTERNAL: (quic_timer_atom, uint64_t gen), (linger_atom, uint64_t gen),
//           (timeout_atom, uint64_t gen) connect deadline,
//           (quic_link_atom) from its QUIC link: events wait (quic_link.hpp)
using stream_open_atom = caf::atom_constant<caf::atom("s_open")>;
using stream_write_atom = caf::atom_constant<caf::atom("s_write")>;
using stream_consumed_atom = caf::atom_constant<caf::atom("s_consumed")>;
using stream_reset_atom = caf::atom_constant<caf::atom("s_reset")>;
using stream_data_atom = caf::atom_constant<caf::atom("s_data")>;
using stream_credit_atom = caf::atom_constant<caf::atom("s_credit")>;
using stream_closed_atom = caf::atom_constant<caf::atom("s_closed")>;
using session_down_atom = caf::atom_constant<caf::atom("sess_down")>;
using quic_timer_atom = caf::atom_constant<caf::atom("q_timer")>;
using quic_link_atom = caf::atom_constant<caf::atom("q_link")>;
using linger_atom = caf::atom_constant<caf::atom("linger")>;

// --- DEBUG PUMP ([debug] test_resources; GET /v1/debug/pump/NODE-ID)
// ------------- (pump_atom, std::string peer, std::string resource, uint64_t
// bytes,
//  uint32_t streams) -> std::string JSON result
using pump_atom = caf::atom_constant<caf::atom("pump")>;

// --- CHANNEL (one client or target TCP connection <-> one stream)
// ----------------- stream owner handoff, STREAM SERVICE -> session:
//   (stream_owner_atom, int64_t id, caf::actor new_owner); the session answers
//   the old owner with (stream_owner_atom, int64_t id) once messages for the
//   stream go to the new owner, so the old one forwards what came before;
//   then the old owner tells the session (stream_owner_atom, int64_t id):
//   until that (or its end), the session holds the new owner's messages, so
//   none overtakes a forwarded one.
// INTERNAL: (timeout_atom, uint64_t gen) a bounded wait ran out
using stream_owner_atom = caf::atom_constant<caf::atom("s_owner")>;
/// CHANNEL → itself, posted through the I/O multiplexer: its socket, paused
/// for lack of credit, may be read again (see update_reading in channel.cpp).
using read_more_atom = caf::atom_constant<caf::atom("read_more")>;
/// CHANNEL → node supervisor: (channel_atom) once started (the supervisor
/// monitors it and asks it for status_atom), and (channel_atom, bool
/// connected, uint64_t bytes_in, uint64_t bytes_out) when it ends, for the
/// node's totals.
using channel_atom = caf::atom_constant<caf::atom("channel")>;
/// Half-closable scribe → its broker: (local_eof_atom, connection_handle)
/// once the peer of the socket has sent FIN (actors/common/half_close.hpp).
using local_eof_atom = caf::atom_constant<caf::atom("local_eof")>;
/// Half-closable scribe → its broker: (local_lost_atom, connection_handle)
/// once the peer of the socket no longer reads (a write failed).
using local_lost_atom = caf::atom_constant<caf::atom("local_lost")>;

// --- ICE (events from the ICE driver to a PEER SESSION;
// actors/ice/ice_driver.hpp)
using ice_cand_atom = caf::atom_constant<caf::atom("ice_cand")>;
using ice_gathered_atom = caf::atom_constant<caf::atom("ice_gath")>;
using ice_state_atom = caf::atom_constant<caf::atom("ice_state")>;
using ice_pair_atom = caf::atom_constant<caf::atom("ice_pair")>;
using ice_data_atom = caf::atom_constant<caf::atom("ice_data")>;

} // namespace p2proxy
