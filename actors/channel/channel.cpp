#include "actors/channel/channel.hpp"

#include <cassert>
#include <deque>
#include <memory>
#include <optional>

#include <sys/socket.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"
#include "actors/channel/protocol/http_sniffer.hpp"
#include "actors/channel/protocol/rtsp_rewriter.hpp"
#include "actors/channel/protocol/socks5_sniffer.hpp"
#include "proto/admin.pb.h"
#include "proto/tunnel.pb.h"

namespace p2proxy {

const char* to_string(tunnel_state s) {
  switch (s) {
    case tunnel_state::not_connected:
      return "not-connected";
    case tunnel_state::connecting_peer:
      return "connecting-peer";
    case tunnel_state::peer_ready:
      return "peer-ready";
    case tunnel_state::remote_connecting:
      return "remote-connecting";
    case tunnel_state::connected:
      return "connected";
    case tunnel_state::half_closed:
      return "half-closed";
    case tunnel_state::closed:
      return "closed";
  }
  return "?";
}

bool tunnel_transition_allowed(tunnel_state from, tunnel_state to) {
  using t = tunnel_state;
  if (to == t::closed)
    return from != t::closed;
  switch (from) {
    case t::not_connected:
      return to == t::connecting_peer || to == t::connected;
    case t::connecting_peer:
      return to == t::peer_ready;
    case t::peer_ready:
      return to == t::remote_connecting;
    case t::remote_connecting:
      return to == t::connected;
    case t::connected:
      return to == t::half_closed;
    case t::half_closed:
      return false;
    case t::closed:
      return false;
  }
  return false;
}

namespace {

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
  caf::actor supervisor, listener, session;
  caf::actor_addr node; // told when the channel ends (its totals)
  std::chrono::steady_clock::time_point since
    = std::chrono::steady_clock::now();
  bool was_connected = false; // the relay started at least once
  caf::io::connection_handle hdl;
  bool local_open = false;
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
  bool local_eof = false;        // the local socket's FIN (client or target)
  bool local_fin_sent = false;   // our FIN on the local socket
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
  std::string result_buf;         // client side: StreamOpenResult as it comes
  uint64_t gen = 0;
  bool close_when_drained = false; // stream FIN: close once all is written
  std::optional<std::string> finish_when_drained; // ...then end, with why
  uint64_t bytes_in = 0, bytes_out = 0;           // from / to the local socket
  // Client side, protocol socks5 / http: the sniffer (kept after `done` for
  // its failure_reply()), the HTTP request rewriter, and the client bytes
  // read before the tunnel is up (they follow the StreamOpen preamble, or
  // wait for the relay).
  std::string protocol = "tcp";
  std::string default_resource;
  std::shared_ptr<socks5_sniffer> socks5;
  std::shared_ptr<http_sniffer> http;
  std::shared_ptr<http_request_rewriter> rewriter;
  std::shared_ptr<rtsp_sniffer> rtsp;
  // Export side, protocol rtsp: the rewriter between stream and target, and
  // for consumed accounting the rewritten chunks written to the target, each
  // with the stream bytes it came from (reported consumed once written).
  std::shared_ptr<rtsp_rewriter> rtsp_rw;
  // Export side, protocol http: Host set to the target on every request
  // (same consumed accounting as rtsp, through rtsp_chunks).
  std::shared_ptr<http_request_rewriter> http_rw;
  std::deque<std::pair<uint64_t, uint64_t>> rtsp_chunks; // {written, stream}
  uint64_t rtsp_written = 0; // written towards rtsp_chunks.front()
  bool sniffing = false;     // reading the client for its resource
  bool sniffed = false;      // the sniffer said `done`
  bool preamble_sent = false;
  std::string pending;    // client bytes not yet on the stream
  std::string stop_reply; // HTTP: a 421 (or 4xx) for after the target ends
};

using channel_broker = caf::io::stateful_broker<channel_state>;

/// The relay has started (and not yet ended).
bool tunnel_up(const channel_state& st) {
  return st.tunnel == tunnel_state::connected
         || st.tunnel == tunnel_state::half_closed;
}

/// Every write to the local socket goes through here, so the channel knows
/// when all of it is on the wire (data_transferred_msg).
void local_write(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  if (bytes.empty())
    return;
  self->write(st.hdl, bytes.size(), bytes.data());
  self->flush(st.hdl);
  st.written_total += bytes.size();
}

uint64_t pending_out(const channel_state& st) {
  return st.written_total > st.transferred_total
           ? st.written_total - st.transferred_total
           : 0;
}

void transition_to(channel_broker* self, tunnel_state to) {
  auto& st = self->state;
  if (!tunnel_transition_allowed(st.tunnel, to)) {
    log::error(subject, "refuses transition {} -> {}", to_string(st.tunnel),
               to_string(to));
    assert(false && "illegal channel transition");
    return;
  }
  st.tunnel = to;
}

/// The channel is over: close what is open and quit. Idempotent. Bytes
/// still on their way to the local socket are written first.
void finish(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  if (st.close_when_drained && st.local_open) {
    st.finish_when_drained = why;
    return;
  }
  if (st.tunnel != tunnel_state::closed)
    transition_to(self, tunnel_state::closed);
  if (st.local_open) {
    st.local_open = false;
    self->close(st.hdl); // graceful: unwritten bytes still go out
  }
  log::debug(subject, "for {} ({}) ends: {} ({} bytes in, {} out)", st.resource,
             st.client_address, why, st.bytes_in, st.bytes_out);
  if (auto node = caf::actor_cast<caf::actor>(st.node))
    self->send(node, channel_atom::value, st.was_connected, st.bytes_in,
               st.bytes_out);
  st.node = caf::actor_addr{};
  self->quit();
}

/// The other end failed (stream reset, session gone): the local connection
/// is reset rather than finished, so the client or target can tell a cut-off
/// transfer from a complete one.
void reset_local_and_finish(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  if (st.local_open && !st.close_when_drained)
    reset_on_close(st.hdl);
  finish(self, why);
}

/// Client side, before the tunnel is up: tell the listener (for its
/// counters), answer a sniffed client in its protocol, and drop the client.
void refuse(channel_broker* self, const std::string& why,
            open_failure what = open_failure::internal,
            const std::string& klass = {}) {
  auto& st = self->state;
  log::warn(subject, "refuses {} for '{}': {}", st.client_address, st.resource,
            why);
  if (st.listener)
    self->send(st.listener, failed_atom::value, uint64_t{0}, why, klass);
  if (st.sniffed && st.local_open) {
    std::string reply;
    if (st.socks5)
      reply = st.socks5->failure_reply(what, why);
    else if (st.http)
      reply = st.http->failure_reply(what, why);
    else if (st.rtsp)
      reply = st.rtsp->failure_reply(what, why);
    if (!reply.empty()) {
      local_write(self, reply);
    }
  }
  finish(self, why);
}

/// Client bytes for the stream: through the HTTP request rewriter when
/// there is one. False when the rewriter stopped the connection (a later
/// request for another resource, or a malformed one).
bool client_to_stream(channel_broker* self, const std::string& in,
                      std::string& out) {
  auto& st = self->state;
  if (st.rtsp_rw) {
    // Export side, rtsp: target → stream, through the rewriter.
    if (st.rtsp_rw->from_server(in, out) == rtsp_rewriter::status::failed) {
      log::warn(subject, "stops the RTSP connection of node {} to '{}': {}",
                st.peer, st.resource, st.rtsp_rw->failure_reason());
      return false;
    }
    return true;
  }
  if (!st.rewriter) {
    out += in;
    return true;
  }
  if (!st.stop_reply.empty())
    return false;
  if (st.rewriter->feed(in, out) == http_request_rewriter::status::stop) {
    st.stop_reply = st.rewriter->stop_reply();
    log::info(subject, "stops the connection of {} to '{}': {}",
              st.client_address, st.resource, st.rewriter->stop_reason());
    return false;
  }
  return true;
}

/// Reading the local socket, one chunk at a time while the stream has
/// credit: each read is an activity token (trigger(hdl, 1)). A socket that
/// used its last token is paused: CAF 0.17 queues its removal from the read
/// loop and applies it only at the end of the multiplexer's poll round, and
/// a trigger() in between is lost (the scribe still looks active, then the
/// removal lands, and the socket is never read again: the transfer stalls).
/// So a paused socket is resumed only from a read_more message posted
/// through the multiplexer, which runs after that round. Inside the socket's
/// own callbacks (new_data, passivated) a trigger() is safe: the token count
/// never reaches zero.
/// Bytes read from the local socket go on the stream (through the
/// connection's rewriter, if any), spending credit. False when the rewriter
/// stopped the connection.
bool relay_local_bytes(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  st.bytes_in += bytes.size();
  std::string out;
  bool ok = client_to_stream(self, bytes, out);
  if (!out.empty()) {
    st.credit -= std::min<uint64_t>(st.credit, out.size());
    self->send(st.session, stream_write_atom::value, st.id, std::move(out),
               false);
  }
  return ok;
}

void update_reading(channel_broker* self, bool safe_to_trigger = false) {
  auto& st = self->state;
  // (half_closed with our FIN not sent: the peer finished, the local side
  // still sends.)
  if (!st.local_open || st.local_eof || !tunnel_up(st) || st.reading
      || (!st.draining && (st.fin_sent || st.credit < read_chunk)))
    return;
  if (st.paused && !safe_to_trigger) {
    if (!st.resume_posted) {
      st.resume_posted = true;
      self->backend().post(
        [me = caf::actor{self}] { caf::anon_send(me, read_more_atom::value); });
    }
    return;
  }
  st.paused = false;
  self->trigger(st.hdl, 1);
  st.reading = true;
}

void write_local(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  if (bytes.empty())
    return;
  if (!st.local_open) {
    // Nobody to give them to: consume, so the peer is not stalled.
    self->send(st.session, stream_consumed_atom::value, st.id,
               static_cast<uint64_t>(bytes.size()));
    return;
  }
  local_write(self, bytes);
  st.unconsumed += bytes.size();
  st.bytes_out += bytes.size();
}

void send_client_fin(channel_broker* self);
void finish(channel_broker* self, const std::string& why);

/// Half-close, both sides alike: once the peer's FIN has come and every
/// byte before it is written, the local socket gets our FIN (shutdown of
/// its write side; reading goes on). Once the local side has sent its FIN
/// too, both directions are done and the channel ends.
void settle_local(channel_broker* self) {
  auto& st = self->state;
  if (!st.local_open)
    return;
  if (st.fin_received && !st.local_fin_sent && st.stop_reply.empty()
      && !st.close_when_drained && pending_out(st) == 0) {
    shutdown_write(st.hdl);
    st.local_fin_sent = true;
  }
  if (st.local_fin_sent && st.local_eof)
    finish(self, "both sides closed");
}

/// The local connection failed (reset, or a write to a socket its peer
/// closed): the stream is reset, not finished, so the other end can tell a
/// cut-off transfer from a complete one.
void abort_stream(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  if (st.session && st.id >= 0 && st.tunnel != tunnel_state::closed)
    self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
  finish(self, why);
}

/// Export side, a rewriter's output for the target: written, with the
/// `stream_bytes` it came from reported consumed once it is (data_transferred);
/// bytes the rewriter holds (bounded) or answers itself, or that nobody can
/// take, are consumed at once.
void rewritten_to_target(channel_broker* self, const std::string& to_server,
                         uint64_t stream_bytes) {
  auto& st = self->state;
  if (!to_server.empty() && st.local_open) {
    local_write(self, to_server);
    st.bytes_out += to_server.size();
    if (stream_bytes > 0)
      st.rtsp_chunks.emplace_back(to_server.size(), stream_bytes);
  } else if (stream_bytes > 0) {
    self->send(st.session, stream_consumed_atom::value, st.id, stream_bytes);
  }
}

/// Export side, rtsp: stream bytes (client → server) through the rewriter.
/// What the server should get goes to the target; what the proxy answers
/// itself (461, an error) goes back on the stream. `stream_bytes` of the
/// input are reported consumed once their rewritten output is written.
void rtsp_from_stream(channel_broker* self, const std::string& bytes,
                      uint64_t stream_bytes) {
  auto& st = self->state;
  std::string to_server, to_client;
  auto status = st.rtsp_rw->from_client(bytes, to_server, to_client);
  rewritten_to_target(self, to_server, stream_bytes);
  bool failed = status == rtsp_rewriter::status::failed;
  if (!to_client.empty() && !st.fin_sent) {
    st.credit -= std::min<uint64_t>(st.credit, to_client.size());
    self->send(st.session, stream_write_atom::value, st.id,
               std::move(to_client), failed);
    if (failed)
      st.fin_sent = true;
  }
  if (failed) {
    log::warn(subject, "stops the RTSP connection of node {} to '{}': {}",
              st.peer, st.resource, st.rtsp_rw->failure_reason());
    if (!st.fin_sent) {
      st.fin_sent = true;
      self->send(st.session, stream_write_atom::value, st.id, std::string{},
                 true);
    }
    finish(self, "RTSP: " + st.rtsp_rw->failure_reason());
  }
}

/// Export side, http: stream bytes (client → server) with each request's
/// Host set to the target. A request the rewriter cannot frame is answered
/// on the stream (400) and the connection ends.
void http_from_stream(channel_broker* self, const std::string& bytes,
                      uint64_t stream_bytes) {
  auto& st = self->state;
  std::string to_server;
  auto status = st.http_rw->feed(bytes, to_server);
  rewritten_to_target(self, to_server, stream_bytes);
  if (status == http_request_rewriter::status::stop) {
    log::warn(subject, "stops the HTTP connection of node {} to '{}': {}",
              st.peer, st.resource, st.http_rw->stop_reason());
    if (!st.fin_sent) {
      st.fin_sent = true;
      self->send(st.session, stream_write_atom::value, st.id,
                 st.http_rw->stop_reply(), true);
    }
    finish(self, "HTTP: " + st.http_rw->stop_reason());
  }
}

/// Export side: stream bytes towards the target, through the export's
/// rewriter when it has one.
void export_from_stream(channel_broker* self, const std::string& bytes,
                        uint64_t stream_bytes) {
  if (self->state.rtsp_rw)
    rtsp_from_stream(self, bytes, stream_bytes);
  else
    http_from_stream(self, bytes, stream_bytes);
}

void on_local_closed(channel_broker* self);
void settle_local(channel_broker* self);
void abort_stream(channel_broker* self, const std::string& why);

void start_relay(channel_broker* self) {
  auto& st = self->state;
  ++st.gen; // the open deadline is met
  transition_to(self, tunnel_state::connected);
  st.was_connected = true;
  bool watched = st.watching;
  st.watching = false;
  if (!st.local_open || st.local_eof) {
    // Nothing more to read (see below).
  } else if (watched) {
    // Already in token mode: a read is outstanding, or the socket is
    // paused and update_reading() below resumes it the safe way.
    self->ack_writes(st.hdl, true);
  } else {
    if (!st.sniffed)
      self->configure_read(st.hdl,
                           caf::io::receive_policy::at_most(st.read_size));
    self->ack_writes(st.hdl, true);
    // Switch the socket to token mode: one more read, then update_reading()
    // grants the next while there is credit.
    self->trigger(st.hdl, 1);
    st.reading = true;
  }
  if (!st.pending.empty()) {
    // Client bytes that came while the tunnel was being set up.
    auto pending = std::move(st.pending);
    st.pending.clear();
    if (!relay_local_bytes(self, pending)) {
      send_client_fin(self);
      return;
    }
  }
  if (!st.local_open) {
    abort_stream(self, "the local connection failed before the tunnel was up");
    return;
  }
  if (st.local_eof) {
    // The client sent its bytes and finished before the tunnel was up: they
    // went on the stream above; now our FIN, and its answer still comes.
    if (!st.fin_sent) {
      st.fin_sent = true;
      self->send(st.session, stream_write_atom::value, st.id, std::string{},
                 true);
    }
    transition_to(self, tunnel_state::half_closed);
    settle_local(self);
    return;
  }
  update_reading(self);
}

/// HTTP stop: no more client bytes go down the stream; the stream gets our
/// FIN so the target answers what it has and closes; stop_reply is written
/// once its side has ended.
void send_client_fin(channel_broker* self) {
  auto& st = self->state;
  if (st.fin_sent)
    return;
  st.fin_sent = true; // later client bytes are dropped
  self->send(st.session, stream_write_atom::value, st.id, std::string{}, true);
  if (st.fin_received) {
    // (not reached: the client side closes on the peer's FIN)
    return;
  }
  if (st.tunnel == tunnel_state::connected)
    transition_to(self, tunnel_state::half_closed);
  self->delayed_send(self, st.stop_reply.empty() ? drain_timeout : stop_idle,
                     timeout_atom::value, ++st.gen);
}

/// The local connection failed: reset or error (an orderly FIN comes as
/// local_eof_atom instead, see on_local_eof).
void on_local_closed(channel_broker* self) {
  auto& st = self->state;
  log::debug(subject,
             "for {} ({}): the local connection failed ({} in, {} "
             "out, {} unconsumed)",
             st.resource, st.client_address, st.bytes_in, st.bytes_out,
             st.unconsumed);
  st.local_open = false;
  if (tunnel_up(st) && st.fin_sent) {
    // Our FIN already went: everything the local side sent is on its way
    // and must not be reset away. It stopped reading (a client that closed
    // while the answer still came): the channel ends; the session consumes
    // what the peer still sends.
    finish(self, "the local side closed while the peer was still sending");
    return;
  }
  if (tunnel_up(st)) {
    abort_stream(self, "the local connection was reset");
    return;
  }
  // Before the tunnel is up: abandon the open. The exporting node resets a
  // target connection under way; nothing reaches the target.
  abort_stream(self, "the local side closed before the tunnel was up");
}

/// The local peer sent FIN: our FIN on the stream (after the bytes before
/// it); the other direction goes on until the stream's FIN (settle_local).
void on_local_eof(channel_broker* self) {
  auto& st = self->state;
  if (!st.local_open || st.local_eof)
    return;
  if (st.local_reset_seen) {
    on_local_closed(self);
    return;
  }
  st.local_eof = true;
  st.reading = false;
  log::debug(subject, "for {} ({}): the local side finished sending ({} in)",
             st.resource, st.client_address, st.bytes_in);
  if (st.client_side && st.sniffing) {
    st.sniffing = false;
    if (st.listener)
      self->send(st.listener, failed_atom::value, uint64_t{0},
                 std::string{"the client finished before naming a resource"},
                 std::string{"sniff_eof"});
    finish(self, "the client finished before naming a resource");
    return;
  }
  if (st.tunnel == tunnel_state::closed)
    return;
  if (!tunnel_up(st)) {
    if (st.sniffed || !st.pending.empty())
      return; // its bytes, then our FIN, once the tunnel is up (start_relay)
    // A tcp client that left without a byte: abandon the open.
    abort_stream(self, "the local side closed before the tunnel was up");
    return;
  }
  if (!st.fin_sent) {
    st.fin_sent = true;
    self->send(st.session, stream_write_atom::value, st.id, std::string{},
               true);
  }
  if (st.tunnel == tunnel_state::connected)
    transition_to(self, tunnel_state::half_closed);
  if (st.local_write_lost) {
    // Nothing can be written to it any more: done. (The session asks the
    // peer to stop sending: our FIN went first.)
    finish(self, "the local side finished and no longer reads");
    return;
  }
  settle_local(self);
}

/// Client side: the first bytes on the stream are the StreamOpenResult.
void on_open_result(channel_broker* self, std::string& bytes) {
  auto& st = self->state;
  st.result_buf += bytes;
  bytes.clear();
  if (st.result_buf.size() < 4)
    return;
  auto b = reinterpret_cast<const unsigned char*>(st.result_buf.data());
  uint64_t n = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16)
               | (uint64_t{b[2]} << 8) | uint64_t{b[3]};
  if (n > 16 * 1024) {
    self->send(st.session, stream_reset_atom::value, st.id, uint64_t{1});
    refuse(self, "the peer answered with a malformed StreamOpenResult",
           open_failure::internal);
    return;
  }
  if (st.result_buf.size() < 4 + n)
    return;
  tunnel::StreamOpenResult r;
  if (!r.ParseFromString(st.result_buf.substr(4, n))) {
    self->send(st.session, stream_reset_atom::value, st.id, uint64_t{1});
    refuse(self, "the peer answered with a malformed StreamOpenResult",
           open_failure::internal);
    return;
  }
  // Preamble bytes are consumed at once: they are bounded.
  self->send(st.session, stream_consumed_atom::value, st.id,
             static_cast<uint64_t>(4 + n));
  if (r.code() != tunnel::StreamOpenResult::OK) {
    refuse(self,
           fmt::format("{}: {}", tunnel::StreamOpenResult::Code_Name(r.code()),
                       r.text()),
           open_failure_from_code(static_cast<int>(r.code())));
    return;
  }
  if (st.socks5 && st.local_open) {
    auto ok = socks5_reply(socks5_reply_code::succeeded);
    local_write(self, ok);
  }
  bytes = st.result_buf.substr(4 + n);
  st.result_buf.clear();
  log::info(subject, "connects {} to '{}' on node {}", st.client_address,
            st.resource, st.peer);
  start_relay(self);
}

