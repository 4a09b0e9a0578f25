#include "node/wiring.hpp"

#include "actors/quic/quic_connection.hpp"

namespace p2proxy {

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
  for (auto& t : cfg.turn)
    ns.ice.turn.push_back(ice_turn_server{t.server, t.user, t.password});
  ns.session.idle_linger = cfg.idle_linger;
  ns.session.connect_timeout = cfg.connect_timeout;
  ns.session.quic.idle_timeout = cfg.idle_timeout;
  ns.session.quic.keepalive = cfg.keepalive;
  ns.session.quic.stream_window = cfg.stream_window;
  ns.session.quic.connection_window = cfg.connection_window;
  parse_congestion_control(cfg.congestion_control,
                           ns.session.quic.congestion); // checked on load
  for (auto& ex : cfg.exports)
    ns.exports.push_back(
      export_entry{ex.name, ex.target, ex.protocol, ex.allow});
  ns.test_resources = cfg.test_resources;
  for (auto& l : cfg.listens)
    ns.listeners.push_back(
      listener_config{l.bind, l.protocol, l.resource, l.peer});
  if (cfg.admin_enabled) {
    ns.admin = cfg.admin_listen;
    ns.admin_token = cfg.admin_token;
  }
  return ns;
}

} // namespace p2proxy
