#include "actors/admin/admin_server.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <httplib.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/json.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "admin_server";
constexpr size_t max_payload = 64 * 1024;
constexpr time_t read_timeout_seconds = 5;
constexpr time_t write_timeout_seconds = 5;
constexpr auto source_timeout = std::chrono::seconds(3);
constexpr size_t worker_threads = 4;
constexpr const char* json_type = "application/json";
constexpr const char* metrics_type = "text/plain; version=0.0.4";

std::string error_json(std::string_view text) {
  return "{\"error\":" + json_quote(text) + "}";
}

bool known_path(const std::string& path) {
  return path == "/v1/status" || path == "/metrics"
         || path.rfind("/v1/lookup/", 0) == 0
         || path.rfind("/v1/probe/", 0) == 0
         || path.rfind("/v1/debug/pump/", 0) == 0;
}

/// GET /v1/debug/pump/NODE-ID?resource=echo&bytes=N&streams=K: a test
/// transfer through a real session (only with [debug] test_resources).
void answer_pump(caf::actor_system& sys, const caf::actor& source,
                 const httplib::Request& req, httplib::Response& res) {
  auto param = [&](const char* name, const char* dflt) {
    return req.has_param(name) ? req.get_param_value(name) : std::string{dflt};
  };
  uint64_t bytes = 0;
  uint32_t streams = 0;
  try {
    bytes = std::stoull(param("bytes", "1048576"));
    streams = static_cast<uint32_t>(std::stoul(param("streams", "1")));
  } catch (const std::exception&) {
    res.status = 400;
    res.set_content(error_json("bytes and streams must be numbers"), json_type);
    return;
  }
  caf::scoped_actor self{sys};
  self
    ->request(source, std::chrono::minutes(30), pump_atom::value,
              req.matches[1].str(), param("resource", "echo"), bytes, streams)
    .receive(
      [&](std::string& body) {
        res.status = 200;
        res.set_content(std::move(body), json_type);
      },
      [&](caf::error& err) {
        res.status = err.category() == caf::atom("p2proxy")
                         && err.code() == static_cast<uint8_t>(ec::bad_config)
                       ? 404
                       : 502;
        res.set_content(error_json(error_text(err)), json_type);
      });
}

/// Look-ups and probes wait on the signaling server (5 s by default), so
/// they get longer than the status documents.
constexpr auto signal_request_timeout = std::chrono::seconds(8);

/// GET /v1/lookup/NAME: which nodes export NAME, through the SIGNAL LINK.
void answer_lookup(caf::actor_system& sys, const caf::actor& source,
                   const std::string& name, httplib::Response& res) {
  caf::scoped_actor self{sys};
  self->request(source, signal_request_timeout, lookup_atom::value, name)
    .receive(
      [&](const std::vector<std::string>& ids) {
        std::string list;
        for (auto& id : ids)
          list += (list.empty() ? "" : ",") + json_quote(id);
        res.status = 200;
        res.set_content(fmt::format("{{\"name\":{},\"nodeIds\":[{}]}}",
                                    json_quote(name), list),
                        json_type);
      },
      [&](caf::error& err) {
        res.status = 503;
        res.set_content(error_json(error_text(err)), json_type);
      });
}

/// GET /v1/probe/NODE-ID: a Signal to that node and its echo, through the
/// signaling server; answers the round trip.
void answer_probe(caf::actor_system& sys, const caf::actor& source,
                  const std::string& node, httplib::Response& res) {
  caf::scoped_actor self{sys};
  self->request(source, signal_request_timeout, probe_atom::value, node)
    .receive(
      [&](uint64_t rtt_us) {
        res.status = 200;
        res.set_content(fmt::format("{{\"nodeId\":{},\"rttMicroseconds\":{}}}",
                                    json_quote(node), rtt_us),
                        json_type);
      },
      [&](caf::error& err) {
        res.status = err.code() == static_cast<uint8_t>(ec::peer_offline)
                         && err.category() == caf::atom("p2proxy")
                       ? 404
                       : 503;
        res.set_content(error_json(error_text(err)), json_type);
      });
}

/// Asks `source` for its text on behalf of one HTTP request. Runs on an
/// httplib worker, so it talks to actors only through a scoped_actor.
template <class Atom>
void ask_source(caf::actor_system& sys, const caf::actor& source, Atom atom,
                const char* content_type, httplib::Response& res) {
  caf::scoped_actor self{sys};
  self->request(source, source_timeout, atom)
    .receive(
      [&](std::string& body) {
        res.status = 200;
        res.set_content(std::move(body), content_type);
      },
      [&](caf::error& err) {
        res.status = 503;
        res.set_content(error_json(error_text(err)), json_type);
      });
}

/// The HTTP server and the thread running its accept loop.
struct http_runner {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> finished{false};

  /// Idempotent; blocks until every handler has returned.
  void stop() {
    if (!thread.joinable())
      return;
    // listen_after_bind marks the server running only once its loop starts;
    // a stop() before that would be lost and the join below would hang.
    while (!server.is_running() && !finished.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!finished.load())
      server.stop();
    thread.join();
  }
};

