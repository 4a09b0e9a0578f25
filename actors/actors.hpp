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

#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

// Every atom and message type of p2proxy, in one type-ID block. The build
// defines CAF_ENABLE_TYPE_ID_CHECKS, so a message holding a type without an ID
// here (or in CAF's own blocks) does not compile.
CAF_BEGIN_TYPE_ID_BLOCK(p2proxy, caf::first_custom_type_id)

CAF_ADD_TYPE_ID(p2proxy, (std::vector<std::string>))

// --- common -----------------------------------------------------------------
/// (status_atom) -> std::string (serialized admin::ActorStatus)
CAF_ADD_ATOM(p2proxy, p2proxy, status_atom, "status")
/// (stop_atom, std::string reason): end through the close protocol.
CAF_ADD_ATOM(p2proxy, p2proxy, stop_atom, "stop")

// --- FRAME CONNECTION (one TCP connection carrying length-prefixed frames) ---
// owner -> conn:  (frame_atom, std::string payload)   send one frame
//                 (close_atom)                        flush and close
//                 (net_change_atom, added, removed)   ends it (conn_down)
//                                                     if its local address
//                                                     was removed
// conn -> owner:  (conn_up_atom, uint64_t tag, caf::actor conn, std::string
//                 peer, std::string peer_key_id, std::string channel_binding,
//                 std::string ca_problem)  TLS is up (actors/signal/
//                 tls_channel.hpp says what the three last ones are)
//                 (conn_fail_atom, uint64_t tag, std::string reason)  the TLS
//                 handshake failed or the socket closed during it
//                 (frame_atom, std::string payload)   one complete frame
//                 (conn_down_atom, std::string reason) the connection is gone;
//                                                     the conn has ended itself
CAF_ADD_ATOM(p2proxy, p2proxy, frame_atom, "frame")
CAF_ADD_ATOM(p2proxy, p2proxy, close_atom, "close")
CAF_ADD_ATOM(p2proxy, p2proxy, conn_up_atom, "conn_up")
CAF_ADD_ATOM(p2proxy, p2proxy, conn_down_atom, "conn_down")

// --- CONNECTOR (opens FRAME CONNECTIONs; the seam faked in actor tests) ------
// link -> connector: (connect_atom, uint64_t tag, std::string host, uint16_t
// port, caf::actor owner)
//   success: the new conn sends (conn_up_atom, tag, conn, peer, ...) to owner
//   failure: connector sends (conn_fail_atom, uint64_t tag, std::string reason)
//   to owner
CAF_ADD_ATOM(p2proxy, p2proxy, connect_atom, "connect")
CAF_ADD_ATOM(p2proxy, p2proxy, conn_fail_atom, "conn_fail")

// --- SIGNAL LINK (the node's link to the signaling server) ------------------
// (lookup_atom, std::string name) -> std::vector<std::string> node ids
//     error: not online, timeout
// (signal_atom, std::string serialized signal::Signal)  send to Signal.to
// (register_atom, std::vector<std::string> names)       set the export names
// (net_change_atom, added, removed) from the NETWORK WATCH: passed to its
//     connection, which ends if its local address went away (reconnects)
// (sink_atom, caf::actor) who receives incoming Signals (the PEER MANAGER):
//     link -> sink: (signal_atom, std::string serialized signal::Signal)
//                   (peer_off_atom, std::string peer, uint64_t session_id,
//                   std::string text)
//                   (online_atom) after every LoginOk
// INTERNAL: (tick_atom, uint64_t gen)       heartbeat tick
//           (retry_atom, uint64_t gen)      backoff over, connect again
//           (timeout_atom, uint64_t gen)    connect/login attempt took too long
//           (lookup_timeout_atom, uint64_t request_id)
CAF_ADD_ATOM(p2proxy, p2proxy, lookup_atom, "lookup")
CAF_ADD_ATOM(p2proxy, p2proxy, signal_atom, "signal")
CAF_ADD_ATOM(p2proxy, p2proxy, register_atom, "register")
CAF_ADD_ATOM(p2proxy, p2proxy, sink_atom, "sink")
CAF_ADD_ATOM(p2proxy, p2proxy, peer_off_atom, "peer_off")
CAF_ADD_ATOM(p2proxy, p2proxy, tick_atom, "tick")
CAF_ADD_ATOM(p2proxy, p2proxy, retry_atom, "retry")
CAF_ADD_ATOM(p2proxy, p2proxy, timeout_atom, "timeout")
CAF_ADD_ATOM(p2proxy, p2proxy, lookup_timeout_atom, "lk_timeout")
/// (probe_atom, std::string node_id) -> uint64_t microseconds through the
/// server
CAF_ADD_ATOM(p2proxy, p2proxy, probe_atom, "probe")
/// INTERNAL: (probe_timeout_atom, uint64_t nonce)
CAF_ADD_ATOM(p2proxy, p2proxy, probe_timeout_atom, "pr_timeout")

