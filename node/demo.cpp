#include "node/demo.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/actors.hpp"
#include "actors/admin/admin_server.hpp"
#include "actors/common/error.hpp"
#include "actors/node/node_supervisor.hpp"
#include "actors/server/signal_server.hpp"
#include "actors/signal/tls_channel.hpp"
#include "node/config.hpp"
#include "node/runtime.hpp"
#include "node/wiring.hpp"

namespace p2proxy {

namespace {

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
                       static_cast<double>(rtt_us) / 1000.0);
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

} // namespace

int run_demo(const std::string& dir_opt, uint16_t base_port) {
  namespace fs = std::filesystem;
  auto dir = dir_opt.empty() ? fs::temp_directory_path()
                                 / fmt::format("p2proxy-demo-{}", ::getuid())
                             : fs::path{dir_opt};
  std::error_code mkdir_error;
  fs::create_directories(dir, mkdir_error);
  ::chmod(dir.c_str(), 0700);
  block_stop_signals();
  system_config cfg;
  caf::actor_system sys{cfg};
  server_options so;
  so.listen = endpoint{"127.0.0.1", base_port};
  so.token = "demo-network";
  try {
    auto server_key = (dir / "signal-server.key").string();
    so.tls = std::make_shared<tls_server_credentials>(
      identity::load_or_create(server_key));
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy demo: {}\n", e.what());
    return 1;
  }
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
  std::vector<std::shared_ptr<const identity>> keys;
  const char* names[] = {"camera-host", "viewer-host"};
  auto key_file
    = [&](int i) { return (dir / fmt::format("{}.key", names[i])).string(); };
  // Both identities first: the camera's export names the viewer's id.
  for (int i = 0; i < 2; ++i) {
    try {
      keys.push_back(node_identity(key_file(i)));
    } catch (const std::exception& e) {
      fmt::print(stderr, "p2proxy demo: {}\n", e.what());
      stop_all(sys, {*server_admin, *server}, "startup failed");
      return 1;
    }
    ids.push_back(keys.back()->node_id());
  }
  for (int i = 0; i < 2; ++i) {
    node_config nc;
    nc.source = "demo";
    nc.key_file = key_file(i);
    nc.signal_server = endpoint{"127.0.0.1", port};
    nc.server_id = so.tls->id(); // the demo's nodes pin its server
    nc.token = so.token;
    nc.admin_enabled = true;
    nc.admin_listen
      = endpoint{"127.0.0.1", static_cast<uint16_t>(base_port + 1 + i)};
    if (i == 0) {
      // The sample service: camera-host's own status page (its admin
      // port), exported as "status-page" to viewer-host alone: an admin
      // page is no page for every node of the network.
      export_config ex;
      ex.name = "status-page";
      ex.target = nc.admin_listen;
      ex.protocol = "tcp";
      ex.allow = {ids[1]};
      nc.exports.push_back(ex);
    } else {
      // viewer-host's local clients reach it through the tunnel.
      listen_config l;
      l.bind = endpoint{"127.0.0.1", static_cast<uint16_t>(base_port + 4)};
      l.protocol = "tcp";
      l.resource = "status-page";
      nc.listens.push_back(l);
    }
    nodes.push_back(
      sys.spawn(node_supervisor, make_node_settings(nc), keys[i]));
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

} // namespace p2proxy
