#include "actors/admin/admin_server.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
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

// --- p2proxy status ----------------------------------------------------------

namespace {

/// Left-aligned columns; the last column is not padded.
class text_table {
public:
  explicit text_table(std::vector<std::string> header)
    : rows_{std::move(header)} {}

  void add(std::vector<std::string> row) {
    rows_.push_back(std::move(row));
  }

  std::string render(std::string_view indent) const {
    std::vector<size_t> widths;
    for (auto& row : rows_) {
      widths.resize(std::max(widths.size(), row.size()), 0);
      for (size_t i = 0; i < row.size(); ++i)
        widths[i] = std::max(widths[i], row[i].size());
    }
    std::string out;
    for (auto& row : rows_) {
      std::string line{indent};
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size())
          line += std::string(widths[i] - row[i].size() + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ')
        line.pop_back();
      out += line;
      out += '\n';
    }
    return out;
  }

private:
  std::vector<std::vector<std::string>> rows_;
};

std::string or_dash(const std::string& text) {
  return text.empty() ? "-" : text;
}

std::string format_uptime(uint64_t seconds) {
  auto d = seconds / 86400;
  auto h = seconds / 3600 % 24;
  auto m = seconds / 60 % 60;
  auto s = seconds % 60;
  if (d > 0)
    return fmt::format("{}d {:02}h {:02}m {:02}s", d, h, m, s);
  if (h > 0)
    return fmt::format("{}h {:02}m {:02}s", h, m, s);
  if (m > 0)
    return fmt::format("{}m {:02}s", m, s);
  return fmt::format("{}s", s);
}

std::string uptime_line(uint64_t seconds, const std::string& started) {
  if (started.empty())
    return format_uptime(seconds);
  return fmt::format("{} (since {})", format_uptime(seconds), started);
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& xs,
                 std::string_view sep) {
  std::string out;
  for (auto& x : xs) {
    if (!out.empty())
      out += sep;
    out += x;
  }
  return out;
}

std::string describe_actors(
  const google::protobuf::RepeatedPtrField<admin::ActorStatus>& actors) {
  if (actors.empty())
    return "";
  text_table t{{"NAME", "STATE", "FIELDS"}};
  for (auto& a : actors) {
    // A protobuf map has no order; sorted keys keep the output stable.
    std::vector<std::pair<std::string, std::string>> fields{a.fields().begin(),
                                                            a.fields().end()};
    std::sort(fields.begin(), fields.end());
    std::string text;
    for (auto& [k, v] : fields) {
      if (!text.empty())
        text += ' ';
      text += fmt::format("{}={}", k, v);
    }
    t.add({or_dash(a.name()), or_dash(a.state()), text});
  }
  return "\nactors\n" + t.render("  ");
}

std::string describe_node(const admin::NodeStatus& n) {
  text_table head{{"node", n.node_id()}};
  head.add({"version", or_dash(n.version())});
  head.add({"uptime", uptime_line(n.uptime_seconds(), n.started())});
  std::string out = head.render("");
  if (n.has_signal()) {
    auto& s = n.signal();
    text_table t{{"server", or_dash(s.server())}};
    t.add({"state", or_dash(s.state())});
    t.add({"connected since", or_dash(s.connected_since())});
    t.add({"reconnects", std::to_string(s.reconnects())});
    t.add({"last error", or_dash(s.last_error())});
    t.add(
      {"frames in/out", fmt::format("{} / {}", s.frames_in(), s.frames_out())});
    if (s.login_failures() > 0)
      t.add({"login failures", std::to_string(s.login_failures())});
    if (!s.next_attempt().empty())
      t.add({"next attempt", s.next_attempt()});
    if (!s.observed_address().empty())
      t.add({"seen as", s.observed_address()});
    out += "\nsignal link\n" + t.render("  ");
  }
  out += "\nexports\n";
  if (n.exports().empty()) {
    out += "  none\n";
  } else {
    text_table t{{"NAME", "", "TARGET", "PROTOCOL", "ALLOW"}};
    for (auto& e : n.exports())
      t.add({e.name(), "->", or_dash(e.target()), or_dash(e.protocol()),
             e.allow().empty() ? "nobody" : join(e.allow(), ",")});
    out += t.render("  ");
  }
  if (n.has_sessions()) {
    auto& sl = n.sessions();
    out += "\nsessions\n";
    if (sl.sessions().empty()) {
      out += "  none\n";
    } else {
      text_table t{
        {"PEER", "STATE", "PATH", "RTT", "SENT", "RECEIVED", "STREAMS"}};
      for (auto& x : sl.sessions()) {
        auto path
          = x.local_candidate_type().empty()
              ? std::string{"-"}
              : fmt::format("{} {} -> {} {}", x.local_candidate_type(),
                            x.local_address(), x.remote_candidate_type(),
                            x.remote_address());
        t.add({x.peer(), or_dash(x.state()), path,
               fmt::format("{:.1f} ms", x.rtt_ms()),
               std::to_string(x.bytes_sent()),
               std::to_string(x.bytes_received()),
               std::to_string(x.open_streams())});
      }
      out += t.render("  ");
    }
  }
  out
    += fmt::format("\nchannels ({} open; ended: {} ok, {} failed)\n",
                   n.channels_size(), n.channels_opened(), n.channels_failed());
  if (!n.channels().empty()) {
    text_table t{{"SIDE", "RESOURCE", "CLIENT", "STATE", "IN", "OUT", "AGE"}};
    for (auto& c : n.channels())
      t.add({or_dash(c.side()), or_dash(c.resource()), or_dash(c.client()),
             or_dash(c.state()), std::to_string(c.bytes_in()),
             std::to_string(c.bytes_out()),
             fmt::format("{} s", c.age_ms() / 1000)});
    out += t.render("  ");
  }
  if (n.has_process()) {
    auto& p = n.process();
    out += fmt::format("\nprocess: {} open fds, {} actors, {} MiB resident\n",
                       p.open_fds(), p.running_actors(),
                       p.rss_bytes() / (1024 * 1024));
  }
  out += describe_actors(n.actors());
  return out;
}

std::string describe_server(const admin::ServerStatus& s) {
  text_table head{{"version", or_dash(s.version())}};
  head.add({"uptime", uptime_line(s.uptime_seconds(), s.started())});
  std::string out = "signaling server\n" + head.render("");
  out += fmt::format("\nnodes online ({})\n", s.nodes_size());
  if (s.nodes().empty()) {
    out += "  none\n";
  } else {
    text_table t{{"NODE ID", "ADDRESS", "SINCE", "EXPORTS"}};
    for (auto& n : s.nodes())
      t.add({n.node_id(), or_dash(n.address()), or_dash(n.since()),
             n.exports().empty() ? "-" : join(n.exports(), ",")});
    out += t.render("  ");
  }
  text_table c{{"connections", std::to_string(s.connections())}};
  c.add({"dropped connections", std::to_string(s.dropped_connections())});
  c.add({"logins", std::to_string(s.logins())});
  c.add({"login failures", std::to_string(s.login_failures())});
  c.add(
    {"frames in/out", fmt::format("{} / {}", s.frames_in(), s.frames_out())});
  out += "\ncounters\n" + c.render("  ");
  out += describe_actors(s.actors());
  return out;
}

} // namespace

