#include "actors/listener/listener.hpp"

#include <map>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/channel.hpp"
#include "actors/channel/protocol/sniffer.hpp"
#include "actors/common/error.hpp"
#include "actors/common/half_close.hpp"
#include "actors/common/log.hpp"
#include "actors/udp/udp_listener.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "listener";

struct listener_state {
  static inline const char* name = "listener";
  listener_config cfg;
  caf::actor supervisor;
  uint64_t accepted = 0;
  uint64_t refused = 0;
  std::map<std::string, uint64_t> refused_by_reason;
  size_t open_channels = 0;
  bool stopping = false;
};

using listener_broker = caf::io::stateful_broker<listener_state>;

/// The counter a refusal goes to, from its code. The labels are part of the
/// admin interface (refused_<label>, p2proxy_listener_refused_total).
std::string refusal_label(const caf::error& why) {
  if (!why)
    return "other";
  if (why.category() == caf::atom("sniff")) {
    auto code = static_cast<sniff_error>(why.code());
    if (code == sniff_error::overflow)
      return "client_overflow";
    return std::string{"sniff_"} + to_string(code);
  }
  if (is_error(why, ec::unknown_resource))
    return "unknown_resource";
  if (is_error(why, ec::denied))
    return "denied";
  if (is_error(why, ec::peer_offline))
    return "peer_offline";
  if (is_error(why, ec::target_refused)
      || is_error(why, ec::target_unreachable))
    return "target_failed";
  if (is_error(why, ec::timeout))
    return "timeout";
  return "other";
}

caf::behavior listener_impl(listener_broker* self, listener_config cfg,
                            caf::actor supervisor,
                            caf::io::accept_handle acceptor) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.supervisor = std::move(supervisor);
  self->set_down_handler([=](const caf::down_msg&) {
    auto& st = self->state;
    if (st.open_channels > 0)
      --st.open_channels;
    if (st.stopping && st.open_channels == 0)
      self->quit();
  });
  return {
    [=](const caf::io::new_connection_msg& msg) {
      auto& st = self->state;
      ++st.accepted;
      client_channel_args a;
      a.resource = st.cfg.resource;
      a.protocol = st.cfg.protocol;
      a.peer = st.cfg.peer;
      a.client_address = fmt::format("{}:{}", self->remote_addr(msg.handle),
                                     self->remote_port(msg.handle));
      a.bind_host = st.cfg.bind.host;
      a.supervisor = st.supervisor;
      a.listener = caf::actor_cast<listener_actor>(self);
      auto ch = fork_client_channel(self, msg.handle, std::move(a));
      self->monitor(ch);
      ++st.open_channels;
    },
    [=](refused_atom, const caf::error& why) {
      auto& st = self->state;
      ++st.refused;
      ++st.refused_by_reason[refusal_label(why)];
    },
    [=](const caf::io::acceptor_closed_msg&) {
      log::error(subject, "lost its socket on {}", st.cfg.bind.to_string());
      self->quit(make_error(ec::io_failure, "the listening socket closed"));
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus as;
      as.set_name(listener_state::name);
      as.set_state(st.stopping ? "stopping" : "listening");
      auto& f = *as.mutable_fields();
      f["bind"] = st.cfg.bind.to_string();
      f["protocol"] = st.cfg.protocol;
      f["resource"] = st.cfg.resource;
      f["accepted"] = std::to_string(st.accepted);
      f["refused"] = std::to_string(st.refused);
      for (auto& [k, v] : st.refused_by_reason)
        f["refused_" + k] = std::to_string(v);
      f["open_channels"] = std::to_string(st.open_channels);
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& why) {
      auto& st = self->state;
      st.stopping = true;
      log::info(subject, "stops listening on {}: {}", st.cfg.bind.to_string(),
                why);
      // Stop accepting; channels end through their own close protocol.
      self->close(acceptor);
      if (st.open_channels == 0)
        self->quit();
    },
  };
}

} // namespace

caf::expected<listener_actor> start_listener(caf::actor_system& sys,
                                             const listener_config& cfg,
                                             const caf::actor& supervisor,
                                             uint16_t& bound_port) {
  if (cfg.protocol == "udp")
    return start_udp_listener(sys, cfg, supervisor, bound_port);
  auto& mm = sys.middleman();
  // Half-closable connections: a client's FIN does not end its channel's
  // other direction (actors/common/half_close.hpp).
  auto res = new_half_close_doorman(sys, cfg.bind.port, cfg.bind.host);
  if (!res)
    return make_error(ec::io_failure,
                      fmt::format("listen: cannot listen on {}: {}",
                                  cfg.bind.to_string(),
                                  sys.render(res.error())));
  bound_port = (*res)->port();
  auto doorman = std::move(*res);
  auto hdl = doorman->hdl();
  auto listener = mm.spawn_broker(
    [cfg, supervisor, hdl, d = doorman](listener_broker* self) mutable {
      self->add_doorman(std::move(d));
      return listener_impl(self, cfg, supervisor, hdl);
    });
  log::info(subject, "listens on {}:{} for '{}' ({})", cfg.bind.host,
            bound_port, cfg.resource, cfg.protocol);
  return caf::actor_cast<listener_actor>(listener);
}

} // namespace p2proxy
