#include "actors/server/cluster_status.hpp"

#include <iterator>

#include <fmt/format.h>

namespace p2proxy {

void fill_cluster_status(const cluster_metrics& m, admin::ClusterStatus& out) {
  out.set_instance(m.instance);
  out.set_redis(m.redis);
  out.set_redis_link(cluster_metrics::to_string(m.link));
  out.set_redis_latency_us(m.latency_us);
  out.set_nodes_held(m.nodes_held);
  out.set_routed_local(m.routed_local);
  out.set_routed_out(m.routed_out);
  out.set_routed_in(m.routed_in);
  out.set_redis_reconnects(m.redis_reconnects);
  out.set_garbage_ignored(m.garbage_ignored);
}

std::string cluster_prometheus(const cluster_metrics& m) {
  std::string out;
  auto it = std::back_inserter(out);
  auto metric
    = [&](const char* name, const char* type, const char* help, auto value) {
        fmt::format_to(it, "# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name,
                       help, type, value);
      };
  fmt::format_to(it,
                 "# HELP p2proxy_cluster_info This server's instance in its "
                 "cluster.\n# TYPE p2proxy_cluster_info gauge\n"
                 "p2proxy_cluster_info{{instance=\"{}\",redis=\"{}\"}} 1\n",
                 m.instance, m.redis);
  metric("p2proxy_cluster_redis_up", "gauge",
         "1 when the Redis link is up, 0 otherwise.",
         m.link == cluster_metrics::up ? 1 : 0);
  auto latency = m.latency_us.load();
  metric("p2proxy_cluster_redis_latency_seconds", "gauge",
         "Round trip of the last PING to Redis (-1 when down).",
         latency < 0 ? -1.0 : static_cast<double>(latency) / 1e6);
  metric("p2proxy_cluster_nodes_held", "gauge",
         "Nodes this server holds (logged in here).", m.nodes_held.load());
  metric("p2proxy_cluster_routed_local_total", "counter",
         "Envelopes routed to nodes held here.", m.routed_local.load());
  metric("p2proxy_cluster_routed_out_total", "counter",
         "Envelopes routed to nodes held by other servers.",
         m.routed_out.load());
  metric("p2proxy_cluster_routed_in_total", "counter",
         "Envelopes received from other servers for nodes held here.",
         m.routed_in.load());
  metric("p2proxy_cluster_redis_reconnects_total", "counter",
         "Times the Redis link came back after being down.",
         m.redis_reconnects.load());
  metric("p2proxy_cluster_garbage_ignored_total", "counter",
         "Values in the cluster's Redis keys that made no sense (ignored).",
         m.garbage_ignored.load());
  return out;
}

} // namespace p2proxy
