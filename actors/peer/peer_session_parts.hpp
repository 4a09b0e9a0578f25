// The PEER SESSION's steps shared by its source files; not an interface
// (only actors/peer/peer_session*.cpp and session_close.cpp include it).
//
// - peer_session.cpp: the life cycle: ICE and signaling, the QUIC
//   handshake, timers, close, status.
// - peer_session_streams.cpp: the stream table and its messages, moving
//   bytes between owners and QUIC.
// - peer_session_opening.cpp: a peer-opened stream until its owner exists:
//   reading its StreamOpen, spawning the owner once, or refusing it.
// - session_close.cpp: the linger and the close handshake.
// - session_path.cpp: ICE restarts, the path watch, the relayed session's
//   probe for a direct pair.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/message_handler.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/common/error.hpp"
#include "actors/peer/peer_session.hpp"
#include "proto/signal.pb.h"

namespace p2proxy::peer_session_parts {

// --- peer_session.cpp
quic_time now_ns(peer_session_actor* self);
void transition_to(peer_session_actor* self, session_state to);
/// The session is over: tell owners, close QUIC politely if it exists, end
/// ICE, report `why` (code and text) to the manager, quit. Idempotent.
void close_session(peer_session_actor* self, const caf::error& why,
                   bool tell_peer);
void start_linger(peer_session_actor* self);
/// The handshake finished: tell the manager, become ready.
void on_ready(peer_session_actor* self);
/// The code of an end reported as text only: QUIC's end
/// (quic_events::on_closed) and a peer's bye (Signal.bye on the wire) carry
/// no code, so this is the one place that reads such text. It goes once
/// both carry a code.
ec code_of_text_reason(const std::string& reason);

/// Sends `sig` to the peer through the signaling server, for this session.
void send_signal(peer_session_actor* self, signal::Signal sig);

// --- session_path.cpp (ICE generations, the path watch, upgrades)
/// Records a change of the selected pair (pathHistory) and shows `to`.
void record_path(peer_session_actor* self, candidate_pair to,
                 std::string reason);
/// Starts an ICE restart (a new generation) unless one is in flight.
void start_restart(peer_session_actor* self, std::string reason,
                   bool direct_only);
/// The peer's Signal.restart / its answer to ours (generation > 0).
void on_restart_signal(peer_session_actor* self, const signal::Signal& sig);
void on_restart_answer(peer_session_actor* self, const signal::Signal& sig);
/// The agent a candidate signal is for (by its generation); null: stale.
ice_agent* agent_for_signal(peer_session_actor* self,
                            const signal::Signal& sig);
/// True if ICE events tagged `tag` are the pending generation's.
bool is_pending(const peer_session_state& st, uint64_t tag);
void pending_candidate(peer_session_actor* self, const std::string& cand);
void pending_gathered(peer_session_actor* self);
void pending_pair(peer_session_actor* self, candidate_pair pair);
void pending_state(peer_session_actor* self, const std::string& state);
/// The current agent's state / selected pair changed (past the setup).
void on_current_state(peer_session_actor* self, const std::string& state);
void on_current_pair(peer_session_actor* self);
/// Notes a move of QUIC to another generation's path (a migration), while
/// a restart is in flight or QUIC has not caught up with the current one.
void watch_quic_path(peer_session_actor* self);
/// The session is up: the path watch starts (path_check_atom, periodic).
void start_path_checks(peer_session_actor* self);
void check_path(peer_session_actor* self);
void on_path_check(peer_session_actor* self);
/// Closes the pending and the retiring agent (the session ends).
void close_paths(peer_session_actor* self);
/// The addresses ICE gathers on changed (net_change_atom, IP texts):
/// react_to_network_change() says whether to restart at once (the current
/// pair's address went away), probe for a direct pair (relayed), or wait.
void on_network_change(peer_session_actor* self,
                       const std::vector<std::string>& added,
                       const std::vector<std::string>& removed);
/// The SIGNAL LINK logged in again (online_atom): a restart of ours that
/// is still unanswered was sent while it was down and starts over.
void on_link_online(peer_session_actor* self);

// --- peer_session_streams.cpp
/// Moves owners' pending bytes into QUIC, round-robin, then writes packets.
void flush(peer_session_actor* self);
/// Handles what QUIC reported; true if a stream can take more data again.
bool process_events(peer_session_actor* self);
/// Tells every stream's owner the session is down and forgets the streams.
void end_streams(peer_session_actor* self);
/// An owner ended: reset (or finish) the stream it left.
void on_owner_down(peer_session_actor* self, const caf::actor_addr& who);
/// Tops up an owner's credit when half of it is used.
void grant_credit(peer_session_actor* self, int64_t id, session_stream& s);
/// Runs flush() again after the messages already queued (safe from inside
/// process_events, where flush() must not nest).
void schedule_flush(peer_session_actor* self);
/// (stream_open_atom) ... (stream_reset_atom): what owners send.
caf::message_handler stream_handlers(peer_session_actor* self);

// --- peer_session_opening.cpp
/// The peer opened stream `id`: it waits for its StreamOpen.
void on_peer_stream(peer_session_actor* self, int64_t id);
/// Bytes (and maybe the FIN) for stream `s`, still without an owner: feeds
/// its StreamOpen reader; once complete, spawns the owner through the
/// factory with the bytes after it, or refuses the stream.
void read_preamble(peer_session_actor* self, int64_t id, session_stream& s,
                   std::string& bytes, bool fin);
/// The peer reset stream `s` before its StreamOpen was complete.
void on_opening_reset(peer_session_actor* self, int64_t id, session_stream& s);
/// (preamble_timer_atom, id) arrived.
void on_preamble_timeout(peer_session_actor* self, int64_t id);

// --- peer_session_flows.cpp
/// Datagrams from the peer, gathered per flow while QUIC's events are
/// handled, then handed over in one message per flow.
struct datagram_batch {
  std::map<int64_t, std::vector<std::string>> by_flow;
};
/// One datagram for `flow`: batched if its stream's owner attached to the
/// flow, else counted (datagrams_unknown_flow) and dropped.
void route_datagram(peer_session_actor* self, int64_t flow, std::string&& bytes,
                    datagram_batch& batch);
void deliver_datagrams(peer_session_actor* self, datagram_batch& batch);
/// (flow_attach_atom) and (flow_send_atom): what flow owners send.
caf::message_handler flow_handlers(peer_session_actor* self);

// --- session_close.cpp (the linger and the close handshake)
/// The handshake finished: the opener opens the control stream and sends
/// its SessionHello (the session's linger).
void open_control_stream(peer_session_actor* self);
/// The peer opened stream `id`: true if it is the control stream (then it
/// is not a stream for owners).
bool on_control_open(peer_session_actor* self, int64_t id);
/// Bytes for stream `id`: true if they were the control stream's.
bool on_control_data(peer_session_actor* self, int64_t id,
                     const std::string& bytes);
/// Hands QUIC what the control stream still has to send (from flush()).
void write_control(peer_session_actor* self);
/// (linger_atom, gen) arrived: propose the close if still idle.
void on_linger_timer(peer_session_actor* self, uint64_t gen);
/// A stream opened (either side): lingering ends, a handshake in progress
/// is called off.
void linger_stream_opened(peer_session_actor* self);
/// True while a local open must wait (this side accepted a close).
bool holds_opens(const peer_session_state& st);
/// Holds a local open until the handshake is resolved.
caf::typed_response_promise<int64_t> hold_open(peer_session_actor* self,
                                               const caf::actor& owner);
/// Opens a stream for a local owner (stream_open_atom, or a held open).
caf::expected<int64_t> open_owned_stream(peer_session_actor* self,
                                         const caf::actor& owner);
/// The session ends: fail the held opens (their owners open again).
void end_close_handshake(peer_session_actor* self);
/// True if this side accepted a close: the peer's CONNECTION_CLOSE is the
/// agreed end, not a loss.
bool close_agreed(const peer_session_state& st);
/// The end reported for an agreed close.
caf::error agreed_close_error(const peer_session_state& st);

} // namespace p2proxy::peer_session_parts
