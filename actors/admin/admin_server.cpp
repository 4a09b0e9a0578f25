#include "actors/admin/admin_server.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string_view>
#include <optional>
#include <vector>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/admin/dashboard.hpp"
#include "actors/admin/http_front.hpp"
#include "actors/common/error.hpp"
#include "actors/common/json.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "admin_server";
constexpr auto source_timeout = std::chrono::seconds(3);
/// Look-ups and probes wait on the signaling server (5 s by default), so
/// they get longer than the status documents.
constexpr auto signal_request_timeout = std::chrono::seconds(8);
constexpr auto pump_timeout = std::chrono::minutes(30);
constexpr const char* json_type = "application/json";
constexpr const char* metrics_type = "text/plain; version=0.0.4";

using http::error_json;

http::response json_answer(int status, std::string body) {
  return http::response{status,
                        json_type,
                        std::move(body),
                        {{"X-Content-Type-Options", "nosniff"}}};
}

bool is_p2proxy_error(const caf::error& err, ec code) {
  return err.category() == caf::atom("p2proxy")
         && err.code() == static_cast<uint8_t>(code);
}

/// The NAME of PREFIX/NAME when it is 1 to 255 bytes without a '/'.
std::optional<std::string> tail_of(const std::string& path,
                                   std::string_view prefix) {
  if (path.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  auto rest = path.substr(prefix.size());
  if (rest.empty() || rest.size() > 255 || rest.find('/') != std::string::npos)
    return std::nullopt;
  return rest;
}

bool known_path(const std::string& path) {
  return dashboard::find(path) != nullptr || path == "/v1/status"
         || path == "/metrics" || path.rfind("/v1/lookup/", 0) == 0
         || path.rfind("/v1/probe/", 0) == 0
         || path.rfind("/v1/debug/pump/", 0) == 0;
}

/// Sends `xs` to `source` from a short-lived hidden actor and hands its
/// answer to `on_ok` or `on_err`, which reply to the HTTP FRONT. Nothing
/// blocks: the front's thread only spawns, the actor only waits on `source`.
template <class OnOk, class OnErr, class... Ts>
void ask(caf::actor_system& sys, const caf::actor& source,
         caf::timespan timeout, OnOk on_ok, OnErr on_err, Ts... xs) {
  sys.spawn<caf::hidden>(
    [source, timeout, on_ok, on_err, xs...](caf::event_based_actor* self) {
      self->request(source, timeout, xs...).then(on_ok, on_err);
    });
}

/// GET /v1/status and GET /metrics: the source's text as it is.
template <class Atom>
void answer_text(caf::actor_system& sys, const caf::actor& source, Atom atom,
                 const char* content_type, const http::reply_fn& reply) {
  ask(
    sys, source, source_timeout,
    [reply, content_type](std::string& body) {
      reply(http::response{200,
                           content_type,
                           std::move(body),
                           {{"X-Content-Type-Options", "nosniff"}}});
    },
    [reply](caf::error& err) {
      reply(json_answer(503, error_json(error_text(err))));
    },
    atom);
}

/// GET /v1/debug/pump/NODE-ID?resource=echo&bytes=N&streams=K: a test
/// transfer through a real session (only with [debug] test_resources).
void answer_pump(caf::actor_system& sys, const caf::actor& source,
                 const http::request& req, std::string node,
                 const http::reply_fn& reply) {
  auto param = [&](const char* name, const char* dflt) {
    auto* v = req.param(name);
    return v != nullptr ? *v : std::string{dflt};
  };
  uint64_t bytes = 0;
  uint32_t streams = 0;
  try {
    bytes = std::stoull(param("bytes", "1048576"));
    streams = static_cast<uint32_t>(std::stoul(param("streams", "1")));
  } catch (const std::exception&) {
    reply(json_answer(400, error_json("bytes and streams must be numbers")));
    return;
  }
  ask(
    sys, source, pump_timeout,
    [reply](std::string& body) { reply(json_answer(200, std::move(body))); },
    [reply](caf::error& err) {
      reply(json_answer(is_p2proxy_error(err, ec::bad_config) ? 404 : 502,
                        error_json(error_text(err))));
    },
    pump_atom::value, std::move(node), param("resource", "echo"), bytes,
    streams);
}

/// GET /v1/lookup/NAME: which nodes export NAME, through the SIGNAL LINK.
void answer_lookup(caf::actor_system& sys, const caf::actor& source,
                   const std::string& name, const http::reply_fn& reply) {
  ask(
    sys, source, signal_request_timeout,
    [reply, name](const std::vector<std::string>& ids) {
      std::string list;
      for (auto& id : ids)
        list += (list.empty() ? "" : ",") + json_quote(id);
      reply(json_answer(200, fmt::format("{{\"name\":{},\"nodeIds\":[{}]}}",
                                         json_quote(name), list)));
    },
    [reply](caf::error& err) {
      reply(json_answer(503, error_json(error_text(err))));
    },
    lookup_atom::value, name);
}

/// GET /v1/probe/NODE-ID: a Signal to that node and its echo, through the
/// signaling server; answers the round trip.
void answer_probe(caf::actor_system& sys, const caf::actor& source,
                  const std::string& node, const http::reply_fn& reply) {
  ask(
    sys, source, signal_request_timeout,
    [reply, node](uint64_t rtt_us) {
      reply(
        json_answer(200, fmt::format("{{\"nodeId\":{},\"rttMicroseconds\":{}}}",
                                     json_quote(node), rtt_us)));
    },
    [reply](caf::error& err) {
      reply(json_answer(is_p2proxy_error(err, ec::peer_offline) ? 404 : 503,
                        error_json(error_text(err))));
    },
    probe_atom::value, node);
}

/// Every request the front accepted: runs on the front's thread, so it only
/// starts work and never waits for it.
void route(caf::actor_system& sys, const caf::actor& source,
           const http::request& req, const http::reply_fn& reply) {
  auto& path = req.path;
  if (req.method != "GET" && req.method != "HEAD") {
    if (known_path(path))
      reply(http::response{
        405,
        json_type,
        error_json(fmt::format("method not allowed: {} {}", req.method, path)),
        {{"Allow", "GET, HEAD"}}});
    else
      reply(json_answer(404, error_json(fmt::format("not found: {}", path))));
    return;
  }
  if (const auto* page = dashboard::find(path))
    reply(http::response{200, std::string{page->content_type},
                         std::string{page->body},
                         dashboard::security_headers()});
  else if (path == "/v1/status")
    answer_text(sys, source, get_atom::value, json_type, reply);
  else if (path == "/metrics")
    answer_text(sys, source, metrics_atom::value, metrics_type, reply);
  else if (auto name = tail_of(path, "/v1/lookup/"))
    answer_lookup(sys, source, *name, reply);
  else if (auto node = tail_of(path, "/v1/probe/"))
    answer_probe(sys, source, *node, reply);
  else if (auto pumped = tail_of(path, "/v1/debug/pump/"))
    answer_pump(sys, source, req, std::move(*pumped), reply);
  else
    reply(json_answer(404, error_json(fmt::format("not found: {}", path))));
}

struct admin_state {
  std::shared_ptr<http::front> front;
  std::string address;

  // A stateful actor destroys its state when it ends for any reason, so
  // this is the one place that guarantees the front's thread is gone.
  ~admin_state() {
    if (front)
      front->stop();
  }

  static inline const char* name = "admin_server";
};

using admin_actor = caf::stateful_actor<admin_state>;

void shut_down(admin_actor* self, const std::string& why) {
  auto& st = self->state;
  log::info(subject, "stops serving {}: {}", st.address, why);
  if (st.front)
    st.front->stop();
  self->quit();
}

caf::behavior admin_server_actor(admin_actor* self,
                                 std::shared_ptr<http::front> front,
                                 const caf::actor& source,
                                 std::string address) {
  self->state.front = std::move(front);
  self->state.address = std::move(address);
  self->monitor(source);
  self->set_down_handler([=](const caf::down_msg& dm) {
    if (dm.source == source.address())
      shut_down(self,
                fmt::format("its source ended ({})", error_text(dm.reason)));
  });
  return {
    [=](stop_atom, const std::string& reason) { shut_down(self, reason); },
    [=](status_atom) {
      admin::ActorStatus st;
      st.set_name(admin_state::name);
      st.set_state("serving");
      (*st.mutable_fields())["listen"] = self->state.address;
      return st.SerializeAsString();
    },
  };
}

} // namespace

caf::expected<caf::actor> start_admin_server(caf::actor_system& sys,
                                             const endpoint& listen,
                                             caf::actor source,
                                             uint16_t& bound_port,
                                             std::string bearer_token) {
  if (!source)
    return make_error(ec::bad_config, "admin: no status source to serve");
  // The handler holds `sys` by reference: the system outlives this actor
  // (its destructor awaits all actors), and the actor stops the front, and
  // joins its thread, before it ends.
  auto front = std::make_shared<http::front>(
    http::front_limits{}, std::move(bearer_token),
    [&sys, source](const http::request& req, const http::reply_fn& reply) {
      route(sys, source, req, reply);
    });
  front->serve_without_token(dashboard::paths());
  // Bind here, on the caller's thread, so a taken port is an error the
  // caller sees (and port 0 is resolved) before anything runs.
  auto port = front->bind(listen);
  if (!port)
    return std::move(port.error());
  bound_port = *port;
  auto address = endpoint{listen.host, bound_port}.to_string();
  front->start();
  log::info(subject, "listens on {}", address);
  return sys.spawn(admin_server_actor, std::move(front), std::move(source),
                   address);
}

} // namespace p2proxy