// --- DIRECTORY (signaling server: who is online, who exports what) ----------
// (login_atom, std::string node_id, caf::actor client, std::string address)
//     -> bool  registers client; a previous client of node_id is told
//              (replaced_atom, address) and ends itself
// (logout_atom, std::string node_id, caf::actor client)  only if still current
// (exports_atom, std::string node_id, std::vector<std::string> names)
//     a node's Register; answered with (deliver_atom, RegisterResult
//     Envelope) to the client
// (lookup_atom, std::string name) -> std::vector<std::string> node ids
// (reload_atom)  read the --names policy again (SIGHUP, through the SIGNAL
//     SERVER); online nodes get a fresh RegisterResult
// (route_atom, std::string to, std::string serialized Envelope) -> bool online
// directory -> client: (replaced_atom, std::string by_address),
//     (deliver_atom, std::string serialized Envelope)
CAF_ADD_ATOM(p2proxy, p2proxy, login_atom, "login")
CAF_ADD_ATOM(p2proxy, p2proxy, exports_atom, "exports")
CAF_ADD_ATOM(p2proxy, p2proxy, logout_atom, "logout")
CAF_ADD_ATOM(p2proxy, p2proxy, replaced_atom, "replaced")
CAF_ADD_ATOM(p2proxy, p2proxy, route_atom, "route")
CAF_ADD_ATOM(p2proxy, p2proxy, deliver_atom, "deliver")
/// (nodes_atom) -> std::string serialized admin::ServerStatus (nodes only)
CAF_ADD_ATOM(p2proxy, p2proxy, nodes_atom, "nodes")
/// (reload_atom): read the configuration files again (SIGNAL SERVER and
/// DIRECTORY: the --names policy)
CAF_ADD_ATOM(p2proxy, p2proxy, reload_atom, "reload")
/// client -> SIGNAL SERVER, once per connection: (attempt_atom, bool
/// logged_in, std::string why_not): the login finished, or the connection
/// ended without one (the server's rate limit counts only those)
CAF_ADD_ATOM(p2proxy, p2proxy, attempt_atom, "attempt")
/// SIGNAL SERVER -> client: (evict_atom, std::string reason): a connection
/// that has not logged in yet makes room for a newer one (RATE_LIMITED)
CAF_ADD_ATOM(p2proxy, p2proxy, evict_atom, "evict")