void install_routes(httplib::Server& server, caf::actor_system& sys,
                    caf::actor source) {
  // The handlers hold `sys` by reference: the system outlives this actor
  // (its destructor awaits all actors), and the actor joins the HTTP
  // threads before it ends.
  server.Get("/v1/status",
             [&sys, source](const httplib::Request&, httplib::Response& res) {
               ask_source(sys, source, get_atom::value, json_type, res);
             });
  server.Get("/metrics",
             [&sys, source](const httplib::Request&, httplib::Response& res) {
               ask_source(sys, source, metrics_atom::value, metrics_type, res);
             });
  server.Get(
    R"(/v1/lookup/([^/]{1,255}))",
    [&sys, source](const httplib::Request& req, httplib::Response& res) {
      answer_lookup(sys, source, req.matches[1].str(), res);
    });
  server.Get(
    R"(/v1/probe/([^/]{1,255}))",
    [&sys, source](const httplib::Request& req, httplib::Response& res) {
      answer_probe(sys, source, req.matches[1].str(), res);
    });
  server.Get(
    R"(/v1/debug/pump/([^/]{1,255}))",
    [&sys, source](const httplib::Request& req, httplib::Response& res) {
      answer_pump(sys, source, req, res);
    });
  auto wrong_method = [](const httplib::Request& req, httplib::Response& res) {
    if (known_path(req.path)) {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content(error_json(fmt::format("method not allowed: {} {}",
                                             req.method, req.path)),
                      json_type);
    } else {
      res.status = 404;
    }
  };
  server.Post(".*", wrong_method);
  server.Put(".*", wrong_method);
  server.Patch(".*", wrong_method);
  server.Delete(".*", wrong_method);
  server.Options(".*", wrong_method);
  // Called for every answer >= 400; fills in a JSON body where the router
  // or the request parser left it empty.
  server.set_error_handler(
    [](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty())
        return;
      std::string text;
      switch (res.status) {
        case 404:
          text = fmt::format("not found: {}", req.path);
          break;
        case 400:
          text = "bad request";
          break;
        case 405:
          text = fmt::format("method not allowed: {}", req.method);
          break;
        case 413:
          text = "payload too large";
          break;
        case 414:
          text = "request line too long";
          break;
        default:
          text = fmt::format("HTTP status {}", res.status);
      }
      res.set_content(error_json(text), json_type);
    });
  server.set_logger(
    [](const httplib::Request& req, const httplib::Response& res) {
      log::debug(subject, "answers {} {} with {}", req.method, req.path,
                 res.status);
    });
  // httplib's default sets SO_REUSEPORT, which would let a second node bind
  // the same admin port silently and share its requests; SO_REUSEADDR alone
  // still allows a quick restart over connections in TIME_WAIT.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.set_payload_max_length(max_payload);
  server.set_read_timeout(read_timeout_seconds, 0);
  server.set_write_timeout(write_timeout_seconds, 0);
  server.new_task_queue
    = [] { return new httplib::ThreadPool(worker_threads); };
}

struct admin_state {
  std::shared_ptr<http_runner> runner;
  std::string address;

  // A stateful actor destroys its state when it ends for any reason, so
  // this is the one place that guarantees the HTTP threads are gone.
  ~admin_state() {
    if (runner)
      runner->stop();
  }

  static inline const char* name = "admin_server";
};

using admin_actor = caf::stateful_actor<admin_state>;

void shut_down(admin_actor* self, const std::string& why) {
  auto& st = self->state;
  log::info(subject, "stops serving {}: {}", st.address, why);
  if (st.runner)
    st.runner->stop();
  self->quit();
}

caf::behavior admin_server_actor(admin_actor* self,
                                 std::shared_ptr<http_runner> runner,
                                 caf::actor source, std::string address) {
  self->state.runner = std::move(runner);
  self->state.address = std::move(address);
  self->monitor(source);
  self->set_down_handler([=](const caf::down_msg& dm) {
    if (dm.source == source.address())
      shut_down(self,
                fmt::format("its source ended ({})", error_text(dm.reason)));
  });
  return {
    [=](stop_atom, const std::string& reason) { shut_down(self, reason); },
    [=](stop_atom) { shut_down(self, "stop requested"); },
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
                                             uint16_t& bound_port) {
  if (!source)
    return make_error(ec::bad_config, "admin: no status source to serve");
  auto runner = std::make_shared<http_runner>();
  install_routes(runner->server, sys, source);
  // Bind here, on the caller's thread, so a taken port is an error the
  // caller sees (and port 0 is resolved) before anything runs.
  errno = 0;
  int port = listen.port;
  if (listen.port == 0)
    port = runner->server.bind_to_any_port(listen.host);
  else if (!runner->server.bind_to_port(listen.host, listen.port))
    port = -1;
  if (port < 0) {
    // Only errors of socket/bind/listen explain a failure; a failed name
    // look-up leaves whatever errno its internals happened to set.
    auto err = errno;
    bool socket_error = err == EADDRINUSE || err == EACCES
                        || err == EADDRNOTAVAIL || err == EAFNOSUPPORT
                        || err == EMFILE || err == ENFILE || err == EINVAL;
    auto why = socket_error ? std::string{std::strerror(err)}
                            : std::string{"cannot resolve the host or bind it"};
    return make_error(
      ec::io_failure,
      fmt::format("admin: cannot listen on {}: {}", listen.to_string(), why));
  }
  bound_port = static_cast<uint16_t>(port);
  auto address = endpoint{listen.host, bound_port}.to_string();
  auto* r = runner.get();
  // The thread only touches the runner, which the actor's state keeps alive
  // until it has joined the thread.
  runner->thread = std::thread([r, address] {
    if (!r->server.listen_after_bind())
      log::error(subject, "stops accepting on {}: accept failed", address);
    r->finished.store(true);
  });
  log::info(subject, "listens on {}", address);
  return sys.spawn(admin_server_actor, std::move(runner), std::move(source),
                   address);
}

} // namespace p2proxy
