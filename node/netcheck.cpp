#include "node/netcheck.hpp"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/json.hpp"
#include "actors/common/log.hpp"
#include "actors/signal/frame_conn.hpp"
#include "actors/signal/signal_link.hpp"
#include "node/config.hpp"
#include "node/runtime.hpp"
#include "node/wiring.hpp"

namespace p2proxy {

namespace {

constexpr auto login_deadline = std::chrono::seconds(12);
constexpr auto stun_timeout = std::chrono::milliseconds(2500);
constexpr auto turn_timeout = std::chrono::milliseconds(3000);

struct login_outcome {
  std::string error;
  std::string observed;
  std::string server_id;
  std::string server_trust;
  std::optional<signal::IceServers> servers;
};

// One probe login through a SIGNAL LINK (the node's own trust store and
// token); ends the link and its connector before returning.
login_outcome probe_login(const node_config& nc,
                          std::shared_ptr<const identity> id) {
  login_outcome out;
  auto got = std::make_shared<std::pair<std::mutex, login_outcome>>();
  auto lc = make_node_settings(nc).signal;
  lc.probe_only = true;
  lc.exports.clear();
  // The server closes after LoginOk: no quick second attempt.
  lc.backoff_first = lc.backoff_max = std::chrono::seconds(60);
  lc.login_timeout = std::chrono::seconds(10);
  lc.on_ice_servers = [got](const signal::IceServers& s) {
    std::lock_guard<std::mutex> guard{got->first};
    got->second.servers = s;
  };
  system_config cfg;
  caf::actor_system sys{cfg};
  auto connector
    = spawn_connector(sys, std::chrono::seconds(10), max_signal_frame);
  auto link = sys.spawn(signal_link, lc, id, connector, caf::actor{});
  caf::scoped_actor self{sys};
  auto deadline = std::chrono::steady_clock::now() + login_deadline;
  admin::SignalLinkStatus status;
  for (;;) {
    self->request(link, std::chrono::seconds(2), get_atom::value)
      .receive([&](std::string& text) { status.ParseFromString(text); },
               [&](caf::error&) {});
    if (status.logins_count() > 0) {
      out.observed = status.observed_address();
      out.server_id = status.server_id();
      out.server_trust = status.server_trust();
      break;
    }
    if (status.state() == "backoff" && !status.last_error().empty()) {
      out.error = status.last_error();
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      out.error = fmt::format("no login within {} s", login_deadline.count());
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  self->send(link, stop_atom::value, std::string{"netcheck is done"});
  self->send_exit(connector, caf::exit_reason::user_shutdown);
  std::lock_guard<std::mutex> guard{got->first};
  out.servers = got->second.servers;
  return out;
}

// This host's address on the route toward `ep` (no packet is sent).
std::string local_address_toward(const endpoint& ep) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints,
                    &res)
      != 0)
    return {};
  std::string out;
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    char ip[INET_ADDRSTRLEN] = {};
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0)
      out = ::inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
  }
  if (fd >= 0)
    ::close(fd);
  ::freeaddrinfo(res);
  return out;
}

std::vector<std::string> global_ipv6_addresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    return out;
  for (auto i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET6)
      continue;
    auto& a = reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr;
    if ((a.s6_addr[0] & 0xe0) != 0x20) // global unicast is 2000::/3
      continue;
    char ip[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET6, &a, ip, sizeof(ip));
    out.emplace_back(ip);
  }
  ::freeifaddrs(list);
  return out;
}

bool resolves_ipv6(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET6;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0)
    return false;
  ::freeaddrinfo(res);
  return true;
}

std::vector<endpoint> endpoints_of(const std::vector<std::string>& texts,
                                   const std::string& server_host) {
  signal::IceServers tmp;
  for (auto& t : texts)
    tmp.add_stun(t);
  return servers_from_login(tmp, server_host).stun;
}

std::string addr_host(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  auto host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  if (host.size() > 1 && host.front() == '[')
    host = host.substr(1, host.size() - 2);
  return host;
}

} // namespace