// --- NODE SUPERVISOR (actors/node/node_supervisor.*) ------------------------
// Its whole interface (the ADMIN SERVER, the CHANNELs, the SIGNAL LINK and
// the NODE's main() send it these):
//   (get_atom) -> std::string JSON of admin::NodeStatus  the node's status
//   (metrics_atom) -> std::string Prometheus text
//   (status_atom) -> std::string serialized admin::ActorStatus (its own row)
//   (lookup_atom, std::string name) -> std::vector<std::string> node ids
//       delegated to the SIGNAL LINK
//   (resolve_atom, std::string name) -> the same, delegated to the PEER
//       MANAGER (cached; answers during a signaling outage)
//   (online_atom) from the SIGNAL LINK before the PEER MANAGER is its sink
//   (probe_atom, std::string node_id) -> uint64_t µs, delegated to the LINK
//   (open_atom, std::string node_id) -> caf::actor session, delegated to
//       the PEER MANAGER; for this node's own id, to the LOCAL SESSION
//       (get_atom) -> caf::actor: a node never opens a session to itself
//   (pump_atom, peer, resource, uint64_t bytes, uint32_t streams)
//       -> std::string JSON, through a DEBUG PUMP runner
//   (channel_atom) a CHANNEL started (monitored, asked for its status)
//   (channel_end_atom, bool connected, uint64_t in, uint64_t out) a CHANNEL
//       ended: its totals
//   (signal_atom, std::string) / (peer_off_atom, peer, session_id, text)
//       from the SIGNAL LINK before the PEER MANAGER is its sink (counted,
//       logged)
//   (stop_atom, std::string reason) stop every child, then quit
// --- NODE SUPERVISOR / ADMIN atoms -----------------------------------------
/// (get_atom) -> std::string JSON of admin::NodeStatus (or ServerStatus);
/// the SIGNAL LINK alone answers with a serialized admin::SignalLinkStatus
CAF_ADD_ATOM(p2proxy, p2proxy, get_atom, "get")
/// (metrics_atom) -> std::string Prometheus text
CAF_ADD_ATOM(p2proxy, p2proxy, metrics_atom, "metrics")

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
// (open_atom, std::string node_id) -> caf::actor session, once it is ready
//     (callers hold it as a session_streams_actor, below);
//     error: peer offline, ICE failed, handshake failed, identity mismatch,
//     timeout (the code says which)
// (signal_atom, std::string serialized Signal)     from the SIGNAL LINK (sink)
// (peer_off_atom, peer, session_id, text)          from the SIGNAL LINK
// (get_atom) -> std::string serialized admin::SessionList
// session -> manager: (ready_atom, uint64_t session_id)
//                     (failed_atom, uint64_t session_id, caf::error why,
//                      std::string final admin::SessionStatus) as it ends
//   and the manager's down_msg when the session has ended.
CAF_ADD_ATOM(p2proxy, p2proxy, open_atom, "open")
CAF_ADD_ATOM(p2proxy, p2proxy, ready_atom, "ready")
CAF_ADD_ATOM(p2proxy, p2proxy, failed_atom, "failed")

