// The export CHANNEL: spawned by the STREAM SERVICE with the export's
// connected target and the stream; it answers StreamOpenResult OK and
// relays, through the export's adapter (RTSP URLs, HTTP Host).
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/relay.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace channel_detail {

void rewrite_to_local(channel_broker* self, const std::string& bytes,
                      uint64_t stream_bytes) {
  auto& st = self->state;
  std::string to_target, answer;
  auto stopped = st.adapter->to_local(bytes, to_target, answer)
                 == protocol_adapter::verdict::stop;
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

caf::behavior export_channel(channel_broker* self, int fd,
                             export_channel_args args) {
  auto& st = self->state;
  st.hdl = add_half_close_scribe(self, fd);
  self->ack_writes(st.hdl, true); // pending_out() counts every local write
  st.session = args.session;
  st.id = args.stream_id;
  st.credit = args.credit;
  st.peer = args.peer;
  st.resource = args.resource;
  st.client_address = args.peer;
  st.target = args.target;
  st.protocol = args.protocol;
  st.node = args.node;
  st.adapter = make_export_adapter(st.protocol, st.resource, st.target);
  if (auto node = caf::actor_cast<caf::actor>(st.node))
    self->send(node, channel_atom::value);
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
  if (st.adapter->rewrites_to_local()) {
    if (!args.first_bytes.empty())
      rewrite_to_local(self, args.first_bytes, args.first_unconsumed);
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

} // namespace channel_detail

caf::actor spawn_export_channel(caf::actor_system& sys, int fd,
                                export_channel_args args) {
  return sys.middleman().spawn_broker(channel_detail::export_channel, fd,
                                      std::move(args));
}

} // namespace p2proxy