void on_sniff_data(channel_broker* self, const std::string& bytes);

caf::behavior relay_behavior(channel_broker* self) {
  return {
    // --- the local socket
    // -----------------------------------------------------
    [=](const caf::io::new_data_msg& msg) {
      auto& st = self->state;
      if (msg.buf.size() >= st.read_size && st.read_size < read_chunk) {
        // Data flows: full-size reads from now on.
        st.read_size = read_chunk;
        self->configure_read(st.hdl,
                             caf::io::receive_policy::at_most(read_chunk));
      }
      if (st.client_side && st.sniffing) {
        on_sniff_data(self, std::string(msg.buf.begin(), msg.buf.end()));
        return;
      }
      if (st.client_side && !tunnel_up(st)) {
        // Sniffed, the tunnel is being set up: hold the bytes (bounded).
        if (st.tunnel == tunnel_state::closed)
          return;
        st.pending.append(msg.buf.begin(), msg.buf.end());
        if (st.watching) {
          // tcp: its token is used; read on while the hold has room (a
          // trigger inside the socket's own callback is safe), else the
          // socket pauses until the relay resumes it.
          st.reading = false;
          if (st.pending.size() < max_pending) {
            self->trigger(st.hdl, 1);
            st.reading = true;
          } else {
            st.paused = true;
          }
          return;
        }
        if (st.pending.size() > max_pending)
          refuse(self,
                 fmt::format("the client sent more than {} bytes before "
                             "the tunnel was up",
                             max_pending),
                 open_failure::overloaded, "client_overflow");
        return;
      }
      st.reading = false; // its token is used
      if (st.fin_sent) {
        if (st.draining)
          update_reading(self, true); // dropped; read on to the FIN
        return;
      }
      std::string bytes(msg.buf.begin(), msg.buf.end());
      if (!relay_local_bytes(self, bytes)) {
        send_client_fin(self);
        return;
      }
      update_reading(self, true);
    },
    [=](const caf::io::data_transferred_msg& msg) {
      auto& st = self->state;
      if (st.rtsp_rw || st.http_rw) {
        // Consume the stream bytes of every rewritten chunk now written.
        st.rtsp_written += msg.written;
        uint64_t n = 0;
        while (!st.rtsp_chunks.empty()
               && st.rtsp_chunks.front().first <= st.rtsp_written) {
          st.rtsp_written -= st.rtsp_chunks.front().first;
          n += st.rtsp_chunks.front().second;
          st.rtsp_chunks.pop_front();
        }
        if (st.rtsp_chunks.empty())
          st.rtsp_written = 0;
        if (n > 0 && st.session)
          self->send(st.session, stream_consumed_atom::value, st.id, n);
      } else {
        auto n = std::min<uint64_t>(msg.written, st.unconsumed);
        st.unconsumed -= n;
        if (n > 0 && st.session)
          self->send(st.session, stream_consumed_atom::value, st.id, n);
      }
      st.transferred_total += msg.written;
      if (st.close_when_drained && msg.remaining == 0 && st.local_open) {
        st.local_open = false;
        self->close(st.hdl);
        if (st.finish_when_drained)
          finish(self, *st.finish_when_drained);
        return;
      }
      settle_local(self);
    },
    [=](const caf::io::connection_closed_msg&) { on_local_closed(self); },
    [=](local_eof_atom, caf::io::connection_handle) { on_local_eof(self); },
    [=](local_lost_atom, caf::io::connection_handle) {
      // The local peer closed its socket: what we write is dropped (the
      // scribe reports it written, so the stream is consumed). What it sent
      // before is still read, to its FIN (on_local_eof ends the channel).
      auto& st = self->state;
      if (!st.local_open || st.local_write_lost)
        return;
      st.local_write_lost = true;
      log::debug(subject, "for {} ({}): the local side no longer reads",
                 st.resource, st.client_address);
      if (st.local_eof)
        finish(self, "the local side finished and no longer reads");
    },
    [=](const caf::io::connection_passivated_msg&) {
      // The last read token is used: read on now if there is credit (safe
      // here), else the socket is paused until credit comes.
      auto& st = self->state;
      st.reading = false;
      st.paused = true;
      update_reading(self, true);
    },
    [=](read_more_atom) {
      // Posted after the poll round that took the socket out of the loop.
      self->state.resume_posted = false;
      update_reading(self, true);
    },
    // --- the stream
    // -----------------------------------------------------------
    [=](stream_credit_atom, int64_t, uint64_t n) {
      self->state.credit += n;
      update_reading(self);
    },
    [=](stream_data_atom, int64_t, std::string& bytes, bool fin) {
      auto& st = self->state;
      if (st.client_side && st.tunnel == tunnel_state::remote_connecting) {
        on_open_result(self, bytes);
        if (!tunnel_up(st))
          return;
      }
      if (st.rtsp_rw || st.http_rw) {
        if (!bytes.empty())
          export_from_stream(self, bytes, bytes.size());
        if (st.tunnel == tunnel_state::closed)
          return;
      } else {
        write_local(self, bytes);
      }
      if (st.client_side && !st.stop_reply.empty() && !fin)
        // HTTP stop: the target is still answering; wait for silence again.
        self->delayed_send(self, stop_idle, timeout_atom::value, ++st.gen);
      if (fin && !st.fin_received) {
        st.fin_received = true;
        bool stopped = false;
        if (st.client_side && !st.stop_reply.empty() && st.local_open) {
          // HTTP stop: the target answered what it had; now the 421.
          local_write(self, st.stop_reply);
          st.stop_reply.clear();
          st.close_when_drained = true; // close once the 421 is out
          stopped = true;
        }
        if (!st.local_open || stopped || st.close_when_drained) {
          finish(self, "both sides closed");
          return;
        }
        // The peer is done sending: the local socket gets our FIN once
        // everything before it is written; it may still send (half-close).
        if (st.tunnel == tunnel_state::connected)
          transition_to(self, tunnel_state::half_closed);
        settle_local(self);
      }
    },
    [=](stream_reset_atom, int64_t, uint64_t code) {
      auto& st = self->state;
      auto why = fmt::format("the peer reset the stream (code {})", code);
      if (st.client_side && !tunnel_up(st)
          && st.tunnel != tunnel_state::closed) {
        // (A reset can overtake the StreamOpenResult: a target that reset
        // at once. A tcp client has no protocol to be told in: it gets the
        // reset, not a clean end.)
        if (!st.sniffed && st.local_open)
          reset_on_close(st.hdl);
        refuse(self, why, open_failure::peer_unreachable);
      } else if (st.fin_received && st.local_open) {
        // The peer's bytes are complete; it only no longer wants ours (its
        // local side closed: STOP_SENDING). The local side still gets all
        // of them and our FIN; what it sends meanwhile is dropped until its
        // own FIN, as from a TCP peer that closed.
        st.fin_sent = true; // nothing more goes on the stream
        st.draining = true;
        log::debug(subject,
                   "for {} ({}): the peer no longer reads; the "
                   "local side gets our FIN",
                   st.resource, st.client_address);
        settle_local(self);
        if (st.local_open) {
          update_reading(self);
          self->delayed_send(self, drain_grace, timeout_atom::value, ++st.gen);
        }
      } else {
        reset_local_and_finish(self, why);
      }
    },
    [=](stream_closed_atom, int64_t) {
      if (!self->state.draining) // (then it ends at the local FIN)
        finish(self, "stream closed");
    },
    [=](session_down_atom, const std::string& why) {
      auto& st = self->state;
      if (st.client_side && !tunnel_up(st) && st.tunnel != tunnel_state::closed)
        refuse(self, "session down: " + why, open_failure::peer_unreachable);
      else
        reset_local_and_finish(self, "session down: " + why);
    },
    [=](timeout_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen)
        return;
      if (st.client_side && st.sniffing) {
        st.sniffing = false;
        std::string reply = st.socks5 ? st.socks5->timeout_reply()
                            : st.http ? st.http->timeout_reply()
                            : st.rtsp ? st.rtsp->timeout_reply()
                                      : std::string{};
        if (!reply.empty() && st.local_open) {
          local_write(self, reply);
        }
        auto why = fmt::format("timeout: the client did not name a resource "
                               "within {} s",
                               sniff_timeout.count());
        log::warn(subject, "refuses {}: {}", st.client_address, why);
        if (st.listener)
          self->send(st.listener, failed_atom::value, uint64_t{0}, why,
                     std::string{"sniff_timeout"});
        finish(self, why);
        return;
      }
      if (st.draining) {
        finish(self, fmt::format("the local side went on sending {} s after "
                                 "the peer stopped reading",
                                 drain_grace.count()));
        return;
      }
      if (st.tunnel == tunnel_state::half_closed
          || st.tunnel == tunnel_state::connected) {
        self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
        if (st.client_side && !st.stop_reply.empty() && st.local_open) {
          // HTTP stop: the target has been silent; the client gets its 421
          // (a CAF 0.17 export cannot half-close the target's socket, so a
          // keep-alive target would otherwise hold the connection).
          local_write(self, st.stop_reply);
          st.stop_reply.clear();
          if (st.unconsumed > 0)
            st.close_when_drained = true;
          finish(self, "stopped: a request for another resource");
          return;
        }
        finish(self, "the peer did not finish within 30 s after the local "
                     "side closed");
      } else if (st.tunnel != tunnel_state::closed) {
        refuse(self, "timeout: the tunnel was not ready within 30 s",
               open_failure::peer_unreachable);
      }
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus as;
      as.set_name(channel_state::name);
      as.set_state(to_string(st.tunnel));
      auto& f = *as.mutable_fields();
      f["resource"] = st.resource;
      f["client"] = st.client_address;
      f["bytes_in"] = std::to_string(st.bytes_in);
      f["bytes_out"] = std::to_string(st.bytes_out);
      f["side"] = st.client_side ? "client" : "export";
      f["peer"] = st.peer;
      f["stream"] = std::to_string(st.id);
      f["target"] = st.target;
      f["age_ms"]
        = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - st.since)
                           .count());
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& why) { finish(self, why); },
  };
}