// --- PEER SESSION ------------------------------------------------------------
// manager -> session: (signal_atom, std::string serialized Signal)
//                     (stop_atom, std::string reason)   graceful close
//                     (net_change_atom, added, removed)  the local
//                     addresses changed (session_path.cpp)
//                     (online_atom)  the SIGNAL LINK logged in again
// owner -> session (session_streams_actor, below):
//   (stream_open_atom, caf::actor owner) -> int64_t stream id
//   (stream_write_atom, int64_t id, std::string bytes, bool fin)
//   (stream_consumed_atom, int64_t id, uint64_t bytes)
//   (stream_reset_atom, int64_t id, uint64_t app_error)
// session -> owner (stream_owner_actor, below):
//   (stream_data_atom, int64_t id, std::string bytes, bool fin)
//   (stream_credit_atom, int64_t id, uint64_t bytes) may write that many more
//   (stream_reset_atom, int64_t id, uint64_t app_error)
//   (stream_closed_atom, int64_t id)
//   (session_down_atom, caf::error why)
// A peer-opened stream's owner is spawned once by the session's factory
// (actors/peer/stream_owners.*) after the session read its StreamOpen.
// The LOCAL SESSION (actors/peer/local_session.*) speaks the same stream
// interface to this node's own clients and their export owners; it also
// answers (get_atom) -> caf::actor (itself, for the NODE SUPERVISOR's
// open_atom) and (stop_atom, std::string reason).
// INTERNAL: (quic_timer_atom, uint64_t gen), (linger_atom, uint64_t gen),
//           (timeout_atom, uint64_t gen) connect deadline,
//           (quic_link_atom) from its QUIC link: events wait (quic_link.hpp)
CAF_ADD_ATOM(p2proxy, p2proxy, stream_open_atom, "s_open")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_write_atom, "s_write")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_consumed_atom, "s_consumed")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_reset_atom, "s_reset")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_data_atom, "s_data")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_credit_atom, "s_credit")
CAF_ADD_ATOM(p2proxy, p2proxy, stream_closed_atom, "s_closed")
CAF_ADD_ATOM(p2proxy, p2proxy, session_down_atom, "sess_down")
CAF_ADD_ATOM(p2proxy, p2proxy, quic_timer_atom, "q_timer")
CAF_ADD_ATOM(p2proxy, p2proxy, quic_link_atom, "q_link")
CAF_ADD_ATOM(p2proxy, p2proxy, linger_atom, "linger")
/// INTERNAL: (preamble_timer_atom, int64_t stream_id) a peer-opened
/// stream's StreamOpen did not arrive in time.
CAF_ADD_ATOM(p2proxy, p2proxy, preamble_timer_atom, "pre_timer")
/// INTERNAL (export CHANNEL): (target_fail_atom, caf::error) the connect
/// worker failed; the code says refused or unreachable.
CAF_ADD_ATOM(p2proxy, p2proxy, target_fail_atom, "tgt_fail")
/// INTERNAL (export CHANNEL): (target_up_atom, int fd, bool reset) the
/// connect worker connected the target; `reset`: it reset right after.
CAF_ADD_ATOM(p2proxy, p2proxy, target_up_atom, "tgt_up")

// --- DEBUG PUMP ([debug] test_resources; GET /v1/debug/pump/NODE-ID) ------
// (pump_atom, std::string peer, std::string resource, uint64_t bytes,
//  uint32_t streams) -> std::string JSON result
CAF_ADD_ATOM(p2proxy, p2proxy, pump_atom, "pump")

// --- CHANNEL (one client or target TCP connection <-> one stream) ---------
/// CHANNEL → itself, posted through the I/O multiplexer: its socket, paused
/// for lack of credit, may be read again (see update_reading in relay.cpp).
CAF_ADD_ATOM(p2proxy, p2proxy, read_more_atom, "read_more")
/// CHANNEL → LISTENER: (refused_atom, caf::error why) once, when a client
/// channel refuses its client. The code says why: an ec (unknown_resource,
/// denied, peer_offline, target_refused, target_unreachable, timeout, ...)
/// for a failed open, a sniff_error (protocol/sniffer.hpp) for a client that
/// named no resource or broke its protocol; the text is for people.
CAF_ADD_ATOM(p2proxy, p2proxy, refused_atom, "refused")
/// CHANNEL → node supervisor: (channel_atom) once started (the supervisor
/// monitors it and asks it for status_atom).
CAF_ADD_ATOM(p2proxy, p2proxy, channel_atom, "channel")
/// CHANNEL → node supervisor: (channel_end_atom, bool connected, uint64_t
/// bytes_in, uint64_t bytes_out) when it ends, for the node's totals.
CAF_ADD_ATOM(p2proxy, p2proxy, channel_end_atom, "chan_end")
/// Half-closable scribe → its broker: (local_eof_atom, connection_handle)
/// once the peer of the socket has sent FIN (actors/common/half_close.hpp).
CAF_ADD_ATOM(p2proxy, p2proxy, local_eof_atom, "local_eof")
/// Half-closable scribe → its broker: (local_lost_atom, connection_handle)
/// once the peer of the socket no longer reads (a write failed).
CAF_ADD_ATOM(p2proxy, p2proxy, local_lost_atom, "local_lost")

