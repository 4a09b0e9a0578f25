// p2proxy: one binary, subcommands per ARCHITECTURE §9.
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include <csignal>
#include <malloc.h>
#include <ctime>
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/admin/admin_server.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/identity/identity.hpp"
#include "actors/node/node_supervisor.hpp"
#include "actors/ice/stun_responder.hpp"
#include "actors/server/name_owners.hpp"
#include "actors/server/names_policy.hpp"
#include "actors/server/signal_server.hpp"
#include "actors/signal/tls_channel.hpp"
#include "node/config.hpp"
#include "node/demo.hpp"
#include "node/netcheck.hpp"
#include "node/runtime.hpp"
#include "node/status_command.hpp"
#include "node/wiring.hpp"

using namespace p2proxy;

namespace {

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

endpoint must_parse_endpoint(const std::string& opt, const std::string& text) {
  std::string why;
  auto ep = parse_endpoint(text, why);
  if (!ep)
    throw CLI::ValidationError(opt, fmt::format("'{}': {}", text, why));
  return *ep;
}

/// Where the owners live without --state-dir: beside the server key.
std::string default_state_dir(const std::string& key_file) {
  auto slash = key_file.rfind('/');
  auto dir = slash == std::string::npos ? std::string{"."}
             : slash == 0               ? std::string{"/"}
                                        : key_file.substr(0, slash);
  return dir + "/signal-state";
}

/// Turns SIGHUP into (reload_atom) for `server` until `done`. SIGHUP is
/// blocked in every thread (cmd_signal blocks it before the actor system
/// starts), so this thread takes it with sigtimedwait.
void forward_reloads(const caf::actor& server, const std::atomic<bool>& done) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGHUP);
  timespec tick{0, 200 * 1000 * 1000};
  while (!done) {
    if (sigtimedwait(&set, nullptr, &tick) == SIGHUP) {
      log::info("signal", "SIGHUP: reloads its configuration files");
      caf::anon_send(server, reload_atom::value);
    }
  }
}

struct signal_args {
  std::string listen, token_file, admin, admin_token_file, key, cert;
  std::string state_dir, names_file;
  std::string redis; // redis://HOST:PORT[/DB]: one of a cluster
  uint32_t login_limit = server_options{}.login_burst;
  uint32_t accept_rate = server_options{}.accept_rate;
  std::vector<std::string> stun, turn;
  std::string turn_secret_file, stun_ports;
  uint32_t turn_ttl = 86400;
};

/// --stun-ports "P1,P2": each a PORT (every address) or HOST:PORT.
std::vector<endpoint> parse_stun_ports(const std::string& text) {
  std::vector<endpoint> out;
  size_t at = 0;
  while (at <= text.size()) {
    auto comma = text.find(',', at);
    auto item = text.substr(at, comma == std::string::npos ? std::string::npos
                                                           : comma - at);
    at = comma == std::string::npos ? text.size() + 1 : comma + 1;
    bool digits = !item.empty()
                  && item.find_first_not_of("0123456789") == std::string::npos;
    auto ep = digits && item.size() <= 5
                ? must_parse_endpoint("--stun-ports", "0.0.0.0:" + item)
                : must_parse_endpoint("--stun-ports", item);
    if (digits)
      ep.host.clear();
    if (ep.port == 0)
      throw CLI::ValidationError("--stun-ports", "ports must not be 0");
    out.push_back(ep);
  }
  return out;
}

/// The relay settings handed to nodes; throws on bad flags or secret file.
relay_options make_relay_options(const signal_args& args) {
  relay_options relay;
  for (auto& s : args.stun)
    relay.stun.push_back(must_parse_endpoint("--stun", s));
  for (auto& t : args.turn)
    relay.turn.push_back(must_parse_endpoint("--turn", t));
  if (!args.stun_ports.empty())
    relay.stun_probes = parse_stun_ports(args.stun_ports);
  // Without --stun the server's own first STUN port is the STUN server.
  if (relay.stun.empty() && !relay.stun_probes.empty())
    relay.stun.push_back(relay.stun_probes.front());
  if (!args.turn_secret_file.empty()) {
    if (relay.turn.empty())
      throw CLI::ValidationError("--turn-secret-file",
                                 "needs --turn HOST:PORT");
    relay.turn_secret = read_token_file(args.turn_secret_file);
  } else if (!relay.turn.empty()) {
    log::warn("signal", "hands out TURN servers without credentials (no "
                        "--turn-secret-file): nodes need their own [ice] "
                        "turn user and password");
  }
  if (args.turn_ttl < 60)
    throw CLI::ValidationError("--turn-ttl", "at least 60 seconds");
  relay.turn_ttl = std::chrono::seconds(args.turn_ttl);
  return relay;
}

