#include "actors/peer/stream_service.hpp"

#include <algorithm>
#include <memory>

#include <unistd.h>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/channel.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/common/tcp_connect.hpp"
#include "actors/debug/test_resources.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "stream_service";

struct stream_service_state {
  static inline const char* name = "stream_service";
  caf::actor session;
  int64_t id = -1;
  std::string peer;
  std::shared_ptr<const stream_service_config> cfg;
  export_entry ex;
  uint64_t credit = 0; // bytes we may still write
  std::string backlog; // for the channel; consumed once written
  bool peer_fin = false;
  bool fin_sent = false; // refused: answered with an error and a FIN
  caf::actor channel;    // set once handed off; forward to it
  // The target is being connected (by a detached worker). If the stream
  // ends meanwhile the service stays until the worker reports, so the
  // socket it may still bring is closed, not leaked.
  bool connecting = false;
  bool abandoned = false; // the stream ended while connecting
};

using service_actor = caf::stateful_actor<stream_service_state>;

/// What the peer sent that will never be read: consumed, so its credit is
/// not lost to the session.
void consume(service_actor* self, uint64_t n) {
  if (n > 0)
    self->send(self->state.session, stream_consumed_atom::value, self->state.id,
               n);
}

void refuse(service_actor* self, tunnel::StreamOpenResult::Code code,
            const std::string& text) {
  auto& st = self->state;
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  st.fin_sent = true;
  self->send(st.session, stream_write_atom::value, st.id,
             encode_frame(res.SerializeAsString()), true);
  log::info(subject, "refuses a stream from {}: {}", st.peer, text);
  consume(self, st.backlog.size());
  st.backlog.clear();
}

void connect_target(service_actor* self) {
  auto& st = self->state;
  st.connecting = true;
  auto target = st.ex.target;
  auto timeout = st.cfg->connect_timeout;
  auto me = caf::actor{self};
  log::debug(subject, "connects '{}' for {} to {}", st.ex.name, st.peer,
             target.to_string());
  self->spawn<caf::detached>([=](caf::event_based_actor* worker) {
    std::string why;
    bool reset = false;
    ec code = ec::unspecified;
    auto fd
      = tcp_connect(target.host, target.port, timeout, why, &reset, &code);
    if (fd >= 0)
      caf::anon_send(me, connect_atom::value, fd, reset);
    else
      caf::anon_send(me, target_fail_atom::value, make_error(code, why));
    worker->quit();
  });
}