/// Client side: find the exporting node, open the session and a stream, and
/// send the StreamOpen preamble (followed by the sniffed client bytes).
void open_tunnel(channel_broker* self) {
  auto& st = self->state;
  transition_to(self, tunnel_state::connecting_peer);
  self->delayed_send(self, open_timeout, timeout_atom::value, ++st.gen);
  auto open_stream = [=](caf::actor session) {
    auto& st = self->state;
    if (st.tunnel == tunnel_state::closed)
      return;
    st.session = session;
    self->monitor(session);
    transition_to(self, tunnel_state::peer_ready);
    self
      ->request(session, std::chrono::seconds(10), stream_open_atom::value,
                caf::actor{self})
      .then(
        [=](int64_t id) {
          auto& st = self->state;
          if (st.tunnel == tunnel_state::closed)
            return;
          st.id = id;
          tunnel::StreamOpen open;
          open.set_resource(st.resource);
          open.set_protocol(st.protocol);
          open.set_client_address(st.client_address);
          open.set_version(1);
          auto preamble = encode_frame(open.SerializeAsString());
          st.preamble_sent = true;
          if (st.sniffed && !st.pending.empty()) {
            // The sniffed bytes go right after the preamble.
            std::string out;
            bool ok = client_to_stream(self, st.pending, out);
            st.bytes_in += st.pending.size();
            st.pending.clear();
            preamble += out;
            if (!ok) {
              // The rewriter refused the very first bytes (cannot happen
              // after a `done` sniff, which validated the head).
              self->send(session, stream_reset_atom::value, id, uint64_t{1});
              refuse(self, st.rewriter->stop_reason(),
                     open_failure::bad_request);
              return;
            }
          }
          st.credit -= std::min<uint64_t>(st.credit, preamble.size());
          self->send(session, stream_write_atom::value, id, preamble, false);
          transition_to(self, tunnel_state::remote_connecting);
        },
        [=](caf::error& err) {
          refuse(self, error_text(err), open_failure::peer_unreachable);
        });
  };
  auto open_session = [=](const std::string& node) {
    auto& st = self->state;
    if (st.tunnel == tunnel_state::closed)
      return;
    st.peer = node;
    self->request(st.supervisor, open_timeout, open_atom::value, node)
      .then([=](caf::actor session) { open_stream(session); },
            [=](caf::error& err) {
              refuse(
                self,
                fmt::format("cannot reach node {}: {}", node, error_text(err)),
                open_failure::peer_unreachable);
            });
  };
  if (!st.peer.empty()) {
    open_session(st.peer);
  } else {
    self
      ->request(st.supervisor, std::chrono::seconds(10), lookup_atom::value,
                st.resource)
      .then(
        [=](const std::vector<std::string>& ids) {
          if (self->state.tunnel == tunnel_state::closed)
            return;
          if (ids.empty()) {
            refuse(
              self,
              fmt::format("no online node exports '{}'", self->state.resource),
              open_failure::unknown_resource);
            return;
          }
          open_session(ids.front());
        },
        [=](caf::error& err) {
          refuse(self, "look-up failed: " + error_text(err),
                 open_failure::peer_unreachable);
        });
  }
}

