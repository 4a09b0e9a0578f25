// The client CHANNEL: what it does before its tunnel is up. It learns the
// resource (its adapter's sniff, or the listener's), finds the exporting
// node, opens a session and a stream, sends the StreamOpen preamble and
// reads the StreamOpenResult; a failure is answered in the client's
// protocol and told to the LISTENER as a code.
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/relay.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/common/preamble.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace channel_detail {

namespace {

/// What the exporting node's StreamOpenResult code means for the client.
ec code_of(tunnel::StreamOpenResult::Code code) {
  using r = tunnel::StreamOpenResult;
  switch (code) {
    case r::UNKNOWN_RESOURCE:
      return ec::unknown_resource;
    case r::DENIED:
      return ec::denied;
    case r::TARGET_REFUSED:
      return ec::target_refused;
    case r::TARGET_UNREACHABLE:
      return ec::target_unreachable;
    case r::BAD_REQUEST:
      return ec::protocol_error;
    default:
      return ec::unspecified;
  }
}

void open_tunnel(channel_broker* self);

} // namespace

caf::error open_error(const caf::error& upstream, std::string text) {
  if (upstream && upstream.category() == caf::atom("p2proxy")
      && !is_error(upstream, ec::unspecified))
    return make_error(static_cast<ec>(upstream.code()), std::move(text));
  if (upstream && upstream.category() == caf::atom("system")
      && upstream.code() == static_cast<uint8_t>(caf::sec::request_timeout))
    return make_error(ec::timeout, std::move(text)); // our own deadline
  return make_error(ec::unspecified, std::move(text));
}

void refuse(channel_broker* self, const caf::error& why,
            open_failure reply_as) {
  auto& st = self->state;
  auto text = error_text(why);
  log::warn(subject, "refuses {} for '{}': {}", st.client_address, st.resource,
            text);
  if (st.listener)
    self->send(st.listener, refused_atom::value, why);
  if (st.sniffed && st.local != local_state::closed)
    local_write(self, st.adapter->failure_reply(reply_as, text));
  finish(self, text);
}

void on_sniff_eof(channel_broker* self) {
  auto& st = self->state;
  std::string why = "the client finished before naming a resource";
  if (st.listener)
    self->send(st.listener, refused_atom::value,
               caf::error{sniff_error::eof, why});
  finish(self, why);
}

void on_sniff_data(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  auto r = st.adapter->sniff(bytes);
  if (!r.reply.empty())
    local_write(self, r.reply); // (SOCKS5: the method selection)
  switch (r.state) {
    case sniff_state::need_more:
      return;
    case sniff_state::failed:
      log::warn(subject, "refuses {} ({}): {}", st.client_address, st.protocol,
                r.reason);
      if (st.listener)
        self->send(st.listener, refused_atom::value,
                   caf::error{r.error, r.reason});
      finish(self, r.reason);
      return;
    case sniff_state::done:
      break;
  }
  transition_to(self, local_state::open);
  st.sniffed = true;
  st.resource = r.resource;
  st.pending = std::move(r.forward);
  log::debug(subject, "{} ({}) asks for '{}'", st.client_address, st.protocol,
             st.resource);
  open_tunnel(self);
}

void hold_client_bytes(channel_broker* self, const std::string& bytes) {
  auto& st = self->state;
  if (st.tunnel == tunnel_state::closed)
    return;
  st.pending += bytes;
  if (st.watching) {
    // tcp: its token is used; read on while the hold has room (a trigger
    // inside the socket's own callback is safe), else the socket pauses
    // until the relay resumes it.
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
           caf::error{sniff_error::overflow,
                      fmt::format("the client sent more than {} bytes before "
                                  "the tunnel was up",
                                  max_pending)},
           open_failure::overloaded);
}

void on_open_result(channel_broker* self, std::string& bytes) {
  auto& st = self->state;
  auto& reader = st.open_result;
  auto status = reader.feed(bytes);
  bytes.clear();
  auto malformed = [&] {
    self->send(st.session, stream_reset_atom::value, st.id, uint64_t{1});
    refuse(self,
           make_error(ec::protocol_error,
                      "the peer answered with a malformed StreamOpenResult"),
           open_failure::internal);
  };
  switch (status) {
    case preamble_reader::status::need_more:
      return;
    case preamble_reader::status::oversize:
      malformed();
      return;
    case preamble_reader::status::complete:
      break;
  }
  tunnel::StreamOpenResult r;
  if (!r.ParseFromString(reader.payload())) {
    malformed();
    return;
  }
  // Preamble bytes are consumed at once, all of them: they are bounded.
  self->send(st.session, stream_consumed_atom::value, st.id,
             static_cast<uint64_t>(4 + reader.payload().size()));
  if (r.code() != tunnel::StreamOpenResult::OK) {
    refuse(self,
           make_error(code_of(r.code()),
                      fmt::format("{}: {}",
                                  tunnel::StreamOpenResult::Code_Name(r.code()),
                                  r.text())),
           open_failure_from_code(static_cast<int>(r.code())));
    return;
  }
  if (st.local != local_state::closed)
    local_write(self, st.adapter->success_reply());
  bytes = std::move(reader.rest());
  log::info(subject, "connects {} to '{}' on node {}", st.client_address,
            st.resource, st.peer);
  start_relay(self);
}

bool on_client_timeout(channel_broker* self) {
  auto& st = self->state;
  if (st.local == local_state::sniffing) {
    local_write(self, st.adapter->timeout_reply());
    auto why = fmt::format("timeout: the client did not name a resource "
                           "within {} s",
                           sniff_timeout.count());
    log::warn(subject, "refuses {}: {}", st.client_address, why);
    if (st.listener)
      self->send(st.listener, refused_atom::value,
                 caf::error{sniff_error::timeout, why});
    finish(self, why);
    return true;
  }
  if (!tunnel_up(st) && st.tunnel != tunnel_state::closed) {
    refuse(
      self,
      make_error(ec::timeout, "timeout: the tunnel was not ready within 30 s"),
      open_failure::peer_unreachable);
    return true;
  }
  return false;
}

namespace {

void open_session(channel_broker* self, const std::string& node,
                  bool may_retry);

/// The session is ready: open a stream and send the StreamOpen preamble,
/// followed by the sniffed client bytes. A session that ended before the
/// stream opened (it closed at the end of its linger, both ends agreeing,
/// while this open was on its way) is asked for once more: the PEER
/// MANAGER then starts a new one.
void open_stream(channel_broker* self, const caf::actor& session,
                 bool may_retry) {
  auto& st = self->state;
  if (st.tunnel == tunnel_state::closed)
    return;
  st.session = caf::actor_cast<session_streams_actor>(session);
  self->monitor(st.session);
  if (st.tunnel != tunnel_state::peer_ready)
    transition_to(self, tunnel_state::peer_ready);
  self
    ->request(st.session, std::chrono::seconds(10), stream_open_atom::value,
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
          auto verdict = st.adapter->to_stream(st.pending, preamble);
          st.bytes_in += st.pending.size();
          st.pending.clear();
          if (verdict != protocol_adapter::verdict::ok) {
            // The adapter refused the very first bytes (cannot happen
            // after a `done` sniff, which validated the head).
            self->send(st.session, stream_reset_atom::value, id, uint64_t{1});
            refuse(self,
                   make_error(ec::protocol_error, st.adapter->stop_reason()),
                   open_failure::bad_request);
            return;
          }
        }
        st.credit -= std::min<uint64_t>(st.credit, preamble.size());
        self->send(st.session, stream_write_atom::value, id, preamble, false);
        transition_to(self, tunnel_state::remote_connecting);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        if (st.tunnel == tunnel_state::closed)
          return;
        if (may_retry
            && (is_error(err, ec::session_lost)
                || err == caf::sec::request_receiver_down)) {
          self->demonitor(st.session.address());
          st.session = nullptr;
          open_session(self, st.peer, false);
          return;
        }
        refuse(self, open_error(err, error_text(err)),
               open_failure::peer_unreachable);
      });
}

