// The export CHANNEL: the only owner of a stream the peer opened for an
// export. Before its target is connected it holds the stream's bytes
// (unconsumed) and credit; it refuses a peer the allow list does not name,
// connects the target on a detached worker (tcp_connect blocks), and once
// the socket arrives answers StreamOpenResult OK and relays, through the
// export's adapter (RTSP URLs, HTTP Host).
#include <algorithm>

#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/relay.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"
#include "actors/common/tcp_connect.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

bool export_allows(const export_entry& ex, const std::string& peer) {
  auto& allow = ex.allow;
  return std::find(allow.begin(), allow.end(), "*") != allow.end()
         || std::find(allow.begin(), allow.end(), peer) != allow.end();
}

namespace channel_detail {

void rewrite_to_local(channel_broker* self, const std::string& bytes,
                      uint64_t stream_bytes) {
  auto& st = self->state;
  std::string to_target, answer;
  auto stopped = st.adapter->to_local(bytes, to_target, answer)
                 == protocol_adapter::verdict::stop;
  if (st.media)
    st.media->flush();
  // The rewritten bytes are reported consumed once written
  // (data_transferred); bytes the adapter holds (bounded) or answers itself,
  // or that nobody can take, are consumed at once.
  if (!to_target.empty() && st.local != local_state::closed) {
    local_write(self, to_target);
    st.bytes_out += to_target.size();
    if (stream_bytes > 0)
      st.chunks.emplace_back(to_target.size(), stream_bytes);
  } else if (stream_bytes > 0) {
    self->send(st.session, stream_consumed_atom::value, st.id, stream_bytes);
  }
  // What the adapter answers itself (RTSP 461, a 4xx) goes back on the
  // stream; the last one, when it stopped, with our FIN.
  if (!answer.empty() && !st.fin_sent) {
    st.credit -= std::min<uint64_t>(st.credit, answer.size());
    self->send(st.session, stream_write_atom::value, st.id, std::move(answer),
               stopped);
    if (stopped)
      st.fin_sent = true;
  }
  if (!stopped)
    return;
  auto reason = st.adapter->stop_reason();
  log::warn(subject, "stops the {} connection of node {} to '{}': {}",
            st.adapter->name(), st.peer, st.resource, reason);
  send_stream_fin(self);
  finish(self, fmt::format("{}: {}", st.adapter->name(), reason));
}

namespace {

/// Stream bytes that will never be written: consumed, so their credit is
/// not lost to the session.
void consume(channel_broker* self, uint64_t n) {
  auto& st = self->state;
  if (n > 0)
    self->send(st.session, stream_consumed_atom::value, st.id, n);
}

/// No target: the stream is answered with `code` and our FIN; what the
/// channel holds, and what still comes, is consumed until the stream ends.
void refuse_stream(channel_broker* self, tunnel::StreamOpenResult::Code code,
                   const std::string& text) {
  auto& st = self->state;
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  st.fin_sent = true;
  self->send(st.session, stream_write_atom::value, st.id,
             encode_frame(res.SerializeAsString()), true);
  log::info(subject, "refuses a stream from {}: {}", st.peer, text);
  consume(self, st.held.size());
  st.held.clear();
  transition_to(self, local_state::closed);
  transition_to(self, tunnel_state::closed);
}

/// The stream ended before the channel has a target: it quits now, or once
/// the worker connecting the target reported (its socket is then closed).
void abandon(channel_broker* self) {
  auto& st = self->state;
  if (st.connecting)
    st.abandoned = true;
  else
    self->quit();
}

void connect_target(channel_broker* self, const endpoint& target,
                    std::chrono::milliseconds timeout) {
  auto& st = self->state;
  st.connecting = true;
  auto me = caf::actor_cast<caf::actor>(self);
  log::debug(subject, "connects '{}' for {} to {}", st.resource, st.peer,
             st.target);
  // Foreign to the actor threads, the worker talks only through anon_send.
  self->spawn<caf::detached>([=](caf::event_based_actor* worker) {
    std::string why;
    bool reset = false;
    ec code = ec::unspecified;
    auto fd
      = tcp_connect(target.host, target.port, timeout, why, &reset, &code);
    if (fd >= 0)
      caf::anon_send(me, target_up_atom::value, fd, reset);
    else
      caf::anon_send(me, target_fail_atom::value, make_error(code, why));
    worker->quit();
  });
}

/// The target is connected (`fd`): answer OK, write what the stream sent
/// meanwhile and relay. False if the channel ended on the way.
bool on_target_connected(channel_broker* self, int fd, bool reset) {
  auto& st = self->state;
  if (reset)
    log::debug(subject,
               "'{}' for {}: the target reset right after accepting; its "
               "bytes go first, then the reset",
               st.resource, st.peer);
  st.hdl = add_half_close_scribe(self, fd);
  self->ack_writes(st.hdl, true); // pending_out() counts every local write
  if (st.media)
    st.media->set_remote_host(self->remote_addr(st.hdl));
  transition_to(self, local_state::open);
  if (auto node = caf::actor_cast<caf::actor>(st.node))
    self->send(node, channel_atom::value);
  tunnel::StreamOpenResult ok;
  ok.set_code(tunnel::StreamOpenResult::OK);
  auto reply = encode_frame(ok.SerializeAsString());
  st.credit -= std::min<uint64_t>(st.credit, reply.size());
  self->send(st.session, stream_write_atom::value, st.id, reply, false);
  start_relay(self);
  auto first = std::move(st.held);
  st.held.clear();
  if (st.adapter->rewrites_to_local()) {
    if (!first.empty())
      rewrite_to_local(self, first, first.size());
    if (st.tunnel == tunnel_state::closed)
      return false;
  } else if (!first.empty()) {
    local_write(self, first);
    st.unconsumed += first.size(); // none consumed yet
    st.bytes_out += first.size();
  }
  log::info(subject, "connects node {} to '{}' at {}", st.peer, st.resource,
            st.target);
  // The client may have finished sending before the target was connected:
  // the target gets our FIN once those bytes are written, and its answer
  // still goes back (half-close).
  st.fin_received = st.held_fin;
  st.local_reset_seen = reset;
  if (st.fin_received) {
    transition_to(self, tunnel_state::half_closed);
    settle_local(self);
  }
  return st.tunnel != tunnel_state::closed;
}

/// Until the target is connected (or the stream refused).
caf::behavior before_target(channel_broker* self) {
  return {
    [=](stream_data_atom, int64_t, std::string& bytes, bool fin) {
      auto& st = self->state;
      st.held_fin = st.held_fin || fin;
      if (st.fin_sent)
        consume(self, bytes.size());
      else
        st.held += bytes;
    },
    [=](stream_credit_atom, int64_t, uint64_t n) { self->state.credit += n; },
    [=](target_up_atom, int fd, bool reset) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        // Nobody wants it any more: the target sees a connection that
        // closes at once.
        log::debug(subject,
                   "closes its connection to '{}' for {}: the stream ended "
                   "while it was connecting",
                   st.resource, st.peer);
        ::close(fd);
        self->quit();
        return;
      }
      if (on_target_connected(self, fd, reset))
        self->become(relay_behavior(self));
    },
    [=](target_fail_atom, const caf::error& err) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        self->quit();
        return;
      }
      // The target's address stays on this node: the log has it, the
      // answer (which reaches the remote client) names only the export.
      log::debug(subject, "'{}' at {} failed for {}: {}", st.resource,
                 st.target, st.peer, error_text(err));
      refuse_stream(self,
                    is_error(err, ec::target_refused)
                      ? tunnel::StreamOpenResult::TARGET_REFUSED
                      : tunnel::StreamOpenResult::TARGET_UNREACHABLE,
                    fmt::format("'{}': {}", st.resource, error_text(err)));
    },
    [=](stream_reset_atom, int64_t, uint64_t) {
      auto& st = self->state;
      if (st.abandoned)
        return;
      if (!st.fin_sent)
        self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
      abandon(self);
    },
    [=](stream_closed_atom, int64_t) { abandon(self); },
    [=](session_down_atom, const caf::error&) { abandon(self); },
    [=](status_atom) { return status_of(self); },
    [=](stop_atom, const std::string&) {
      auto& st = self->state;
      if (!st.fin_sent && !st.abandoned)
        self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
      abandon(self);
    },
  };
}