int cmd_signal(const signal_args& args) {
  server_options opts;
  opts.login_burst = args.login_limit;
  opts.accept_rate = args.accept_rate;
  opts.names.state_dir
    = args.state_dir.empty() ? default_state_dir(args.key) : args.state_dir;
  opts.names.policy_file = args.names_file;
  opts.listen = must_parse_endpoint("--listen", args.listen);
  if (!args.redis.empty()) {
    std::string why;
    auto redis = parse_redis_url(args.redis, why);
    if (!redis)
      throw CLI::ValidationError("--redis",
                                 fmt::format("'{}': {}", args.redis, why));
    cluster_options copts;
    copts.redis = *redis;
    copts.instance = new_instance_id();
    copts.heartbeat = opts.heartbeat;
    opts.cluster = copts;
  }
  std::optional<endpoint> admin_ep;
  if (!args.admin.empty())
    admin_ep = must_parse_endpoint("--admin", args.admin);
  std::string admin_token;
  try {
    if (!args.token_file.empty())
      opts.token = read_token_file(args.token_file);
    opts.relay = make_relay_options(args);
    if (!args.admin_token_file.empty())
      admin_token = read_admin_token_file(args.admin_token_file);
    // Checked here to refuse the start with FILE:LINE on stderr; the
    // DIRECTORY reads both again when it starts.
    if (!opts.cluster)
      name_owners{opts.names.state_dir}.load();
    if (!args.names_file.empty())
      names_policy::load(args.names_file);
    bool created = false;
    auto key = identity::load_or_create(args.key, &created);
    if (created)
      log::info("signal", "created a new server key at {}", args.key);
    opts.tls = std::make_shared<tls_server_credentials>(key, args.cert);
    log::info("signal", "has server id {} (key {}{}{})", opts.tls->id(),
              args.key, args.cert.empty() ? "" : ", certificate ", args.cert);
    if (opts.cluster)
      log::info("signal",
                "is instance {} of the cluster on Redis at {} (every server "
                "of a cluster must have this same key)",
                opts.cluster->instance, opts.cluster->redis.to_string());
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy signal: {}\n", e.what());
    return 1;
  }
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  block_stop_signals();
  std::unique_ptr<stun_responder> stun;
  if (!opts.relay.stun_probes.empty()) {
    std::string why;
    stun = stun_responder::start(opts.relay.stun_probes, why);
    if (!stun) {
      fmt::print(stderr, "p2proxy signal: --stun-ports: {}\n", why);
      return 1;
    }
    log::info("signal", "answers STUN binding requests on UDP {}",
              args.stun_ports);
  }
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
    auto a
      = start_admin_server(sys, *admin_ep, *server, admin_port, admin_token);
    if (!a) {
      fmt::print(stderr, "p2proxy signal: {}\n", error_text(a.error()));
      stop_all(sys, {*server}, "startup failed");
      return 1;
    }
    admin_actor = *a;
    log::info("signal", "serves its admin port on {}:{}", admin_ep->host,
              admin_port);
  }
  std::atomic<bool> done{false};
  std::thread reloads{[&] { forward_reloads(*server, done); }};
  bool by_signal = false;
  auto err = wait_for_stop(sys, {*server}, by_signal);
  done = true;
  reloads.join();
  stop_all(sys, {admin_actor, *server},
           by_signal ? "stopped by signal" : "server ended");
  if (err) {
    fmt::print(stderr, "p2proxy signal: {}\n", error_text(err));
    return 1;
  }
  return 0;
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
  auto sup = sys.spawn(node_supervisor, make_node_settings(nc), id);
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

} // namespace