void open_session(channel_broker* self, const std::string& node,
                  bool may_retry) {
  auto& st = self->state;
  if (st.tunnel == tunnel_state::closed)
    return;
  st.peer = node;
  self->request(st.supervisor, open_timeout, open_atom::value, node)
    .then(
      [=](const caf::actor& session) { open_stream(self, session, may_retry); },
      [=](caf::error& err) {
        refuse(self,
               open_error(err, fmt::format("cannot reach node {}: {}", node,
                                           error_text(err))),
               open_failure::peer_unreachable);
      });
}

/// Find the exporting node (the listener's pinned peer, or a look-up), then
/// the session and the stream.
void open_tunnel(channel_broker* self) {
  auto& st = self->state;
  transition_to(self, tunnel_state::connecting_peer);
  self->delayed_send(self, open_timeout, timeout_atom::value, ++st.gen);
  if (!st.peer.empty()) {
    open_session(self, st.peer, true);
    return;
  }
  self
    ->request(st.supervisor, std::chrono::seconds(10), resolve_atom::value,
              st.resource)
    .then(
      [=](const std::vector<std::string>& ids) {
        auto& st = self->state;
        if (st.tunnel == tunnel_state::closed)
          return;
        if (ids.empty()) {
          refuse(
            self,
            make_error(ec::unknown_resource,
                       fmt::format("no online node exports '{}'", st.resource)),
            open_failure::unknown_resource);
          return;
        }
        open_session(self, ids.front(), true);
      },
      [=](caf::error& err) {
        refuse(self, open_error(err, "look-up failed: " + error_text(err)),
               open_failure::peer_unreachable);
      });
}