/// Client side, socks5 / http: the client's first bytes, for the sniffer.
void on_sniff_data(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  sniff_result r = st.socks5 ? st.socks5->feed(bytes)
                   : st.http ? st.http->feed(bytes)
                             : st.rtsp->feed(bytes);
  if (!r.reply.empty() && st.local_open) {
    local_write(self, r.reply);
  }
  switch (r.state) {
    case sniff_state::need_more:
      return;
    case sniff_state::failed: {
      st.sniffing = false;
      auto klass = std::string{"sniff_"} + to_string(r.error);
      log::warn(subject, "refuses {} ({}): {}", st.client_address, st.protocol,
                r.reason);
      if (st.listener)
        self->send(st.listener, failed_atom::value, uint64_t{0}, r.reason,
                   klass);
      finish(self, r.reason);
      return;
    }
    case sniff_state::done:
      break;
  }
  st.sniffing = false;
  st.sniffed = true;
  st.resource = r.resource;
  st.pending = std::move(r.forward);
  if (st.http) {
    http_rewrite_config rc;
    rc.resource = st.resource;
    rc.default_resource = st.default_resource;
    st.rewriter = std::make_shared<http_request_rewriter>(std::move(rc));
  }
  log::debug(subject, "{} ({}) asks for '{}'", st.client_address, st.protocol,
             st.resource);
  open_tunnel(self);
}

