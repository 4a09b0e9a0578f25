// The CHANNEL's relay core: what both kinds do with the local socket and the
// stream once they have both (credit, writes, half-close, the end).
#include "actors/channel/relay.hpp"

#include <cassert>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"

namespace p2proxy::channel_detail {

bool tunnel_up(const channel_state& st) {
  return st.tunnel == tunnel_state::connected
         || st.tunnel == tunnel_state::half_closed;
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

void transition_to(channel_broker* self, local_state to) {
  auto& st = self->state;
  if (!local_transition_allowed(st.local, to)) {
    log::error(subject, "refuses local transition {} -> {}",
               to_string(st.local), to_string(to));
    assert(false && "illegal channel transition (local side)");
    return;
  }
  st.local = to;
}

void local_write(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  if (bytes.empty())
    return;
  self->write(st.hdl, bytes.size(), bytes.data());
  self->flush(st.hdl);
  st.written_total += bytes.size();
}

void write_local(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  if (bytes.empty())
    return;
  if (st.local == local_state::closed) {
    // Nobody to give them to: consume, so the peer is not stalled.
    self->send(st.session, stream_consumed_atom::value, st.id,
               static_cast<uint64_t>(bytes.size()));
    return;
  }
  local_write(self, bytes);
  st.unconsumed += bytes.size();
  st.bytes_out += bytes.size();
}

void finish(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  if (st.local == local_state::closing) {
    st.finish_when_drained = why; // (the data_transferred_msg handler)
    return;
  }
  if (st.tunnel != tunnel_state::closed)
    transition_to(self, tunnel_state::closed);
  if (st.local != local_state::closed) {
    transition_to(self, local_state::closed);
    self->close(st.hdl); // graceful: unwritten bytes still go out
  }
  if (st.media)
    st.media->close_all();
  log::debug(subject, "for {} ({}) ends: {} ({} bytes in, {} out)", st.resource,
             st.client_address, why, st.bytes_in, st.bytes_out);
  if (auto node = caf::actor_cast<caf::actor>(st.node))
    self->send(node, channel_end_atom::value, st.was_connected, st.bytes_in,
               st.bytes_out);
  st.node = caf::actor_addr{};
  self->quit();
}

void reset_local_and_finish(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  // (A closing socket keeps its proxy reply: it is closed once that is out.)
  if (st.local != local_state::closed && st.local != local_state::closing)
    reset_on_close(st.hdl);
  finish(self, why);
}

void abort_stream(channel_broker* self, const std::string& why) {
  auto& st = self->state;
  if (st.session && st.id >= 0 && st.tunnel != tunnel_state::closed)
    self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
  finish(self, why);
}

void write_local_reply(channel_broker* self) {
  auto& st = self->state;
  auto reply = st.adapter->take_local_reply();
  if (!reply.empty() && st.local != local_state::closed
      && st.local != local_state::closing) {
    // The adapter answered the local side itself (no stream bytes).
    local_write(self, reply);
    if (st.adapter->rewrites_to_local())
      st.chunks.emplace_back(reply.size(), 0);
  }
}

bool relay_local_bytes(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  st.bytes_in += bytes.size();
  std::string out;
  auto verdict = st.adapter->to_stream(bytes, out);
  if (!out.empty()) {
    st.credit -= std::min<uint64_t>(st.credit, out.size());
    self->send(st.session, stream_write_atom::value, st.id, std::move(out),
               false);
  }
  write_local_reply(self);
  if (st.media)
    st.media->flush();
  if (verdict == protocol_adapter::verdict::ok)
    return true;
  st.stop_reply = st.adapter->stop_reply();
  if (st.client_side)
    log::info(subject, "stops the connection of {} to '{}': {}",
              st.client_address, st.resource, st.adapter->stop_reason());
  else
    log::warn(subject, "stops the {} connection of node {} to '{}': {}",
              st.adapter->name(), st.peer, st.resource,
              st.adapter->stop_reason());
  return false;
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
void update_reading(channel_broker* self, bool safe_to_trigger) {
  auto& st = self->state;
  // (half_closed with our FIN not sent: the peer finished, the local side
  // still sends.)
  if (st.local == local_state::closed || st.local == local_state::eof
      || !tunnel_up(st) || st.reading
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

void settle_local(channel_broker* self) {
  auto& st = self->state;
  if (st.local != local_state::open && st.local != local_state::eof)
    return; // (fin: waits for the local FIN; closing: for its reply)
  if (!st.fin_received || !st.stop_reply.empty() || pending_out(st) > 0)
    return;
  shutdown_write(st.hdl);
  if (st.local == local_state::eof) {
    finish(self, "both sides closed");
    return;
  }
  transition_to(self, local_state::fin);
}

void send_stream_fin(channel_broker* self) {
  auto& st = self->state;
  if (st.fin_sent)
    return;
  st.fin_sent = true; // later local bytes are dropped
  self->send(st.session, stream_write_atom::value, st.id, std::string{}, true);
}

void stop_toward_stream(channel_broker* self) {
  auto& st = self->state;
  if (st.fin_sent)
    return;
  send_stream_fin(self);
  if (st.fin_received) {
    // (not reached: the client side closes on the peer's FIN)
    return;
  }
  if (st.tunnel == tunnel_state::connected)
    transition_to(self, tunnel_state::half_closed);
  self->delayed_send(self, st.stop_reply.empty() ? drain_timeout : stop_idle,
                     timeout_atom::value, ++st.gen);
}

void start_relay(channel_broker* self) {
  auto& st = self->state;
  ++st.gen; // the open deadline is met
  transition_to(self, tunnel_state::connected);
  st.was_connected = true;
  if (st.media)
    start_media(self);
  bool watched = st.watching;
  st.watching = false;
  if (st.local == local_state::closed || st.local == local_state::eof) {
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
      stop_toward_stream(self);
      return;
    }
  }
  // (An answer to the sniffed first request: a refused SETUP.)
  write_local_reply(self);
  if (st.local == local_state::closed) {
    abort_stream(self, "the local connection failed before the tunnel was up");
    return;
  }
  if (st.local == local_state::eof) {
    // The client sent its bytes and finished before the tunnel was up: they
    // went on the stream above; now our FIN, and its answer still comes.
    send_stream_fin(self);
    transition_to(self, tunnel_state::half_closed);
    settle_local(self);
    return;
  }
  update_reading(self);
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
  if (st.local != local_state::closed)
    transition_to(self, local_state::closed);
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
  if (st.local != local_state::sniffing && st.local != local_state::open
      && st.local != local_state::fin)
    return;
  if (st.local_reset_seen) {
    on_local_closed(self);
    return;
  }
  st.reading = false;
  log::debug(subject, "for {} ({}): the local side finished sending ({} in)",
             st.resource, st.client_address, st.bytes_in);
  if (st.local == local_state::sniffing) {
    on_sniff_eof(self);
    return;
  }
  // Our FIN went to the local side already: both directions are done once
  // the stream has ours.
  bool both = st.local == local_state::fin;
  if (!both)
    transition_to(self, local_state::eof);
  if (st.tunnel == tunnel_state::closed)
    return;
  if (!tunnel_up(st)) {
    if (st.sniffed || !st.pending.empty())
      return; // its bytes, then our FIN, once the tunnel is up (start_relay)
    // A tcp client that left without a byte: abandon the open.
    abort_stream(self, "the local side closed before the tunnel was up");
    return;
  }
  send_stream_fin(self);
  if (st.tunnel == tunnel_state::connected)
    transition_to(self, tunnel_state::half_closed);
  if (st.local_write_lost) {
    // Nothing can be written to it any more: done. (The session asks the
    // peer to stop sending: our FIN went first.)
    finish(self, "the local side finished and no longer reads");
    return;
  }
  if (both) {
    finish(self, "both sides closed");
    return;
  }
  settle_local(self);
}

} // namespace p2proxy::channel_detail