std::optional<std::string> describe_status(std::string_view json,
                                           std::string& why) {
  google::protobuf::util::JsonParseOptions opts;
  // A newer node may add fields; an older `status` still shows the rest.
  opts.ignore_unknown_fields = true;
  google::protobuf::StringPiece input{json.data(), json.size()};
  admin::NodeStatus node;
  auto st = google::protobuf::util::JsonStringToMessage(input, &node, opts);
  if (!st.ok()) {
    why = st.ToString();
    return std::nullopt;
  }
  if (!node.node_id().empty())
    return describe_node(node);
  admin::ServerStatus server;
  st = google::protobuf::util::JsonStringToMessage(input, &server, opts);
  if (!st.ok()) {
    why = st.ToString();
    return std::nullopt;
  }
  return describe_server(server);
}

int run_status_command(const std::string& admin, bool json) {
  std::string why;
  auto ep = parse_endpoint(admin, why);
  if (!ep) {
    fmt::print(stderr, "p2proxy status: bad admin address '{}': {}\n", admin,
               why);
    return 2;
  }
  auto where = ep->to_string();
  httplib::Client cli{ep->host, ep->port};
  cli.set_connection_timeout(3, 0);
  cli.set_read_timeout(3, 0);
  cli.set_write_timeout(3, 0);
  auto res = cli.Get("/v1/status");
  if (!res) {
    auto err = res.error();
    std::string reason;
    switch (err) {
      case httplib::Error::Connection:
        reason = "connection refused";
        break;
      case httplib::Error::ConnectionTimeout:
        reason = "timed out";
        break;
      default:
        reason = httplib::to_string(err);
    }
    fmt::print(stderr,
               "p2proxy status: cannot reach the admin port at {} ({}): is "
               "the node running with [admin] listen = \"{}\"?\n",
               where, reason, where);
    return 2;
  }
  if (res->status != 200) {
    fmt::print(stderr, "p2proxy status: the admin port at {} answered {}: {}\n",
               where, res->status, res->body);
    return 1;
  }
  if (json) {
    fmt::print("{}", res->body);
    if (res->body.empty() || res->body.back() != '\n')
      fmt::print("\n");
    return 0;
  }
  auto text = describe_status(res->body, why);
  if (!text) {
    fmt::print(stderr,
               "p2proxy status: the admin port at {} sent no status document: "
               "{}\n",
               where, why);
    return 1;
  }
  fmt::print("{}", *text);
  return 0;
}

} // namespace p2proxy
