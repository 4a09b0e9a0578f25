// p2proxy: one binary, subcommands per ARCHITECTURE §9.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>
#include <algorithm>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include "actors/actors.hpp"
#include "actors/admin/admin_server.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/identity/identity.hpp"
#include "actors/node/node_supervisor.hpp"
#include "actors/server/signal_server.hpp"
#include "node/config.hpp"
#include "node/status_command.hpp"

using namespace p2proxy;

namespace {

struct system_config : caf::actor_system_config {
  system_config() {
    load<caf::io::middleman>();
    // CAF's own logger stays quiet; p2proxy logs through actors/common/log.
    set("logger.verbosity", caf::atom("quiet"));
    set("middleman.enable-automatic-connections", false);
    // Workers block on a condition variable when idle instead of polling
    // with short sleeps: the work-stealing default cost a context switch
    // every 50 µs per idle worker, a sixth of a node's CPU under load.
    set("scheduler.policy", caf::atom("sharing"));
  }
};

/// Blocks SIGINT/SIGTERM in every thread (call before any thread starts) so
/// wait_for_stop can take them with sigtimedwait.
void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

/// Waits until a stop signal arrives or one of `watched` ends. Returns the
/// error a watched actor ended with (none for a signal or a clean end).
caf::error wait_for_stop(caf::actor_system& sys,
                         const std::vector<caf::actor>& watched,
                         bool& by_signal) {
  caf::scoped_actor self{sys};
  for (auto& w : watched)
    self->monitor(w);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  timespec tick{0, 200 * 1000 * 1000};
  for (;;) {
    if (sigtimedwait(&set, nullptr, &tick) > 0) {
      by_signal = true;
      return caf::none;
    }
    caf::error result;
    bool ended = false;
    self->receive(
      [&](caf::down_msg& dm) {
        ended = true;
        result = dm.reason;
      },
      caf::after(std::chrono::milliseconds(0)) >> [] {});
    if (ended)
      return result == caf::exit_reason::normal ? caf::error{} : result;
  }
}

/// Sends (stop_atom) to each actor and waits up to 10 s for all to end.
void stop_all(caf::actor_system& sys, const std::vector<caf::actor>& actors,
              const std::string& reason) {
  caf::scoped_actor self{sys};
  size_t alive = 0;
  for (auto& a : actors) {
    if (!a)
      continue;
    self->monitor(a);
    self->send(a, stop_atom::value, reason);
    ++alive;
  }
  bool timed_out = false;
  while (alive > 0 && !timed_out)
    self->receive([&](caf::down_msg&) { --alive; },
                  caf::after(std::chrono::seconds(10)) >>
                    [&] { timed_out = true; });
  if (timed_out)
    log::warn("p2proxy", "gave up waiting for {} actor(s) to stop", alive);
}

void apply_log_level(const std::string& text) {
  if (text.empty())
    return;
  log::level lvl;
  if (!log::parse_level(text, lvl))
    throw CLI::ValidationError(
      "--log-level", "expected trace, debug, info, warn, error or off");
  log::set_level(lvl);
}

int cmd_keygen(const std::string& out) {
  try {
    auto id = identity::generate();
    id.save(out);
    fmt::print("{}\n", id.node_id());
    fmt::print(stderr, "p2proxy keygen: wrote {} (mode 0600)\n", out);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy keygen: {}\n", e.what());
    return 1;
  }
}

int cmd_id(const std::string& key) {
  try {
    fmt::print("{}\n", identity::load(key).node_id());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy id: {}\n", e.what());
    return 1;
  }
}

std::string read_token_file(const std::string& path) {
  std::ifstream in{path};
  if (!in)
    throw std::runtime_error(fmt::format("cannot read the token file {}: {}",
                                         path, std::strerror(errno)));
  std::string token((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  while (!token.empty()
         && std::isspace(static_cast<unsigned char>(token.back())))
    token.pop_back();
  if (token.empty())
    throw std::runtime_error(fmt::format("the token file {} is empty", path));
  return token;
}

endpoint must_parse_endpoint(const std::string& opt, const std::string& text) {
  std::string why;
  auto ep = parse_endpoint(text, why);
  if (!ep)
    throw CLI::ValidationError(opt, fmt::format("'{}': {}", text, why));
  return *ep;
}

int cmd_signal(const std::string& listen, const std::string& token_file,
               const std::string& admin, uint32_t login_limit) {
  server_options opts;
  opts.login_burst = login_limit;
  opts.listen = must_parse_endpoint("--listen", listen);
  std::optional<endpoint> admin_ep;
  if (!admin.empty())
    admin_ep = must_parse_endpoint("--admin", admin);
  try {
    if (!token_file.empty())
      opts.token = read_token_file(token_file);
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy signal: {}\n", e.what());
    return 1;
  }
  block_stop_signals();
  system_config cfg;
  caf::actor_system sys{cfg};
  uint16_t port = 0;
  auto server = start_signal_server(sys, opts, port);
  if (!server) {
    fmt::print(stderr, "p2proxy signal: {}\n", error_text(server.error()));
    return 1;
  }
  caf::actor admin_actor;
  if (admin_ep) {
    uint16_t admin_port = 0;
    auto a = start_admin_server(sys, *admin_ep, *server, admin_port);
    if (!a) {
      fmt::print(stderr, "p2proxy signal: {}\n", error_text(a.error()));
      stop_all(sys, {*server}, "startup failed");
      return 1;
    }
    admin_actor = *a;
    log::info("signal", "serves its admin port on {}:{}", admin_ep->host,
              admin_port);
  }
  bool by_signal = false;
  auto err = wait_for_stop(sys, {*server}, by_signal);
  stop_all(sys, {admin_actor, *server},
           by_signal ? "stopped by signal" : "server ended");
  if (err) {
    fmt::print(stderr, "p2proxy signal: {}\n", error_text(err));
    return 1;
  }
  return 0;
}

std::shared_ptr<const identity> node_identity(const std::string& key_file) {
  bool created = false;
  auto id = identity::load_or_create(key_file, &created);
  if (created)
    log::info("node", "created a new node key at {}", key_file);
  return std::make_shared<identity>(std::move(id));
}

int cmd_node(const std::string& config_path, const std::string& log_level) {
  node_config nc;
  std::shared_ptr<const identity> id;
  try {
    nc = load_node_config(config_path);
    log::set_level(nc.log_level);
    apply_log_level(log_level); // the command line wins over the file
    id = node_identity(nc.key_file);
  } catch (const CLI::Error&) {
    throw;
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy node: {}\n", e.what());
    return 1;
  }
  block_stop_signals();
  system_config cfg;
  caf::actor_system sys{cfg};
  auto sup = sys.spawn(node_supervisor, nc, id);
  bool by_signal = false;
  auto err = wait_for_stop(sys, {sup}, by_signal);
  if (by_signal)
    stop_all(sys, {sup}, "stopped by signal");
  if (err) {
    fmt::print(stderr, "p2proxy node: {}\n", error_text(err));
    return 1;
  }
  return 0;
}

/// Shows the two demo nodes finding each other: the viewer looks up the
/// sample service and probes the camera node through the signaling server.
/// Bounded: 10 tries.
void demo_check_tunnel(caf::actor_system& sys, const caf::actor& viewer,
                       const std::string& camera_id) {
  caf::scoped_actor self{sys};
  std::string last_error;
  for (int attempt = 0; attempt < 10; ++attempt) {
    bool found = false;
    self
      ->request(viewer, std::chrono::seconds(6), lookup_atom::value,
                std::string{"status-page"})
      .receive(
        [&](const std::vector<std::string>& ids) {
          found = std::find(ids.begin(), ids.end(), camera_id) != ids.end();
          if (!found)
            last_error = "status-page is not registered yet";
        },
        [&](caf::error& err) { last_error = error_text(err); });
    if (found) {
      fmt::print("  viewer-host looked up status-page: exported by {}\n",
                 camera_id);
      self
        ->request(viewer, std::chrono::seconds(6), probe_atom::value, camera_id)
        .receive(
          [&](uint64_t rtt_us) {
            fmt::print("  viewer-host probed camera-host through the "
                       "signaling server: {:.2f} ms round trip\n",
                       rtt_us / 1000.0);
          },
          [&](caf::error& err) {
            fmt::print("  probe failed: {}\n", error_text(err));
          });
      std::fflush(stdout);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  fmt::print("  viewer-host could not look up status-page: {}\n", last_error);
  std::fflush(stdout);
}

int cmd_demo(const std::string& dir_opt, uint16_t base_port) {
  namespace fs = std::filesystem;
  auto dir = dir_opt.empty() ? fs::temp_directory_path()
                                 / fmt::format("p2proxy-demo-{}", ::getuid())
                             : fs::path{dir_opt};
  std::error_code ec_;
  fs::create_directories(dir, ec_);
  ::chmod(dir.c_str(), 0700);
  block_stop_signals();
  system_config cfg;
  caf::actor_system sys{cfg};
  server_options so;
  so.listen = endpoint{"127.0.0.1", base_port};
  so.token = "demo-network";
  uint16_t port = 0;
  auto server = start_signal_server(sys, so, port);
  if (!server) {
    fmt::print(stderr, "p2proxy demo: {} (pick other ports with --port)\n",
               error_text(server.error()));
    return 1;
  }
  uint16_t server_admin_port = 0;
  auto server_admin = start_admin_server(
    sys, endpoint{"127.0.0.1", static_cast<uint16_t>(base_port + 3)}, *server,
    server_admin_port);
  if (!server_admin) {
    fmt::print(stderr, "p2proxy demo: {} (pick other ports with --port)\n",
               error_text(server_admin.error()));
    stop_all(sys, {*server}, "startup failed");
    return 1;
  }
  std::vector<caf::actor> nodes;
  std::vector<std::string> ids;
  const char* names[] = {"camera-host", "viewer-host"};
  for (int i = 0; i < 2; ++i) {
    node_config nc;
    nc.source = "demo";
    nc.key_file = (dir / fmt::format("{}.key", names[i])).string();
    nc.signal_server = endpoint{"127.0.0.1", port};
    nc.token = so.token;
    nc.admin_enabled = true;
    nc.admin_listen
      = endpoint{"127.0.0.1", static_cast<uint16_t>(base_port + 1 + i)};
    if (i == 0) {
      // The sample service: camera-host's own status page (its admin
      // port), exported as "status-page" to every node of the network.
      export_config ex;
      ex.name = "status-page";
      ex.target = nc.admin_listen;
      ex.protocol = "tcp";
      ex.allow = {"*"};
      nc.exports.push_back(ex);
    } else {
      // viewer-host's local clients reach it through the tunnel.
      listen_config l;
      l.bind = endpoint{"127.0.0.1", static_cast<uint16_t>(base_port + 4)};
      l.protocol = "tcp";
      l.resource = "status-page";
      nc.listens.push_back(l);
    }
    std::shared_ptr<const identity> id;
    try {
      id = node_identity(nc.key_file);
    } catch (const std::exception& e) {
      fmt::print(stderr, "p2proxy demo: {}\n", e.what());
      return 1;
    }
    ids.push_back(id->node_id());
    nodes.push_back(sys.spawn(node_supervisor, nc, id));
  }
  fmt::print("p2proxy demo: signaling server on 127.0.0.1:{}; who is online:\n"
             "    p2proxy status --admin 127.0.0.1:{}\n",
             port, server_admin_port);
  for (int i = 0; i < 2; ++i)
    fmt::print("  node {} ({}): p2proxy status --admin 127.0.0.1:{}\n",
               names[i], ids[i], base_port + 1 + i);
  fmt::print("  {} exports its status page as 'status-page'; {} carries it\n"
             "  through an encrypted peer-to-peer session to a local port.\n"
             "  Open this, fetched through the tunnel:\n"
             "    curl http://127.0.0.1:{}/v1/status\n"
             "  and watch the session: p2proxy status --admin 127.0.0.1:{}\n"
             "Ctrl-C ends the demo.\n",
             names[0], names[1], base_port + 4, base_port + 2);
  std::fflush(stdout);
  demo_check_tunnel(sys, nodes[1], ids[0]);
  auto watched = nodes;
  watched.push_back(*server);
  bool by_signal = false;
  auto err = wait_for_stop(sys, watched, by_signal);
  stop_all(sys, nodes, "demo over");
  stop_all(sys, {*server_admin, *server}, "demo over");
  if (err) {
    fmt::print(stderr, "p2proxy demo: {}\n", error_text(err));
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"p2proxy: reach TCP services behind NATs through encrypted "
               "peer-to-peer sessions"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string{"p2proxy " P2PROXY_VERSION});
  std::string log_level;
  app
    .add_option("--log-level", log_level,
                "trace, debug, info, warn, error or off")
    ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  std::string key_out;
  auto keygen = app.add_subcommand("keygen", "create a node key (mode 0600) "
                                             "and print its node id");
  keygen->add_option("--out", key_out, "where to write the key")->required();

  std::string key_in;
  auto id = app.add_subcommand("id", "print the node id of a key");
  id->add_option("--key", key_in, "the key file")->required();

  std::string listen, token_file, signal_admin;
  auto signal = app.add_subcommand("signal", "run the signaling server");
  signal->add_option("--listen", listen, "HOST:PORT to accept nodes on")
    ->required();
  signal->add_option("--token-file", token_file,
                     "file holding the network token nodes must present");
  signal->add_option("--admin", signal_admin,
                     "HOST:PORT for the admin port (status, metrics)");
  uint32_t login_limit = server_options{}.login_burst;
  signal
    ->add_option("--login-limit", login_limit,
                 "connections per minute one address may open (0: no "
                 "limit)")
    ->capture_default_str();

  std::string config;
  auto node = app.add_subcommand("node", "run a node");
  node->add_option("--config", config, "the node's TOML configuration")
    ->required();

  std::string status_admin = "127.0.0.1:7070";
  bool status_json = false;
  auto status = app.add_subcommand("status", "show a node's state from its "
                                             "admin port");
  status->add_option("--admin", status_admin, "the admin port, HOST:PORT")
    ->capture_default_str();
  status->add_flag("--json", status_json, "print the JSON document");

  std::string demo_dir;
  uint16_t demo_port = 17000;
  auto demo = app.add_subcommand("demo", "run a signaling server and two "
                                         "nodes on this machine");
  demo->add_option("--dir", demo_dir, "where the demo keeps its node keys");
  demo
    ->add_option("--port", demo_port,
                 "first of five loopback ports: signal, node admin x2, server "
                 "admin, tunnel")
    ->capture_default_str();

  try {
    app.parse(argc, argv);
    apply_log_level(log_level);
    if (*keygen)
      return cmd_keygen(key_out);
    if (*id)
      return cmd_id(key_in);
    if (*signal)
      return cmd_signal(listen, token_file, signal_admin, login_limit);
    if (*node)
      return cmd_node(config, log_level);
    if (*status)
      return run_status_command(status_admin, status_json);
    if (*demo)
      return cmd_demo(demo_dir, demo_port);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