caf::behavior client_channel(channel_broker* self,
                             caf::io::connection_handle hdl,
                             client_channel_args args) {
  auto& st = self->state;
  st.client_side = true;
  st.hdl = hdl;
  st.local_open = true;
  self->ack_writes(hdl, true); // pending_out() counts every local write
  st.resource = args.resource;
  st.default_resource = args.resource;
  st.protocol = args.protocol;
  st.peer = args.peer;
  st.client_address = args.client_address;
  st.supervisor = args.supervisor;
  st.listener = args.listener;
  st.node = st.supervisor.address();
  self->send(st.supervisor, channel_atom::value);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (st.session && dm.source == st.session.address()) {
      if (!tunnel_up(st) && st.tunnel != tunnel_state::closed)
        refuse(self, "the session ended", open_failure::peer_unreachable);
      else
        finish(self, "the session ended");
    }
  });
  if (st.protocol == "socks5" || st.protocol == "http"
      || st.protocol == "rtsp") {
    // The client names its resource: read it first (the sniffer), with a
    // deadline. Later bytes are held until the tunnel is up.
    if (st.protocol == "socks5")
      st.socks5 = std::make_shared<socks5_sniffer>();
    else if (st.protocol == "http")
      st.http = std::make_shared<http_sniffer>(st.default_resource);
    else
      st.rtsp = std::make_shared<rtsp_sniffer>(st.default_resource);
    st.sniffing = true;
    self->configure_read(st.hdl,
                         caf::io::receive_policy::at_most(st.read_size));
    self->delayed_send(self, sniff_timeout, timeout_atom::value, ++st.gen);
  } else {
    // Watch the client while the tunnel is set up: a client that leaves is
    // noticed at once (the open is abandoned, nothing reaches the target).
    // Its early bytes are held, one read at a time up to max_pending; the
    // rest waits in the socket's buffer.
    st.watching = true;
    self->configure_read(st.hdl,
                         caf::io::receive_policy::at_most(st.read_size));
    self->trigger(st.hdl, 1);
    st.reading = true;
    open_tunnel(self);
  }
  return relay_behavior(self);
}