caf::behavior client_channel(channel_broker* self,
                             caf::io::connection_handle hdl,
                             const client_channel_args& args) {
  auto& st = self->state;
  st.client_side = true;
  st.hdl = hdl;
  self->ack_writes(hdl, true); // pending_out() counts every local write
  st.resource = args.resource;
  st.protocol = args.protocol;
  st.peer = args.peer;
  st.client_address = args.client_address;
  st.supervisor = args.supervisor;
  st.listener = args.listener;
  st.node = st.supervisor.address();
  if (st.protocol == "rtsp") {
    st.media = std::make_unique<rtsp_media_relay>(self, args.bind_host, true);
    st.media->set_remote_host(st.client_address);
  }
  st.adapter = make_client_adapter(st.protocol, args.resource, st.media.get());
  self->send(st.supervisor, channel_atom::value);
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (st.session && dm.source == st.session.address()) {
      if (st.tunnel == tunnel_state::peer_ready && st.id < 0)
        return; // the stream open's answer (an error now) decides: retry
      if (!tunnel_up(st) && st.tunnel != tunnel_state::closed)
        refuse(self, make_error(ec::session_lost, "the session ended"),
               open_failure::peer_unreachable);
      else
        finish(self, "the session ended");
    }
  });
  self->configure_read(st.hdl, caf::io::receive_policy::at_most(st.read_size));
  if (st.adapter->sniffs()) {
    // The client names its resource: read it first, with a deadline. Later
    // bytes are held until the tunnel is up.
    st.local = local_state::sniffing;
    self->delayed_send(self, sniff_timeout, timeout_atom::value, ++st.gen);
  } else {
    // Watch the client while the tunnel is set up: a client that leaves is
    // noticed at once (the open is abandoned, nothing reaches the target).
    // Its early bytes are held, one read at a time up to max_pending; the
    // rest waits in the socket's buffer.
    st.watching = true;
    self->trigger(st.hdl, 1);
    st.reading = true;
    open_tunnel(self);
  }
  return relay_behavior(self);
}

} // namespace

} // namespace channel_detail

channel_actor fork_client_channel(caf::io::broker* listener,
                                  caf::io::connection_handle hdl,
                                  client_channel_args args) {
  return caf::actor_cast<channel_actor>(
    listener->fork(channel_detail::client_channel, hdl, std::move(args)));
}

} // namespace p2proxy