// --- ICE (events from the ICE driver to a PEER SESSION) ----------------------
// (actors/ice/ice_driver.hpp)
CAF_ADD_ATOM(p2proxy, p2proxy, ice_cand_atom, "ice_cand")
CAF_ADD_ATOM(p2proxy, p2proxy, ice_gathered_atom, "ice_gath")
CAF_ADD_ATOM(p2proxy, p2proxy, ice_state_atom, "ice_state")
CAF_ADD_ATOM(p2proxy, p2proxy, ice_pair_atom, "ice_pair")
CAF_ADD_ATOM(p2proxy, p2proxy, ice_data_atom, "ice_data")

// --- FLOWS (QUIC DATAGRAMs of a stream's flow; typed handles below) ---------
// A flow is a stream whose owner also sends and receives datagrams; the
// flow id on the wire is the stream id, so a flow exists only while its
// stream does, and only the stream's owner may attach to it.
CAF_ADD_ATOM(p2proxy, p2proxy, flow_attach_atom, "f_attach")
CAF_ADD_ATOM(p2proxy, p2proxy, flow_send_atom, "f_send")
CAF_ADD_ATOM(p2proxy, p2proxy, flow_data_atom, "f_data")
CAF_ADD_ATOM(p2proxy, p2proxy, flow_drop_atom, "f_drop")

// --- UDP (actors/udp/) -------------------------------------------------------
// UDP REACTOR -> socket owner: (udp_in_atom, std::vector<std::string> from,
//   std::vector<std::string> payloads) datagrams its socket received
//   (udp_reactor.hpp)
// INTERNAL (UDP LISTENER, UDP EXPORT FLOW): (udp_tick_atom, uint64_t gen)
//   idle check
CAF_ADD_ATOM(p2proxy, p2proxy, udp_in_atom, "udp_in")
CAF_ADD_ATOM(p2proxy, p2proxy, udp_tick_atom, "udp_tick")

// --- look-ups that ride out signaling outages (PEER MANAGER) ----------------
/// (resolve_atom, std::string name) -> std::vector<std::string> node ids: the
/// SIGNAL LINK's look-up, cached; while it fails, the cached owners that have
/// a live session (NODE SUPERVISOR delegates it to the PEER MANAGER; the
/// client CHANNEL asks it)
CAF_ADD_ATOM(p2proxy, p2proxy, resolve_atom, "resolve")
/// SIGNAL LINK -> sink: (online_atom) logged in (again); the PEER MANAGER
/// re-validates its cached look-ups
CAF_ADD_ATOM(p2proxy, p2proxy, online_atom, "online")

// --- CLUSTER (actors/cluster/cluster.hpp): the DIRECTORY's link to Redis ----
// directory -> cluster: (login_atom, std::string id), (logout_atom, id),
//   (exports_atom, std::string id, std::vector<std::string> accepted),
//   (owners_atom, std::string id, std::vector<std::string> claim,
//    std::vector<std::string> read) -> std::vector<std::string> owners,
//   (claim_atom, std::string name, std::string id),
//   (lookup_atom, std::string name) -> std::vector<std::string> node ids,
//   (route_atom, std::string to, std::string envelope) -> bool delivered
//   (delegated by the DIRECTORY), (status_atom), (stop_atom, reason),
//   (policy_atom, std::vector<std::string> flat) this server's --names
//   policy (name, "id,id,...", name, ...) to keep in Redis
// cluster -> directory: (policy_atom, std::vector<std::string> flat) the
//   cluster's policy, read from Redis: apply it
// cluster -> directory: (deliver_atom, std::string to, std::string envelope)
//   from another server, (replaced_atom, std::string id, std::string by)
//   the node logged in on another server instance.
// REDIS LOOP -> cluster: (redis_link_atom, bool up, std::string why),
//   (redis_msg_atom, std::string channel, std::string payload),
//   (redis_reply_atom, uint64_t tag,
//   int32_t kind, std::string str, int64_t number, std::vector<std::string>
//   items, std::string present ('1'/'0' per item)).
CAF_ADD_ATOM(p2proxy, p2proxy, owners_atom, "owners")
CAF_ADD_ATOM(p2proxy, p2proxy, claim_atom, "claim")
CAF_ADD_ATOM(p2proxy, p2proxy, policy_atom, "policy")
CAF_ADD_ATOM(p2proxy, p2proxy, redis_link_atom, "r_link")
CAF_ADD_ATOM(p2proxy, p2proxy, redis_msg_atom, "r_msg")
CAF_ADD_ATOM(p2proxy, p2proxy, redis_reply_atom, "r_reply")

