// The CHANNEL's message handlers, both kinds: the local socket's events and
// the stream's. What only a client channel does before its tunnel is up is
// in client_side.cpp.
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/relay.hpp"
#include "actors/common/error.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"

namespace p2proxy::channel_detail {

namespace {

/// Stream bytes written to the local socket are reported consumed: byte for
/// byte, or per rewritten chunk once all of it is written.
void consume_written(channel_broker* self, uint64_t written) {
  auto& st = self->state;
  uint64_t n = 0;
  if (st.adapter->rewrites_to_local()) {
    st.chunk_written += written;
    while (!st.chunks.empty() && st.chunks.front().first <= st.chunk_written) {
      st.chunk_written -= st.chunks.front().first;
      n += st.chunks.front().second;
      st.chunks.pop_front();
    }
    if (st.chunks.empty())
      st.chunk_written = 0;
  } else {
    n = std::min<uint64_t>(written, st.unconsumed);
    st.unconsumed -= n;
  }
  if (n > 0 && st.session)
    self->send(st.session, stream_consumed_atom::value, st.id, n);
}

/// The peer's FIN (after the bytes that came with it).
void on_stream_fin(channel_broker* self) {
  auto& st = self->state;
  st.fin_received = true;
  bool stopped = false;
  if (!st.stop_reply.empty() && st.local != local_state::closed) {
    // Stopped (HTTP: a request for another resource): the other end
    // answered what it had; now the stop reply, then close.
    local_write(self, st.stop_reply);
    st.stop_reply.clear();
    if (st.local != local_state::closing)
      transition_to(self, local_state::closing);
    stopped = true;
  }
  if (st.local == local_state::closed || stopped
      || st.local == local_state::closing) {
    finish(self, "both sides closed");
    return;
  }
  // The peer is done sending: the local socket gets our FIN once
  // everything before it is written; it may still send (half-close).
  if (st.tunnel == tunnel_state::connected)
    transition_to(self, tunnel_state::half_closed);
  settle_local(self);
}

/// The peer reset the stream.
void on_stream_reset(channel_broker* self, uint64_t code) {
  auto& st = self->state;
  auto why = fmt::format("the peer reset the stream (code {})", code);
  if (st.client_side && !tunnel_up(st) && st.tunnel != tunnel_state::closed) {
    // (A reset can overtake the StreamOpenResult: a target that reset at
    // once. A tcp client has no protocol to be told in: it gets the reset,
    // not a clean end.)
    if (!st.sniffed && st.local != local_state::closed)
      reset_on_close(st.hdl);
    refuse(self, make_error(ec::unspecified, why),
           open_failure::peer_unreachable);
  } else if (st.fin_received && st.local != local_state::closed) {
    // The peer's bytes are complete; it only no longer wants ours (its
    // local side closed: STOP_SENDING). The local side still gets all of
    // them and our FIN; what it sends meanwhile is dropped until its own
    // FIN, as from a TCP peer that closed.
    st.fin_sent = true; // nothing more goes on the stream
    st.draining = true;
    log::debug(subject,
               "for {} ({}): the peer no longer reads; the "
               "local side gets our FIN",
               st.resource, st.client_address);
    settle_local(self);
    if (st.local != local_state::closed) {
      update_reading(self);
      self->delayed_send(self, drain_grace, timeout_atom::value, ++st.gen);
    }
  } else {
    reset_local_and_finish(self, why);
  }
}

void on_timeout(channel_broker* self) {
  auto& st = self->state;
  if (st.client_side && on_client_timeout(self))
    return; // the sniff or the open deadline
  if (st.draining) {
    finish(self, fmt::format("the local side went on sending {} s after "
                             "the peer stopped reading",
                             drain_grace.count()));
    return;
  }
  if (!tunnel_up(st))
    return;
  self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
  if (!st.stop_reply.empty() && st.local != local_state::closed) {
    // Stopped, and the other end has been silent: the local side gets the
    // stop reply (a CAF 0.17 export cannot half-close the target's socket,
    // so a keep-alive target would otherwise hold the connection).
    local_write(self, st.stop_reply);
    st.stop_reply.clear();
    if (st.unconsumed > 0)
      transition_to(self, local_state::closing);
    finish(self, "stopped: a request for another resource");
    return;
  }
  finish(self, "the peer did not finish within 30 s after the local "
               "side closed");
}

/// How often a listening node checks its RTSP clients' session timeouts.
constexpr auto media_check = std::chrono::seconds(2);

void check_media(channel_broker* self) {
  auto& st = self->state;
  if (!st.media || !tunnel_up(st))
    return;
  if (st.media->expired(std::chrono::steady_clock::now())) {
    log::info(subject,
              "ends the RTSP connection of {} to '{}': the client was silent "
              "longer than its session's timeout; its UDP ports are freed",
              st.client_address, st.resource);
    abort_stream(self, "the RTSP client was silent longer than its "
                       "session's timeout");
    return;
  }
  self->delayed_send(self, media_check, udp_tick_atom::value, ++st.media_gen);
}

} // namespace

void start_media(channel_broker* self) {
  auto& st = self->state;
  st.media->attach(st.session, st.id);
  if (st.client_side)
    self->delayed_send(self, media_check, udp_tick_atom::value, ++st.media_gen);
}

std::string status_of(channel_broker* self) {
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
  f["local"] = to_string(st.local);
  f["peer"] = st.peer;
  f["stream"] = std::to_string(st.id);
  f["target"] = st.target;
  if (st.media) {
    auto& m = st.media->stats();
    f["media_pairs"] = std::to_string(st.media->pairs());
    f["media_to_peer"] = std::to_string(m.to_peer);
    f["media_from_peer"] = std::to_string(m.from_peer);
    f["media_dropped"] = std::to_string(m.dropped_oversize + m.dropped_bad
                                        + m.dropped_unknown + m.dropped_foreign
                                        + m.dropped_path + m.dropped_unavailable
                                        + m.dropped_busy + m.dropped_fragment);
    f["media_dropped_bad"] = std::to_string(m.dropped_bad);
    f["media_dropped_oversize"]
      = std::to_string(m.dropped_oversize + m.dropped_path);
  }
  f["age_ms"]
    = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - st.since)
                       .count());
  return as.SerializeAsString();
}

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
      std::string bytes(msg.buf.begin(), msg.buf.end());
      if (st.local == local_state::sniffing) {
        on_sniff_data(self, bytes);
        return;
      }
      if (st.client_side && !tunnel_up(st)) {
        hold_client_bytes(self, bytes);
        return;
      }
      st.reading = false; // its token is used
      if (st.fin_sent) {
        if (st.draining)
          update_reading(self, true); // dropped; read on to the FIN
        return;
      }
      if (!relay_local_bytes(self, bytes)) {
        stop_toward_stream(self);
        return;
      }
      update_reading(self, true);
    },
    [=](const caf::io::data_transferred_msg& msg) {
      auto& st = self->state;
      consume_written(self, msg.written);
      st.transferred_total += msg.written;
      if (st.local == local_state::closing && msg.remaining == 0) {
        transition_to(self, local_state::closed);
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
      if (st.local == local_state::closed || st.local_write_lost)
        return;
      st.local_write_lost = true;
      log::debug(subject, "for {} ({}): the local side no longer reads",
                 st.resource, st.client_address);
      if (st.local == local_state::eof)
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
      if (st.adapter->rewrites_to_local()) {
        if (!bytes.empty())
          rewrite_to_local(self, bytes, bytes.size());
        if (st.tunnel == tunnel_state::closed)
          return;
      } else {
        write_local(self, bytes);
      }
      if (!st.stop_reply.empty() && !fin)
        // Stopped: the other end is still answering; wait for silence again.
        self->delayed_send(self, stop_idle, timeout_atom::value, ++st.gen);
      if (fin && !st.fin_received)
        on_stream_fin(self);
    },
    [=](stream_reset_atom, int64_t, uint64_t code) {
      on_stream_reset(self, code);
    },
    [=](stream_closed_atom, int64_t) {
      if (!self->state.draining) // (then it ends at the local FIN)
        finish(self, "stream closed");
    },
    [=](session_down_atom, const caf::error& why) {
      auto& st = self->state;
      auto text = "session down: " + error_text(why);
      if (st.client_side && !tunnel_up(st) && st.tunnel != tunnel_state::closed)
        refuse(self, open_error(why, text), open_failure::peer_unreachable);
      else
        reset_local_and_finish(self, text);
    },
    [=](timeout_atom, uint64_t gen) {
      if (gen == self->state.gen)
        on_timeout(self);
    },
    // --- RTSP media as datagrams (rtsp_media_relay.hpp)
    [=](udp_in_atom, int64_t tag, std::vector<std::string>& from,
        std::vector<std::string>& payloads) {
      if (auto& m = self->state.media)
        m->on_udp(tag, from, payloads);
    },
    [=](flow_data_atom, int64_t, std::vector<std::string>& datagrams) {
      if (auto& m = self->state.media)
        m->on_flow(datagrams);
    },
    [=](flow_drop_atom, int64_t, uint64_t too_big, uint64_t unavailable) {
      if (auto& m = self->state.media)
        m->on_drop(too_big, unavailable);
    },
    [=](udp_tick_atom, uint64_t gen) {
      if (gen == self->state.media_gen)
        check_media(self);
    },
    [=](status_atom) { return status_of(self); },
    [=](stop_atom, const std::string& why) { finish(self, why); },
  };
}

} // namespace p2proxy::channel_detail