caf::behavior export_channel(channel_broker* self, int fd,
                             export_channel_args args) {
  auto& st = self->state;
  st.hdl = add_half_close_scribe(self, fd);
  self->ack_writes(st.hdl, true); // pending_out() counts every local write
  st.local_open = true;
  st.session = args.session;
  st.id = args.stream_id;
  st.credit = args.credit;
  st.peer = args.peer;
  st.resource = args.resource;
  st.client_address = args.peer;
  st.target = args.target;
  st.protocol = args.protocol;
  st.node = args.node;
  if (auto node = caf::actor_cast<caf::actor>(st.node))
    self->send(node, channel_atom::value);
  if (st.protocol == "rtsp") {
    rtsp_url_map map;
    // client_authority: learned from the client's first request.
    map.server_authority = st.target;
    map.resource = st.resource;
    map.strip_resource = true;
    st.rtsp_rw = std::make_shared<rtsp_rewriter>(std::move(map));
  } else if (st.protocol == "http") {
    // The client CHANNEL routed and stripped /r/<name>; here only Host,
    // which only this node can know, becomes the target's.
    http_rewrite_config rc;
    rc.target_authority = st.target;
    st.http_rw = std::make_shared<http_request_rewriter>(std::move(rc));
  }
  self->monitor(st.session);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.session.address())
      finish(self, "the session ended");
  });
  tunnel::StreamOpenResult ok;
  ok.set_code(tunnel::StreamOpenResult::OK);
  auto reply = encode_frame(ok.SerializeAsString());
  st.credit -= std::min<uint64_t>(st.credit, reply.size());
  self->send(st.session, stream_write_atom::value, st.id, reply, false);
  start_relay(self);
  if (st.rtsp_rw || st.http_rw) {
    if (!args.first_bytes.empty())
      export_from_stream(self, args.first_bytes, args.first_unconsumed);
    if (st.tunnel == tunnel_state::closed)
      return {};
  } else if (!args.first_bytes.empty()) {
    local_write(self, args.first_bytes);
    st.unconsumed += args.first_unconsumed;
    st.bytes_out += args.first_bytes.size();
  }
  log::info(subject, "connects node {} to '{}' at {}", st.peer, st.resource,
            st.target);
  // The client may have finished sending before the target was connected:
  // the target gets our FIN once those bytes are written, and its answer
  // still goes back (half-close).
  st.fin_received = args.peer_fin;
  st.local_reset_seen = args.target_reset;
  if (st.fin_received) {
    transition_to(self, tunnel_state::half_closed);
    settle_local(self);
  }
  return relay_behavior(self);
}

} // namespace

caf::actor fork_client_channel(caf::io::broker* listener,
                               caf::io::connection_handle hdl,
                               client_channel_args args) {
  return listener->fork(client_channel, hdl, std::move(args));
}

caf::actor spawn_export_channel(caf::actor_system& sys, int fd,
                                export_channel_args args) {
  return sys.middleman().spawn_broker(export_channel, fd, std::move(args));
}

} // namespace p2proxy