// PEER SESSION internal: the path watch's tick (session_path.cpp).
CAF_ADD_ATOM(p2proxy, p2proxy, path_check_atom, "p_check")

// --- NETWORK WATCH (actors/ice/network_watch.hpp) ---------------------------
/// NETWORK WATCH -> PEER MANAGER -> each PEER SESSION, and NETWORK WATCH ->
/// SIGNAL LINK -> its FRAME CONNECTION: (net_change_atom,
/// std::vector<std::string> added, std::vector<std::string> removed) the
/// addresses ICE gathers on changed (IP addresses in text form)
CAF_ADD_ATOM(p2proxy, p2proxy, net_change_atom, "net_change")

// NODE SUPERVISOR internal: the heap's periodic trim (node_supervisor.cpp).
CAF_ADD_ATOM(p2proxy, p2proxy, memory_trim_atom, "mem_trim")
CAF_END_TYPE_ID_BLOCK(p2proxy)

// --- Typed interfaces --------------------------------------------------------
// What other actors may send each of these roles, checked by the compiler at
// every send and request through the handle. The actors behind them may stay
// untyped inside (the CHANNEL and the LISTENER are CAF brokers, the PEER
// SESSION a stateful actor with INTERNAL messages): CAF 0.17's typed brokers
// (caf/io/typed_broker.hpp) would type the broker's I/O events and INTERNAL
// self-messages into the public interface too, so the broker stays untyped
// and its spawn function hands out a typed handle (caf::actor_cast), which
// is all a sender ever holds. Replies and self-messages are not part of an
// interface.
namespace p2proxy {

/// STREAM OWNER: the one actor a PEER SESSION's stream belongs to (a client
/// or export CHANNEL, a TEST RESOURCE, the DEBUG PUMP's streams). What the
/// session sends it:
using stream_owner_actor = caf::typed_actor<
  // The peer's bytes on the stream, and whether its FIN came with them. The
  // owner reports them (stream_consumed_atom) once it has passed them on.
  caf::reacts_to<stream_data_atom, int64_t, std::string, bool>,
  // The owner may write that many more bytes.
  caf::reacts_to<stream_credit_atom, int64_t, uint64_t>,
  // The peer reset the stream (its application error code).
  caf::reacts_to<stream_reset_atom, int64_t, uint64_t>,
  // The stream is over both ways; nothing more comes for it.
  caf::reacts_to<stream_closed_atom, int64_t>,
  // The whole session ended; its code and text say why.
  caf::reacts_to<session_down_atom, caf::error>>;

/// PEER SESSION, its stream interface: what a stream's owner sends. (The
/// PEER MANAGER's messages to it, its ICE and QUIC events and its timers
/// are not in this handle: only the manager holds the untyped one.)
using session_streams_actor = caf::typed_actor<
  // Opens a stream owned by the given actor (a stream_owner_actor) and
  // answers its id; the owner gets credit first.
  caf::replies_to<stream_open_atom, caf::actor>::with<int64_t>,
  // Bytes for the stream, within the credit granted; fin: the last ones.
  caf::reacts_to<stream_write_atom, int64_t, std::string, bool>,
  // That many of the stream's received bytes were passed on: the peer may
  // send more.
  caf::reacts_to<stream_consumed_atom, int64_t, uint64_t>,
  // Resets the stream (application error code); the owner hears nothing
  // more of it.
  caf::reacts_to<stream_reset_atom, int64_t, uint64_t>>;

/// CHANNEL (client and export): a stream owner that also answers the NODE
/// SUPERVISOR and the LISTENER. INTERNAL: (timeout_atom, uint64_t gen) a
/// bounded wait ran out, (read_more_atom) its paused socket may be read,
/// (target_up_atom, int fd, bool reset) / (target_fail_atom, caf::error) the
/// export's connect worker reported; from its half-closable scribe
/// (local_eof_atom, hdl), (local_lost_atom, hdl); CAF's I/O events.
using channel_actor = stream_owner_actor::extend<
  // Its row for the status: a serialized admin::ActorStatus.
  caf::replies_to<status_atom>::with<std::string>,
  // Ends the channel (what is on its way to the local socket goes first).
  caf::reacts_to<stop_atom, std::string>>;

/// LISTENER: one listening socket; forks a client CHANNEL per connection.
/// INTERNAL: CAF's I/O events (new_connection_msg, acceptor_closed_msg).
using listener_actor = caf::typed_actor<
  // One of its channels refused its client; the code says why (counted by
  // failure class).
  caf::reacts_to<refused_atom, caf::error>,
  // Its row for the status: a serialized admin::ActorStatus.
  caf::replies_to<status_atom>::with<std::string>,
  // Stops accepting; it ends once its channels have.
  caf::reacts_to<stop_atom, std::string>>;

/// FLOW OWNER: a stream owner that also carries datagrams on its stream's
/// flow (a UDP flow). What the PEER SESSION sends it besides the stream's
/// messages:
using flow_owner_actor = caf::typed_actor<
  // Datagrams of the flow from the peer, in arrival order.
  caf::reacts_to<flow_data_atom, int64_t, std::vector<std::string>>,
  // Datagrams of ours it dropped: too big for the path (the first count)
  // or with datagrams unavailable on the session (the second).
  caf::reacts_to<flow_drop_atom, int64_t, uint64_t, uint64_t>>;

/// PEER SESSION, its flow interface (a FLOW OWNER holds it beside
/// session_streams_actor).
using session_flows_actor = caf::typed_actor<
  // The sender, owner of stream `id`, takes the datagrams of its flow
  // (a flow_owner_actor); from anyone else it is ignored.
  caf::reacts_to<flow_attach_atom, int64_t, caf::actor>,
  // Datagrams for the flow of stream `id` (sent by its owner only); each
  // goes alone, or is dropped and reported (flow_drop_atom).
  caf::reacts_to<flow_send_atom, int64_t, std::vector<std::string>>>;

// PEER MANAGER (untyped: the NODE SUPERVISOR delegates open_atom to it, and
// its sessions' messages to it carry the PEER SESSION's untyped handle):
//   (open_atom, std::string node_id) -> caf::actor session, once ready; the
//       caller keeps it as a session_streams_actor (caf::actor_cast)
//   (signal_atom, std::string)      a Signal from the SIGNAL LINK
//   (peer_off_atom, std::string peer, uint64_t session_id, std::string text)
//   (ready_atom, uint64_t session_id) from a session: its handshake is done
//   (failed_atom, uint64_t session_id, caf::error why, std::string row)
//       from a session as it ends: why (code and text), its last status row
//   (get_atom) -> std::string serialized admin::SessionList
//   (status_atom) -> std::string;  (stop_atom, std::string reason)
//   (resolve_atom, std::string name) -> std::vector<std::string> node ids
//   (online_atom) from the SIGNAL LINK: logged in again
//   (net_change_atom, added, removed) from the NETWORK WATCH: passed on to
//       every session
// TEST RESOURCES ("echo", "discard", "source") and the DEBUG PUMP's streams
// are stream owners (stream_owner_actor) and hold a session_streams_actor.

} // namespace p2proxy