void classify(netcheck_result& r) {
  std::vector<const stun_binding_answer*> answered;
  for (auto& a : r.stun)
    if (a.answered)
      answered.push_back(&a);
  if (r.stun.empty())
    r.udp = "unknown";
  else
    r.udp = answered.empty() ? "blocked" : "works";
  r.public_addresses.clear();
  for (auto a : answered)
    if (std::find(r.public_addresses.begin(), r.public_addresses.end(),
                  a->mapped)
        == r.public_addresses.end())
      r.public_addresses.push_back(a->mapped);
  r.behind_nat = !answered.empty()
                 && addr_host(answered.front()->mapped) != r.local_address;
  r.mapping = "unknown";
  if (answered.size() >= 2) {
    r.mapping = r.public_addresses.size() == 1 ? "endpoint-independent"
                                               : "endpoint-dependent";
    bool two_hosts = false;
    for (auto a : answered)
      two_hosts = two_hosts || a->server.host != answered.front()->server.host;
    r.mapping_note = two_hosts
                       ? "seen by two server addresses: both address- and "
                         "port-dependent mapping show"
                       : "seen by two ports of one server address: a NAT that "
                         "maps per destination address only would look "
                         "endpoint-independent";
  } else if (r.udp == "works") {
    r.mapping_note = "only one server port answered (the server needs "
                     "--stun-ports P1,P2)";
  }
  bool relay_udp = false, relay_tcp = false;
  for (auto& t : r.relay)
    (t.tcp ? relay_tcp : relay_udp) |= t.allocated;
  auto relayed = [&](bool peer_tcp) -> std::string {
    if (r.udp != "works")
      return relay_tcp ? "relayed (TURN over TCP)"
                       : "none: needs a relay over TCP, and none works";
    if (relay_udp)
      return peer_tcp ? "relayed (the peer reaches the relay over TCP)"
                      : "relayed (TURN over UDP)";
    return relay_tcp ? "relayed (TURN over TCP)"
                     : "none: needs a relay, and none works";
  };
  bool me_public = r.udp == "works" && !r.behind_nat;
  bool me_eim = r.mapping == "endpoint-independent";
  bool me_unknown = r.mapping == "unknown" && !me_public;
  r.paths.clear();
  auto add = [&](const char* peer, bool direct, bool maybe, bool peer_tcp) {
    bool udp = r.udp == "works";
    std::string path = relayed(peer_tcp);
    if (udp && direct)
      path = "direct";
    else if (udp && maybe)
      path = "direct if the mapping allows it, else " + path;
    r.paths.push_back({peer, path});
  };
  add("public (no NAT)", true, false, false);
  add("endpoint-independent NAT", me_public || me_eim, me_unknown, false);
  add("endpoint-dependent (symmetric) NAT", me_public, false, false);
  add("UDP blocked", false, false, true);
}

int run_netcheck(const std::string& config_path, bool json,
                 const std::string& log_level) {
  node_config nc;
  std::shared_ptr<const identity> id;
  try {
    nc = load_node_config(config_path);
    // Findings go to stdout; the log says only errors unless asked.
    log::level lvl = log::level::error;
    if (!log_level.empty())
      log::parse_level(log_level, lvl);
    log::set_level(lvl);
    id = node_identity(nc.key_file);
  } catch (const std::exception& e) {
    fmt::print(stderr, "p2proxy netcheck: {}\n", e.what());
    return 1;
  }
  netcheck_result r;
  r.signal_server = nc.signal_server.to_string();
  auto login = probe_login(nc, id);
  r.signal_error = login.error;
  r.observed = login.observed;
  r.server_id = login.server_id;
  r.server_trust = login.server_trust;
  auto server_host = nc.signal_server.host;
  std::vector<endpoint> probes;
  provided_servers::snapshot provided;
  if (login.servers) {
    std::vector<std::string> texts(login.servers->stun_probes().begin(),
                                   login.servers->stun_probes().end());
    probes = endpoints_of(texts, server_host);
    provided = servers_from_login(*login.servers, server_host);
    if (login.servers->expires_unix() != 0)
      r.relay_expires = rfc3339(std::chrono::system_clock::from_time_t(
        static_cast<time_t>(login.servers->expires_unix())));
  }
  // Without the server's STUN ports, the STUN servers in use answer.
  if (probes.empty())
    probes = nc.stun.empty() ? provided.stun : nc.stun;
  if (!probes.empty())
    r.local_address = local_address_toward(probes.front());
  auto report = stun_bindings(probes, AF_INET, stun_timeout);
  r.stun = report.answers;
  r.ipv6_addresses = global_ipv6_addresses();
  if (!r.ipv6_addresses.empty()) {
    if (probes.empty() || !resolves_ipv6(probes.front().host)) {
      r.ipv6 = "untested";
    } else {
      auto v6 = stun_bindings({probes.front()}, AF_INET6, stun_timeout);
      r.ipv6 = !v6.answers.empty() && v6.answers.front().answered ? "works"
                                                                  : "no-answer";
    }
  }
  std::vector<ice_turn_server> turn;
  if (!nc.turn.empty()) {
    r.relay_source = "config";
    for (auto& t : nc.turn)
      turn.push_back(ice_turn_server{t.server, t.user, t.password});
  } else if (!provided.turn.empty()) {
    r.relay_source = "server";
    turn = provided.turn;
  }
  for (auto& t : turn)
    for (bool tcp : {false, true})
      r.relay.push_back(
        turn_allocate(t.server, tcp, t.user, t.password, turn_timeout));
  classify(r);
  auto text = json ? netcheck_json(r) : netcheck_text(r);
  fmt::print("{}", text);
  return 0;
}

} // namespace p2proxy
