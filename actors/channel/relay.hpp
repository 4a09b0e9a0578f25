// The CHANNEL's inside, shared by its three parts (not for other folders):
//   relay.cpp, relay_behavior.cpp  the core both kinds run: reading the
//                                  local socket while the stream has credit,
//                                  writing it with consumed accounting,
//                                  half-close, draining, the channel's end;
//   client_side.cpp                a LISTENER's client: sniff, look-up,
//                                  session, StreamOpen, refusals;
//   export_side.cpp                an export's target: the allow list, the
//                                  connect, StreamOpenResult, then the core.
// The core calls the side functions declared at the end only where the
// client side has something of its own to do before its tunnel is up; what
// differs by protocol is asked of the protocol_adapter, never tested for.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/io/broker.hpp>
#include <caf/io/connection_handle.hpp>

#include "actors/channel/channel.hpp"
#include "actors/channel/protocol/adapter.hpp"
#include "actors/common/preamble.hpp"
#include "actors/udp/rtsp_media_relay.hpp"

namespace p2proxy {

namespace channel_detail {

constexpr const char* subject = "channel";
constexpr size_t read_chunk = 64 * 1024;
/// A socket's first reads are small: CAF keeps a read buffer of the read
/// size per socket, so an idle channel costs 4 KiB instead of 64 KiB. A read
/// that fills it switches the socket to read_chunk (the new_data_msg
/// handler).
constexpr size_t first_read = 4 * 1024;
constexpr auto drain_timeout = std::chrono::seconds(30);
/// How long a local side whose peer stopped reading may go on sending
/// (dropped) before the channel closes on it. Closing a socket with unread
/// bytes resets it, so it is read to its FIN first: an echoing target gets a
/// normal end, an endless one is let go after this.
constexpr auto drain_grace = std::chrono::seconds(2);
constexpr auto open_timeout = std::chrono::seconds(30);
/// Client bytes a sniffing channel holds while its tunnel is being set up.
constexpr size_t max_pending = 16 * 1024;
/// HTTP stop: how long the stream may stay silent before the 421 is written
/// (a client that does not pipeline already has every earlier response).
constexpr auto stop_idle = std::chrono::seconds(1);

struct channel_state {
  static inline const char* name = "channel";
  bool client_side = false;
  std::string resource, peer, client_address, target;
  caf::actor supervisor;         // the NODE SUPERVISOR (untyped)
  listener_actor listener;       // client side
  session_streams_actor session; // the PEER SESSION's stream interface
  caf::actor_addr node;          // told when the channel ends (its totals)
  std::chrono::steady_clock::time_point since
    = std::chrono::steady_clock::now();
  bool was_connected = false; // the relay started at least once
  caf::io::connection_handle hdl;
  local_state local = local_state::open;
  tunnel_state tunnel = tunnel_state::not_connected;
  int64_t id = -1;
  uint64_t credit = 0;           // bytes we may still write to the stream
  size_t read_size = first_read; // the socket's read size (grows once)
  bool reading = false;          // a read token is outstanding
  bool paused = false;           // the socket used its last token: CAF took it
                                 // out of the read loop (or is about to)
  bool resume_posted = false;    // a read_more is on its way
  bool watching = false;         // tcp client before the tunnel is up: read
                                 // one chunk at a time into `pending`, so a
                                 // client that leaves is noticed at once
  bool fin_sent = false;         // our FIN on the stream
  bool fin_received = false;     // the peer's FIN
  bool local_write_lost = false; // the local peer no longer reads (closed)
  /// The target reset before the channel had its socket (tcp_connect read
  /// the reset): the end of its bytes is that reset, not a FIN.
  bool local_reset_seen = false;
  bool draining = false;          // the peer stopped reading: what the local
                                  // side still sends is read and dropped, to
                                  // its FIN (bounded by drain_grace)
  uint64_t written_total = 0;     // bytes handed to the local socket
  uint64_t transferred_total = 0; // of those, acknowledged as written
  uint64_t unconsumed = 0;        // written to the socket, not yet acked
  preamble_reader open_result;    // client side: the StreamOpenResult
  uint64_t gen = 0;
  std::optional<std::string> finish_when_drained; // closing: then end, why
  uint64_t bytes_in = 0, bytes_out = 0;           // from / to the local socket
  std::string protocol = "tcp";
  /// RTSP: the sockets and flow of media as datagrams (declared before the
  /// adapter, which uses it, so it is destroyed after it).
  std::unique_ptr<rtsp_media_relay> media;
  uint64_t media_gen = 0; // the session-timeout check's timer
  /// Everything protocol-specific (the sniffer, kept after the sniff for its
  /// replies; the rewriters).
  std::unique_ptr<protocol_adapter> adapter;
  /// When the adapter rewrites towards the local socket: each rewritten
  /// chunk written to it, with the stream bytes it came from (reported
  /// consumed once it is written).
  std::deque<std::pair<uint64_t, uint64_t>> chunks; // {written, stream}
  uint64_t chunk_written = 0; // written towards chunks.front()
  bool sniffed = false;       // the adapter's sniff said `done`
  bool preamble_sent = false;
  std::string pending;    // client bytes not yet on the stream
  std::string stop_reply; // the adapter's stop reply, for after the stream
  // Export side, before the target is connected:
  std::string held;        // stream bytes for the target, not yet consumed
  bool held_fin = false;   // the stream's FIN came with them
  bool connecting = false; // a detached worker connects the target
  bool abandoned = false;  // the stream ended meanwhile: the socket the
                           // worker may still bring is closed
};

using channel_broker = caf::io::stateful_broker<channel_state>;

// -- the core (relay.cpp)
// ------------------------------------------------------

/// The relay has started (and not yet ended).
bool tunnel_up(const channel_state& st);
/// Bytes handed to the local socket and not yet on the wire.
uint64_t pending_out(const channel_state& st);
void transition_to(channel_broker* self, tunnel_state to);
void transition_to(channel_broker* self, local_state to);
/// Every write to the local socket goes through here, so the channel knows
/// when all of it is on the wire (data_transferred_msg).
void local_write(channel_broker* self, const std::string& bytes);
/// Stream bytes for the local socket, reported consumed once written (or at
/// once when nobody can take them).
void write_local(channel_broker* self, const std::string& bytes);
/// The channel is over: close what is open and quit. Idempotent. Bytes
/// still on their way to the local socket are written first.
void finish(channel_broker* self, const std::string& why);
/// The other end failed (stream reset, session gone): the local connection
/// is reset rather than finished.
void reset_local_and_finish(channel_broker* self, const std::string& why);
/// The local connection failed: the stream is reset, not finished.
void abort_stream(channel_broker* self, const std::string& why);
/// What the adapter answered the local side itself (to_stream), written.
void write_local_reply(channel_broker* self);
/// Local bytes through the adapter onto the stream, spending credit. False
/// when the adapter stopped the connection (stop_toward_stream next).
bool relay_local_bytes(channel_broker* self, const std::string& bytes);
/// Grants the next read while the stream has credit (see relay.cpp).
void update_reading(channel_broker* self, bool safe_to_trigger = false);
/// Half-close: our FIN to the local socket once the peer's came and all
/// before it is written; the channel ends once both directions are done.
void settle_local(channel_broker* self);
/// Our FIN on the stream (once): nothing more goes on it.
void send_stream_fin(channel_broker* self);
/// The adapter stopped the local → stream direction: our FIN on the stream,
/// then the stop reply (if any) once the other end is done or silent.
void stop_toward_stream(channel_broker* self);
/// The tunnel is up: relay both ways (held client bytes first).
void start_relay(channel_broker* self);
void on_local_closed(channel_broker* self);
void on_local_eof(channel_broker* self);
/// The message handlers both kinds share (relay_behavior.cpp).
caf::behavior relay_behavior(channel_broker* self);
/// RTSP media: the flow is the stream's, and the client's session timeout
/// is checked (relay_behavior.cpp).
void start_media(channel_broker* self);
/// The channel's row in the status (admin::ActorStatus, serialized).
std::string status_of(channel_broker* self);

// -- the client side (client_side.cpp) ----------------------------------------

/// Before the tunnel is up: tell the listener `why` (for its counters),
/// answer a sniffed client in its protocol (`reply_as`), drop the client.
void refuse(channel_broker* self, const caf::error& why, open_failure reply_as);
/// A client's refusal for an error from the PEER MANAGER, the SIGNAL LINK
/// or a PEER SESSION (its code kept, CAF's request timeout as ec::timeout).
caf::error open_error(const caf::error& upstream, std::string text);
/// The client finished before naming a resource.
void on_sniff_eof(channel_broker* self);
/// Client bytes while the adapter sniffs.
void on_sniff_data(channel_broker* self, const std::string& bytes);
/// Client bytes after the sniff, before the tunnel is up: held (bounded).
void hold_client_bytes(channel_broker* self, const std::string& bytes);
/// The first stream bytes, until the StreamOpenResult is complete.
void on_open_result(channel_broker* self, std::string& bytes);
/// A client timer: true if it was the sniff or the open deadline.
bool on_client_timeout(channel_broker* self);

// -- the export side (export_side.cpp) ----------------------------------------

/// Stream bytes through a rewriting adapter towards the target; what it
/// answers itself goes back on the stream.
void rewrite_to_local(channel_broker* self, const std::string& bytes,
                      uint64_t stream_bytes);

} // namespace channel_detail

} // namespace p2proxy