int main(int argc, char** argv) {
  // Fixed thresholds, before any thread starts: glibc otherwise raises both
  // after the first large buffer is freed (up to 32 and 64 MiB), and a node
  // that once buffered a burst (loss, a path change) keeps those pages
  // (docs/benchmarks.md, "Soak"). Large buffers are mapped and unmapped;
  // a heap's free top goes back once it passes 1 MiB.
  mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
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

  signal_args sa;
  auto signal = app.add_subcommand("signal", "run the signaling server");
  signal->add_option("--listen", sa.listen, "HOST:PORT to accept nodes on")
    ->required();
  signal->add_option("--admin-token-file", sa.admin_token_file,
                     "file (mode 0600) holding the admin port's bearer "
                     "token; required unless --admin is a loopback address");
  signal
    ->add_option("--key", sa.key,
                 "the server key (created with mode 0600 if missing); its id "
                 "is what nodes pin as [signal] server_id")
    ->required();
  signal->add_option("--cert", sa.cert,
                     "a PEM certificate chain for the key (e.g. CA-issued); "
                     "default: a self-signed one");
  signal->add_option("--token-file", sa.token_file,
                     "file (mode 0600) holding the network token nodes must "
                     "present");
  signal->add_option("--admin", sa.admin,
                     "HOST:PORT for the admin port (status, metrics)");
  signal
    ->add_option("--login-limit", sa.login_limit,
                 "failed logins per minute one address may make before its "
                 "unfinished logins are limited (0: no limit)")
    ->capture_default_str();
  signal
    ->add_option("--accept-rate", sa.accept_rate,
                 "new connections accepted per second; more wait in the "
                 "listen queue (0: no bound)")
    ->capture_default_str();
  signal->add_option("--state-dir", sa.state_dir,
                     "where the server keeps export name owners (default: "
                     "signal-state beside --key)");
  signal->add_option("--names", sa.names_file,
                     "TOML policy: which node ids may export which name "
                     "(reloaded on SIGHUP)");
  signal->add_option("--stun", sa.stun,
                     "HOST:PORT of a STUN server handed to every node "
                     "(repeatable; default: the first --stun-ports port)");
  signal->add_option("--turn", sa.turn,
                     "HOST:PORT of a TURN server handed to every node, UDP "
                     "and TCP (repeatable)");
  signal->add_option("--turn-secret-file", sa.turn_secret_file,
                     "file (mode 0600) holding coturn's static-auth-secret: "
                     "nodes get short-lived TURN credentials minted for them");
  signal
    ->add_option("--turn-ttl", sa.turn_ttl,
                 "seconds minted TURN credentials stay valid (refreshed at "
                 "half)")
    ->capture_default_str();
  signal->add_option("--stun-ports", sa.stun_ports,
                     "P1,P2: UDP ports (PORT or HOST:PORT) answering STUN "
                     "binding requests, for nodes and `p2proxy netcheck`");
  signal->add_option("--redis", sa.redis,
                     "redis://HOST:PORT[/DB]: run as one server of a cluster "
                     "sharing presence, name owners and routes in this Redis "
                     "(docs/cluster.md); every server needs the same --key");

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
  std::string status_token;
  status->add_option("--token-file", status_token,
                     "file (mode 0600) holding the admin port's bearer token");

  std::string netcheck_config;
  bool netcheck_json = false;
  auto netcheck = app.add_subcommand(
    "netcheck", "what this host's network allows (UDP, NAT mapping, "
                "relays), with the help of the configured signaling server");
  netcheck
    ->add_option("--config", netcheck_config,
                 "the node's TOML "
                 "configuration")
    ->required();
  netcheck->add_flag("--json", netcheck_json, "print a JSON document");

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
      return cmd_signal(sa);
    if (*node)
      return cmd_node(config, log_level);
    if (*status)
      return run_status_command(status_admin, status_json, status_token);
    if (*demo)
      return run_demo(demo_dir, demo_port);
    if (*netcheck)
      return run_netcheck(netcheck_config, netcheck_json, log_level);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
