#include "node/wiring.hpp"

#include <fmt/format.h>

#include "actors/common/log.hpp"
#include "actors/ice/provided_servers.hpp"
#include "actors/quic/quic_connection.hpp"

namespace p2proxy {

provided_servers::snapshot servers_from_login(const signal::IceServers& servers,
                                              const std::string& server_host) {
  provided_servers::snapshot out;
  auto parse = [&](const std::string& text, endpoint& ep) {
    // ":PORT" names the signaling server's own host.
    auto host = server_host.find(':') != std::string::npos
                  ? "[" + server_host + "]"
                  : server_host;
    auto full = !text.empty() && text.front() == ':' ? host + text : text;
    std::string why;
    auto parsed = parse_endpoint(full, why);
    if (!parsed) {
      log::warn("signal_link", "ignores ICE server '{}' from the server: {}",
                text, why);
      return false;
    }
    ep = *parsed;
    return true;
  };
  for (auto& s : servers.stun())
    if (endpoint ep; parse(s, ep))
      out.stun.push_back(ep);
  for (auto& t : servers.turn())
    if (endpoint ep; parse(t.server(), ep))
      out.turn.push_back(ice_turn_server{ep, t.user(), t.password()});
  return out;
}

node_settings make_node_settings(const node_config& cfg) {
  node_settings ns;
  ns.signal.server = cfg.signal_server;
  if (cfg.signal_servers.size() > 1)
    ns.signal.servers = cfg.signal_servers;
  ns.signal.trust.pinned_id = cfg.server_id;
  // Trust on first use keeps the server's id beside the node key.
  ns.signal.trust.store_path = cfg.key_file + ".server_id";
  ns.signal.token = cfg.token;
  ns.signal.heartbeat = cfg.heartbeat;
  ns.signal.dead_after = cfg.dead_after;
  ns.signal.backoff_first = cfg.backoff_first;
  ns.signal.backoff_max = cfg.backoff_max;
  ns.signal.lookup_timeout = cfg.lookup_timeout;
  ns.ice.stun = cfg.stun;
  ns.ice.interfaces = cfg.interfaces;
  ns.ice.exclude = cfg.exclude;
  for (auto& t : cfg.turn)
    ns.ice.turn.push_back(ice_turn_server{t.server, t.user, t.password});
  // What the signaling server hands out fills the kinds [ice] leaves empty.
  ns.ice.provided = std::make_shared<provided_servers>();
  ns.signal.on_ice_servers
    = [store = ns.ice.provided,
       server = cfg.signal_server](const signal::IceServers& servers) {
        auto got = servers_from_login(servers, server.host);
        log::info(
          "signal_link", "got {} STUN and {} TURN server(s) from the server{}",
          got.stun.size(), got.turn.size(),
          servers.expires_unix() == 0
            ? std::string{}
            : fmt::format(" (TURN credentials valid until {})",
                          rfc3339(std::chrono::system_clock::from_time_t(
                            static_cast<time_t>(servers.expires_unix())))));
        store->set(std::move(got));
      };
  ns.session.idle_linger = cfg.idle_linger;
  ns.session.connect_timeout = cfg.connect_timeout;
  ns.session.paths.upgrade_first = cfg.upgrade_first;
  ns.session.quic.idle_timeout = cfg.idle_timeout;
  ns.session.quic.keepalive = cfg.keepalive;
  ns.session.quic.stream_window = cfg.stream_window;
  ns.session.quic.connection_window = cfg.connection_window;
  parse_congestion_control(cfg.congestion_control,
                           ns.session.quic.congestion); // checked on load
  for (auto& ex : cfg.exports)
    ns.exports.push_back(export_entry{ex.name, ex.target, ex.protocol, ex.allow,
                                      ex.udp_idle, ex.rtsp_transport});
  ns.test_resources = cfg.test_resources;
  for (auto& l : cfg.listens)
    ns.listeners.push_back(listener_config{l.bind, l.protocol, l.resource,
                                           l.peer, l.udp_idle,
                                           static_cast<size_t>(l.max_flows)});
  if (cfg.admin_enabled) {
    ns.admin = cfg.admin_listen;
    ns.admin_token = cfg.admin_token;
  }
  return ns;
}

} // namespace p2proxy