caf::behavior stream_service(service_actor* self, caf::actor session,
                             std::shared_ptr<const stream_service_config> cfg,
                             export_entry ex, peer_stream_open open) {
  auto& st = self->state;
  st.session = std::move(session);
  st.id = open.stream_id;
  st.peer = std::move(open.peer);
  st.cfg = std::move(cfg);
  st.ex = std::move(ex);
  st.backlog = std::move(open.first_bytes);
  st.peer_fin = open.peer_fin;
  auto& allow = st.ex.allow;
  if (std::find(allow.begin(), allow.end(), "*") != allow.end()
      || std::find(allow.begin(), allow.end(), st.peer) != allow.end())
    connect_target(self);
  else
    refuse(
      self, tunnel::StreamOpenResult::DENIED,
      fmt::format("node {} is not allowed to use '{}'", st.peer, st.ex.name));
  return {
    [=](stream_data_atom, int64_t id, std::string& bytes, bool fin) {
      auto& st = self->state;
      if (st.channel) { // handed off: it came before the session switched
        self->send(st.channel, stream_data_atom::value, id, std::move(bytes),
                   fin);
        return;
      }
      st.peer_fin = st.peer_fin || fin;
      if (st.fin_sent)
        consume(self, bytes.size());
      else
        st.backlog += bytes;
    },
    [=](stream_credit_atom, int64_t id, uint64_t n) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_credit_atom::value, id, n);
        return;
      }
      st.credit += n;
    },
    [=](connect_atom, int fd, bool reset) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        // Nobody wants it any more: the target sees a connection that
        // closes at once.
        log::debug(subject,
                   "closes its connection to '{}' for {}: the "
                   "stream ended while it was connecting",
                   st.ex.name, st.peer);
        ::close(fd);
        self->quit();
        return;
      }
      if (reset)
        log::debug(subject,
                   "'{}' for {}: the target reset right after "
                   "accepting; its bytes go first, then the reset",
                   st.ex.name, st.peer);
      export_channel_args a;
      a.session = st.session;
      a.stream_id = st.id;
      a.credit = st.credit;
      a.first_bytes = std::move(st.backlog);
      a.first_unconsumed = a.first_bytes.size(); // none consumed yet
      a.peer_fin = st.peer_fin;
      a.target_reset = reset;
      a.peer = st.peer;
      a.resource = st.ex.name;
      a.target = st.ex.target.to_string();
      a.protocol = st.ex.protocol.empty() ? "tcp" : st.ex.protocol;
      a.node = st.cfg->node;
      st.credit = 0;
      st.channel = spawn_export_channel(self->system(), fd, std::move(a));
      self->send(st.session, stream_owner_atom::value, st.id, st.channel);
    },
    [=](target_fail_atom, const caf::error& err) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        self->quit();
        return;
      }
      refuse(self,
             is_error(err, ec::target_refused)
               ? tunnel::StreamOpenResult::TARGET_REFUSED
               : tunnel::StreamOpenResult::TARGET_UNREACHABLE,
             fmt::format("'{}' at {}: {}", st.ex.name, st.ex.target.to_string(),
                         error_text(err)));
    },
    [=](stream_owner_atom, int64_t) {
      // The session now sends the stream's messages to the channel; what
      // came before is forwarded (it was ahead of this in the mailbox).
      // Saying so lets the session send the channel what it held back.
      auto& st = self->state;
      self->send(st.session, stream_owner_atom::value, st.id);
      self->quit();
    },
    [=](stream_reset_atom, int64_t id, uint64_t code) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_reset_atom::value, id, code);
        return;
      }
      if (st.abandoned)
        return;
      self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
      if (st.connecting)
        st.abandoned = true;
      else
        self->quit();
    },
    [=](stream_closed_atom, int64_t id) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_closed_atom::value, id);
        return;
      }
      if (st.connecting)
        st.abandoned = true;
      else
        self->quit();
    },
    [=](session_down_atom, const std::string& why) {
      auto& st = self->state;
      if (st.channel)
        self->send(st.channel, session_down_atom::value, why);
      else if (st.connecting) {
        st.abandoned = true; // nothing more goes to the session
        return;
      }
      self->quit();
    },
    [=](status_atom) {
      admin::ActorStatus as;
      as.set_name(stream_service_state::name);
      as.set_state(self->state.fin_sent ? "finishing" : "serving");
      return as.SerializeAsString();
    },
  };
}

} // namespace

stream_handler_factory make_stream_handler(stream_service_config cfg) {
  auto shared = std::make_shared<const stream_service_config>(std::move(cfg));
  return [shared](caf::local_actor* session,
                  peer_stream_open open) -> caf::expected<caf::actor> {
    const auto& r = open.open.resource();
    const export_entry* ex = nullptr;
    for (auto& e : shared->exports)
      if (e.name == r)
        ex = &e; // (the last of equal names, as before)
    if (ex != nullptr)
      return session->spawn(stream_service,
                            caf::actor_cast<caf::actor>(session), shared, *ex,
                            std::move(open));
    if (shared->test_resources && is_test_resource(r)) {
      test_resource_args a;
      a.session = caf::actor_cast<caf::actor>(session);
      a.stream_id = open.stream_id;
      a.peer = std::move(open.peer);
      a.resource = r;
      a.source_bytes = open.open.source_bytes();
      a.first_bytes = std::move(open.first_bytes);
      a.peer_fin = open.peer_fin;
      return spawn_test_resource(session, std::move(a));
    }
    return make_error(ec::unknown_resource,
                      "no resource named '" + r + "' on this node");
  };
}

} // namespace p2proxy