caf::behavior export_channel(channel_broker* self, export_channel_args args) {
  auto& st = self->state;
  st.local = local_state::connecting;
  st.session = std::move(args.session);
  st.id = args.stream_id;
  st.peer = args.peer;
  st.resource = args.ex.name;
  st.client_address = args.peer;
  st.target = args.ex.target.to_string();
  st.protocol = args.ex.protocol.empty() ? "tcp" : args.ex.protocol;
  st.node = args.node;
  st.held = std::move(args.first_bytes);
  st.held_fin = args.peer_fin;
  if (st.protocol == "rtsp") {
    st.media = std::make_unique<rtsp_media_relay>(self, "", false);
    // RTCP from the client, as interleaved frames between the messages.
    st.media->write_interleaved = [self](std::string&& frame) {
      auto& st = self->state;
      if (st.local == local_state::closed || st.local == local_state::closing
          || st.local == local_state::connecting
          || !st.adapter->local_at_boundary())
        return false;
      local_write(self, frame);
      st.chunks.emplace_back(frame.size(), 0);
      return true;
    };
  }
  st.adapter
    = make_export_adapter(st.protocol, st.resource, st.target, st.media.get(),
                          args.ex.rtsp_transport == "udp");
  self->monitor(st.session);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.session.address())
      return;
    if (!st.was_connected) // connecting, or refused
      abandon(self);
    else
      finish(self, "the session ended");
  });
  // Nothing reaches a target before the allow list said yes (a stream
  // this node's own listener opened is the operator's own).
  if (args.local || export_allows(args.ex, st.peer))
    connect_target(self, args.ex.target, args.connect_timeout);
  else
    refuse_stream(
      self, tunnel::StreamOpenResult::DENIED,
      fmt::format("node {} is not allowed to use '{}'", st.peer, st.resource));
  return before_target(self);
}

} // namespace

} // namespace channel_detail

channel_actor spawn_export_channel(caf::actor_system& sys,
                                   export_channel_args args) {
  return caf::actor_cast<channel_actor>(sys.middleman().spawn_broker(
    channel_detail::export_channel, std::move(args)));
}

} // namespace p2proxy
