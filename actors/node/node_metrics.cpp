#include "actors/node/node_metrics.hpp"

#include <map>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/admin/prometheus.hpp"

namespace p2proxy {

std::string metrics_text(node_supervisor_actor* self,
                         const admin::NodeStatus& ns) {
  auto& ls = ns.signal();
  auto& sl = ns.sessions();
  prometheus_writer w;
  std::map<std::pair<std::string, std::string>, uint64_t> by_state_path;
  // By path type (direct, relay, none) and class: the pair's most
  // translated candidate type (host < srflx < prflx < relay).
  std::map<std::pair<std::string, std::string>, std::pair<uint64_t, uint64_t>>
    bytes_by_path;
  std::map<std::string, uint64_t> path_changes{sl.path_changes_closed().begin(),
                                               sl.path_changes_closed().end()};
  for (auto& s : sl.sessions()) {
    auto path = s.local_candidate_type() == "relay"
                    || s.remote_candidate_type() == "relay"
                  ? std::string{"relay"}
                : s.local_candidate_type().empty() ? std::string{"none"}
                                                   : std::string{"direct"};
    std::string cls = "none";
    for (auto t : {"host", "srflx", "prflx", "relay"})
      if (s.local_candidate_type() == t || s.remote_candidate_type() == t)
        cls = t;
    ++by_state_path[{s.state(), path}];
    bytes_by_path[{path, cls}].first += s.bytes_sent();
    bytes_by_path[{path, cls}].second += s.bytes_received();
    for (auto& change : s.path_history())
      ++path_changes[change.reason()];
  }
  for (auto& [k, n] : by_state_path)
    w.gauge("p2proxy_sessions", "Peer sessions by state and path type",
            static_cast<double>(n), {{"state", k.first}, {"path", k.second}});
  if (by_state_path.empty())
    w.gauge("p2proxy_sessions", "Peer sessions by state and path type", 0);
  for (auto& [k, b] : bytes_by_path) {
    w.counter("p2proxy_session_bytes_total",
              "Bytes carried by open sessions, by direction and path type",
              static_cast<double>(b.first),
              {{"direction", "out"}, {"path", k.first}, {"class", k.second}});
    w.counter("p2proxy_session_bytes_total",
              "Bytes carried by open sessions, by direction and path type",
              static_cast<double>(b.second),
              {{"direction", "in"}, {"path", k.first}, {"class", k.second}});
  }
  for (auto& [reason, n] : path_changes)
    w.counter("p2proxy_session_path_changes_total",
              "Changes of sessions' selected candidate pair, by reason",
              static_cast<double>(n), {{"reason", reason}});
  for (auto& [reason, n] : sl.open_failures())
    w.counter("p2proxy_session_open_failures_total",
              "Sessions that failed to open, by reason", static_cast<double>(n),
              {{"reason", reason}});
  w.counter("p2proxy_network_changes_total",
            "Changes of the addresses ICE gathers on (added or removed)",
            static_cast<double>(sl.network_changes()));
  w.counter("p2proxy_sessions_opened_total", "Sessions this node opened",
            static_cast<double>(sl.opened()));
  w.counter("p2proxy_sessions_accepted_total", "Sessions peers opened",
            static_cast<double>(sl.accepted()));
  w.gauge("p2proxy_signal_online", "1 while logged in to the signaling server",
          ls.state() == "online" ? 1 : 0);
  w.counter("p2proxy_signal_reconnects_total",
            "Logins to the signaling server after the first",
            static_cast<double>(ls.reconnects()));
  w.counter("p2proxy_signal_login_failures_total",
            "Logins the signaling server refused",
            static_cast<double>(ls.login_failures()));
  w.counter("p2proxy_signal_frames_in_total",
            "Frames received from the signaling server",
            static_cast<double>(ls.frames_in()));
  w.counter("p2proxy_signal_frames_out_total",
            "Frames sent to the signaling server",
            static_cast<double>(ls.frames_out()));
  w.counter("p2proxy_signals_in_total", "Signals received from other nodes",
            static_cast<double>(ls.signals_in()));
  w.counter("p2proxy_signals_out_total", "Signals sent to other nodes",
            static_cast<double>(ls.signals_out()));
  w.gauge("p2proxy_exports", "Resources this node exports",
          static_cast<double>(self->state.cfg.exports.size()));
  // Channels: open ones by side, ended ones by result, bytes of both.
  std::map<std::string, uint64_t> open_by_side{{"client", 0}, {"export", 0}};
  uint64_t bytes_in = ns.channel_bytes_in(), bytes_out = ns.channel_bytes_out();
  for (auto& c : ns.channels()) {
    ++open_by_side[c.side().empty() ? "unknown" : c.side()];
    bytes_in += c.bytes_in();
    bytes_out += c.bytes_out();
  }
  for (auto& [side, n] : open_by_side)
    w.gauge("p2proxy_channels_open", "Open channels by side",
            static_cast<double>(n), {{"side", side}});
  w.counter("p2proxy_channels_ended_total",
            "Ended channels by result (ok: it reached its target)",
            static_cast<double>(ns.channels_opened()), {{"result", "ok"}});
  w.counter("p2proxy_channels_ended_total",
            "Ended channels by result (ok: it reached its target)",
            static_cast<double>(ns.channels_failed()), {{"result", "failed"}});
  w.counter("p2proxy_channel_bytes_total",
            "Bytes between channels and their local sockets (in: read from "
            "the client or target, out: written to it)",
            static_cast<double>(bytes_in), {{"direction", "in"}});
  w.counter("p2proxy_channel_bytes_total",
            "Bytes between channels and their local sockets (in: read from "
            "the client or target, out: written to it)",
            static_cast<double>(bytes_out), {{"direction", "out"}});
  // Listeners: accepted clients, refusals by reason.
  for (auto& a : ns.actors()) {
    if (a.name() != "listener")
      continue;
    auto& f = a.fields();
    auto bind = f.count("bind") ? f.at("bind") : std::string{};
    auto num = [](const std::string& v) {
      try {
        return static_cast<double>(std::stoull(v));
      } catch (...) {
        return 0.0;
      }
    };
    if (f.count("accepted"))
      w.counter("p2proxy_listener_accepted_total",
                "Client connections a listener accepted", num(f.at("accepted")),
                {{"listener", bind}});
    for (auto& [k, v] : f)
      if (k.rfind("refused_", 0) == 0)
        w.counter("p2proxy_listener_refused_total",
                  "Client connections a listener refused, by reason", num(v),
                  {{"listener", bind}, {"reason", k.substr(8)}});
  }
  // UDP listeners: flows, datagrams and bytes each way, drops by reason
  // (per listener; each flow's own counts are in its status row).
  for (auto& a : ns.actors()) {
    if (a.name() != "udp_listener")
      continue;
    auto& f = a.fields();
    auto bind = f.count("bind") ? f.at("bind") : std::string{};
    auto num = [&f](const std::string& k) {
      return f.count(k) ? std::strtod(f.at(k).c_str(), nullptr) : 0.0;
    };
    w.gauge("p2proxy_udp_flows", "Open UDP flows", num("flows"),
            {{"listener", bind}});
    for (std::string dir : {"in", "out"}) {
      w.counter("p2proxy_udp_datagrams_total",
                "UDP datagrams (in: from clients, out: to clients)",
                num("datagrams_" + dir),
                {{"listener", bind}, {"direction", dir}});
      w.counter("p2proxy_udp_bytes_total",
                "UDP payload bytes (in: from clients, out: to clients)",
                num("bytes_" + dir), {{"listener", bind}, {"direction", dir}});
    }
    for (auto& [k, v] : f)
      if (k.rfind("dropped_", 0) == 0)
        w.counter("p2proxy_udp_dropped_total",
                  "UDP datagrams dropped, by reason", num(k),
                  {{"listener", bind}, {"reason", k.substr(8)}});
  }
  auto& ps = ns.process();
  w.gauge("p2proxy_process_open_fds", "Open file descriptors",
          static_cast<double>(ps.open_fds()));
  w.gauge("p2proxy_process_running_actors", "Running actors",
          static_cast<double>(ps.running_actors()));
  w.gauge("p2proxy_process_resident_bytes", "Resident memory",
          static_cast<double>(ps.rss_bytes()));
  w.gauge("p2proxy_process_heap_in_use_bytes",
          "Heap bytes allocated and not freed",
          static_cast<double>(ps.heap_in_use_bytes()));
  w.gauge("p2proxy_process_heap_free_bytes",
          "Freed heap bytes the allocator keeps",
          static_cast<double>(ps.heap_free_bytes()));
  return w.str();
}

} // namespace p2proxy
