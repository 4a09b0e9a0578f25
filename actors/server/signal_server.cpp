#include "actors/server/signal_server.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/server/cluster_status.hpp"
#include "actors/server/directory.hpp"
#include "actors/server/signal_client.hpp"
#include "actors/signal/frame_conn.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"

#ifndef P2PROXY_VERSION
#define P2PROXY_VERSION "0.0.0"
#endif

namespace p2proxy {

// --- login_rate_limiter
// --------------------------------------------------------

void login_rate_limiter::refill(bucket& b, clock::time_point now) const {
  using seconds = std::chrono::duration<double>;
  auto per_second = burst_ / seconds(window_).count();
  auto elapsed = seconds(now - b.last).count();
  if (elapsed > 0)
    b.tokens = std::min<double>(burst_, b.tokens + elapsed * per_second);
  b.last = now;
}

bool login_rate_limiter::allow(const std::string& address,
                               clock::time_point now, bool* first_refusal) {
  if (first_refusal != nullptr)
    *first_refusal = false;
  if (burst_ == 0 || window_.count() <= 0)
    return true;
  // Full buckets carry no information; forgetting them bounds the memory a
  // scan from many addresses can take.
  if (buckets_.size() >= 4096) {
    for (auto i = buckets_.begin(); i != buckets_.end();) {
      refill(i->second, now);
      i = i->second.tokens >= burst_ && !exhausted(i->first, now)
            ? buckets_.erase(i)
            : std::next(i);
    }
  }
  auto [i, fresh]
    = buckets_.try_emplace(address, bucket{double(burst_), now, false});
  auto& b = i->second;
  refill(b, now);
  if (b.tokens < 1.0) {
    if (first_refusal != nullptr)
      *first_refusal = !b.refusing;
    b.refusing = true;
    b.refused_at = now;
    b.ever_refused = true;
    return false;
  }
  b.tokens -= 1.0;
  b.refusing = false;
  return true;
}

bool login_rate_limiter::exhausted(const std::string& address,
                                   clock::time_point now) {
  if (burst_ == 0 || window_.count() <= 0)
    return false;
  auto i = buckets_.find(address);
  if (i == buckets_.end())
    return false;
  auto& b = i->second;
  return b.ever_refused && now - b.refused_at < window_;
}

namespace {

constexpr std::string_view subject = "signal_server";
/// Failed logins of one address are logged at most this often (with a count).
constexpr std::chrono::seconds report_period{60};
// The SIGNAL SERVER's two ticks: the failure report (every report_period)
// and the accept budget (every accept_period, with --accept-rate).
constexpr uint64_t report_tick = 0;
constexpr uint64_t accept_tick = 1;
constexpr std::chrono::milliseconds accept_period{100};

// SIGNAL SERVER: accepts connections, applies the rate limit, and hands each
// connection to a new SIGNAL CLIENT (it spawns the client, then forks a
// FRAME CONNECTION for the socket with the client as owner). It monitors its
// clients and the DIRECTORY; on stop it asks every client to end and ends
// itself once the last one is gone.
struct signal_server_state {
  using clock = login_rate_limiter::clock;
  struct client_entry {
    caf::actor actor;
    std::string address;
    uint64_t seq = 0;    // accept order: the oldest is evicted first
    bool pending = true; // not logged in yet
  };
  // Failed logins of one address since it was last logged.
  struct tally {
    uint64_t unlogged = 0;
    std::string last_reason;
    clock::time_point last_logged{};
    clock::time_point limit_logged{};
  };
  server_options opts;
  caf::actor directory;
  std::shared_ptr<server_metrics> metrics;
  std::map<caf::actor_addr, client_entry> clients;
  size_t pending = 0;
  std::map<std::string, size_t> pending_by_address;
  std::map<std::string, tally> tallies;
  uint64_t next_seq = 0;
  login_rate_limiter limiter{0, std::chrono::milliseconds{0}};
  caf::io::accept_handle doorman;
  uint64_t next_tag = 0;
  bool stopping = false;
  std::string stop_reason;
  std::chrono::system_clock::time_point started;

  static inline const char* name = "signal_server";
};

using signal_server_broker = caf::io::stateful_broker<signal_server_state>;

void maybe_finish(signal_server_broker* self) {
  auto& st = self->state;
  if (!st.stopping || !st.clients.empty())
    return;
  self->send(st.directory, stop_atom::value, st.stop_reason);
  log::info(subject, "stopped: {}", st.stop_reason);
  self->quit();
}

void begin_stop(signal_server_broker* self, const std::string& reason) {
  auto& st = self->state;
  if (st.stopping)
    return;
  st.stopping = true;
  st.stop_reason = reason;
  log::info(subject, "stopping: {} ({} client(s) to end)", reason,
            st.clients.size());
  self->close(st.doorman);
  for (auto& [addr, client] : st.clients)
    self->send(client.actor, stop_atom::value, reason);
  maybe_finish(self);
}

// The client no longer counts as pending (logged in, evicted or gone).
void settle(signal_server_broker* self, signal_server_state::client_entry& c) {
  auto& st = self->state;
  if (!c.pending)
    return;
  c.pending = false;
  --st.pending;
  auto i = st.pending_by_address.find(c.address);
  if (i != st.pending_by_address.end() && --i->second == 0)
    st.pending_by_address.erase(i);
}

// Asks the oldest pending client of `address` (any address when empty) to
// make room; it ends with RATE_LIMITED and reports a failed attempt. False
// when there is none.
bool evict_oldest(signal_server_broker* self, const std::string& address,
                  const char* why) {
  auto& st = self->state;
  signal_server_state::client_entry* oldest = nullptr;
  for (auto& [addr, c] : st.clients)
    if (c.pending && (address.empty() || c.address == address)
        && (oldest == nullptr || c.seq < oldest->seq))
      oldest = &c;
  if (oldest == nullptr)
    return false;
  self->send(oldest->actor, evict_atom::value, std::string{why});
  settle(self, *oldest);
  return true;
}

// Bounds unfinished logins before a new connection joins them: per source
// once it is over its failure budget, and for all sources together.
void make_room(signal_server_broker* self, const std::string& address) {
  auto& st = self->state;
  auto now = signal_server_state::clock::now();
  // Down to one below the cap, so the new connection fits: an address that
  // became limited while holding many sheds them at once.
  if (st.limiter.exhausted(address, now)) {
    for (;;) {
      auto mine = st.pending_by_address.find(address);
      if (mine == st.pending_by_address.end()
          || mine->second < st.opts.max_pending_limited
          || !evict_oldest(self, address,
                           "too many failed login attempts from your address;"
                           " an unfinished login made room for a newer one"))
        break;
    }
  }
  if (st.pending < st.opts.max_pending)
    return;
  std::string busiest;
  size_t most = 0;
  for (auto& [addr, n] : st.pending_by_address)
    if (n > most) {
      most = n;
      busiest = addr;
    }
  evict_oldest(self, busiest,
               "the server has too many unfinished logins; yours made room "
               "for a newer one");
}

// A failed or unfinished login: it counts against its source, and is logged
// at once only if its source had none logged within the report period.
void note_failure(signal_server_broker* self, const std::string& address,
                  const std::string& why) {
  auto& st = self->state;
  auto now = signal_server_state::clock::now();
  bool first_refusal = false;
  st.limiter.allow(address, now, &first_refusal);
  auto& t = st.tallies[address];
  if (first_refusal
      && (t.limit_logged == signal_server_state::clock::time_point{}
          || now - t.limit_logged >= report_period)) {
    t.limit_logged = now;
    log::warn(subject,
              "limits {}: more than {} failed logins per {} s; its unfinished"
              " logins are limited to {} at a time",
              address, st.opts.login_burst, st.opts.login_window.count() / 1000,
              st.opts.max_pending_limited);
  }
  t.last_reason = why;
  if (t.last_logged == signal_server_state::clock::time_point{}
      || now - t.last_logged >= report_period) {
    log::warn(subject, "login from {} failed: {}", address, why);
    t.last_logged = now;
    return;
  }
  ++t.unlogged;
}

// Every report period: one line per address with failures not yet logged.
void report_failures(signal_server_broker* self) {
  auto& st = self->state;
  auto now = signal_server_state::clock::now();
  for (auto i = st.tallies.begin(); i != st.tallies.end();) {
    auto& t = i->second;
    if (t.unlogged > 0) {
      log::warn(subject,
                "{} more failed login(s) from {} in the last minute "
                "(last: {})",
                t.unlogged, i->first, t.last_reason);
      t.unlogged = 0;
      t.last_logged = now;
    }
    if (now - t.last_logged >= 5 * report_period)
      i = st.tallies.erase(i);
    else
      ++i;
  }
}

admin::ServerStatus make_status(signal_server_broker* self,
                                const std::string& nodes) {
  auto& st = self->state;
  auto& m = *st.metrics;
  admin::ServerStatus status;
  status.ParseFromString(nodes);
  status.set_version(P2PROXY_VERSION);
  status.set_started(rfc3339(st.started));
  auto up = std::chrono::system_clock::now() - st.started;
  status.set_uptime_seconds(
    std::chrono::duration_cast<std::chrono::seconds>(up).count());
  status.set_connections(m.connections);
  status.set_logins(m.logins);
  status.set_login_failures(m.total_login_failures());
  status.set_frames_in(m.frames_in);
  status.set_frames_out(m.frames_out);
  status.set_dropped_connections(m.dropped_connections);
  auto self_status = status.add_actors();
  self_status->set_name("signal_server");
  self_status->set_state(st.stopping ? "stopping" : "running");
  (*self_status->mutable_fields())["clients"]
    = std::to_string(st.clients.size());
  (*self_status->mutable_fields())["pending_logins"]
    = std::to_string(st.pending);
  (*self_status->mutable_fields())["listen"] = st.opts.listen.to_string();
  if (m.cluster)
    fill_cluster_status(*m.cluster, *status.mutable_cluster());
  return status;
}

std::string to_json(const admin::ServerStatus& status) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  std::string out;
  auto res = google::protobuf::util::MessageToJsonString(status, &out, opts);
  if (!res.ok())
    return fmt::format("{{\"error\": \"{}\"}}", res.ToString());
  return out;
}

std::string to_prometheus(const server_metrics& m, size_t online) {
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    fmt::format_to(std::back_inserter(out),
                   "# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help,
                   value);
  };
  counter("p2proxy_signal_connections_total", "TCP connections accepted.",
          m.connections);
  counter("p2proxy_signal_logins_total", "Successful node logins.", m.logins);
  out += "# HELP p2proxy_signal_login_failures_total Failed logins by reason.\n"
         "# TYPE p2proxy_signal_login_failures_total counter\n";
  for (auto& [code, label] : login_failure_labels)
    fmt::format_to(std::back_inserter(out),
                   "p2proxy_signal_login_failures_total{{reason=\"{}\"}} {}\n",
                   label, m.login_failures[static_cast<size_t>(code)].load());
  counter("p2proxy_signal_frames_in_total", "Frames received from nodes.",
          m.frames_in);
  counter("p2proxy_signal_frames_out_total", "Frames sent to nodes.",
          m.frames_out);
  counter("p2proxy_signal_dropped_connections_total",
          "Connections the server ended (errors, timeouts, limits).",
          m.dropped_connections);
  fmt::format_to(std::back_inserter(out),
                 "# HELP p2proxy_signal_nodes_online Nodes logged in now.\n"
                 "# TYPE p2proxy_signal_nodes_online gauge\n"
                 "p2proxy_signal_nodes_online {}\n",
                 online);
  if (m.cluster)
    out += cluster_prometheus(*m.cluster);
  return out;
}

/// A fresh accept budget until the next accept tick (not added to what is
/// left: an idle server must not save up a burst; not before the first one).
void refill_accepts(signal_server_broker* self, bool first = false) {
  auto& st = self->state;
  auto n = uint64_t{st.opts.accept_rate} * accept_period.count() / 1000;
  if (!first)
    self->halt(st.doorman);
  self->trigger(st.doorman, std::max<size_t>(1, n));
  self->delayed_send(self, accept_period, tick_atom::value, accept_tick);
}

caf::behavior signal_server_impl(signal_server_broker* self, int listen_fd,
                                 server_options opts,
                                 std::shared_ptr<server_metrics> metrics) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.metrics = std::move(metrics);
  st.limiter = login_rate_limiter{st.opts.login_burst, st.opts.login_window};
  st.started = std::chrono::system_clock::now();
  st.doorman = self->add_doorman(listen_fd);
  st.directory = st.opts.cluster
                   ? self->spawn(clustered_directory, st.opts.names,
                                 *st.opts.cluster, st.metrics->cluster)
                   : self->spawn(directory, st.opts.names);
  self->monitor(st.directory);
  self->delayed_send(self, report_period, tick_atom::value, report_tick);
  if (st.opts.accept_rate > 0)
    refill_accepts(self, true); // counted: it passivates when spent
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.directory.address()) {
      if (!st.stopping)
        log::error(subject, "directory ended unexpectedly: {}",
                   caf::to_string(dm.reason));
      st.directory = nullptr;
      begin_stop(self, "the directory ended");
      return;
    }
    auto i = st.clients.find(dm.source);
    if (i != st.clients.end()) {
      settle(self, i->second);
      st.clients.erase(i);
    }
    maybe_finish(self);
  });
  return {
    [=](const caf::io::new_connection_msg& msg) {
      auto& st = self->state;
      ++st.metrics->connections;
      auto address = self->remote_addr(msg.handle);
      if (st.stopping) {
        self->close(msg.handle);
        return;
      }
      if (peer_already_gone(msg.handle)) {
        // Gave up in the queue: no TLS, and its accept goes to the next.
        self->close(msg.handle);
        if (st.opts.accept_rate > 0)
          self->trigger(st.doorman, 1);
        return;
      }
      // Nobody is refused for the address alone: a node that logs in from
      // a busy NAT must get through while others there fail.
      make_room(self, address);
      std::shared_ptr<tls_channel> tls;
      try {
        tls = tls_channel::server(st.opts.tls);
      } catch (const std::exception& e) {
        log::error(subject, "cannot start TLS for {}: {}", address, e.what());
        self->close(msg.handle);
        return;
      }
      auto client = self->spawn(signal_client, st.directory, st.opts,
                                st.metrics, caf::actor{self});
      self->monitor(client);
      st.clients.emplace(client.address(),
                         signal_server_state::client_entry{
                           client, address, ++st.next_seq, true});
      ++st.pending;
      ++st.pending_by_address[address];
      fork_frame_conn(self, msg.handle, client, ++st.next_tag, max_signal_frame,
                      std::move(tls));
    },
    [=](attempt_atom, bool logged_in, const std::string& why_not) {
      auto& st = self->state;
      auto i = st.clients.find(
        caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (i == st.clients.end())
        return;
      settle(self, i->second);
      if (!logged_in)
        note_failure(self, i->second.address, why_not);
    },
    [=](tick_atom, uint64_t which) {
      auto& st = self->state;
      if (which == accept_tick) {
        if (!st.stopping)
          refill_accepts(self);
        return;
      }
      report_failures(self);
      if (!st.stopping)
        self->delayed_send(self, report_period, tick_atom::value, report_tick);
    },
    // The accept budget of this tick is spent: stop accepting until the
    // next tick (CAF 0.17's doorman reports this but keeps accepting).
    [=](const caf::io::acceptor_passivated_msg&) {
      self->halt(self->state.doorman);
    },
    // Connections closed at once (while stopping) need no answer.
    [=](const caf::io::new_data_msg&) {},
    [=](const caf::io::connection_closed_msg&) {},
    [=](const caf::io::acceptor_closed_msg&) {
      if (!self->state.stopping) {
        log::error(subject, "listening socket failed");
        begin_stop(self, "the listening socket failed");
      }
    },
    [=](get_atom) {
      auto rp = self->make_response_promise<std::string>();
      if (!self->state.directory) {
        rp.deliver(to_json(make_status(self, {})));
        return rp;
      }
      self
        ->request(self->state.directory, std::chrono::seconds(5),
                  nodes_atom::value)
        .then(
          [=](const std::string& nodes) mutable {
            rp.deliver(to_json(make_status(self, nodes)));
          },
          [=](caf::error&) mutable {
            rp.deliver(to_json(make_status(self, {})));
          });
      return rp;
    },
    [=](metrics_atom) {
      auto rp = self->make_response_promise<std::string>();
      auto metrics = self->state.metrics;
      if (!self->state.directory) {
        rp.deliver(to_prometheus(*metrics, 0));
        return rp;
      }
      self
        ->request(self->state.directory, std::chrono::seconds(5),
                  nodes_atom::value)
        .then(
          [=](const std::string& nodes) mutable {
            admin::ServerStatus status;
            status.ParseFromString(nodes);
            rp.deliver(to_prometheus(*metrics, status.nodes_size()));
          },
          [=](caf::error&) mutable { rp.deliver(to_prometheus(*metrics, 0)); });
      return rp;
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus status;
      status.set_name("signal_server");
      status.set_state(st.stopping ? "stopping" : "running");
      (*status.mutable_fields())["clients"] = std::to_string(st.clients.size());
      (*status.mutable_fields())["pending_logins"] = std::to_string(st.pending);
      return status.SerializeAsString();
    },
    [=](reload_atom) {
      if (self->state.directory)
        self->send(self->state.directory, reload_atom::value);
    },
    [=](stop_atom, const std::string& reason) { begin_stop(self, reason); },
  };
}

// Binds and listens here, not in the broker, so that the caller learns the
// port and any error before anything runs.
int open_listener(const endpoint& ep, uint16_t& bound_port, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  auto port_text = std::to_string(ep.port);
  auto host = ep.host.empty() ? nullptr : ep.host.c_str();
  if (auto rc = ::getaddrinfo(host, port_text.c_str(), &hints, &res); rc != 0) {
    why = fmt::format("cannot resolve {}: {}", ep.host, ::gai_strerror(rc));
    return -1;
  }
  int result = -1;
  for (auto ai = res; ai != nullptr && result < 0; ai = ai->ai_next) {
    int fd
      = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 ai->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0
        || ::listen(fd, SOMAXCONN) != 0) {
      why = std::strerror(errno);
      ::close(fd);
      continue;
    }
    sockaddr_storage sa{};
    socklen_t len = sizeof(sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    bound_port = sa.ss_family == AF_INET6
                   ? ntohs(reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port)
                   : ntohs(reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
    result = fd;
  }
  ::freeaddrinfo(res);
  return result;
}

} // namespace

caf::expected<caf::actor> start_signal_server(caf::actor_system& sys,
                                              const server_options& opts,
                                              uint16_t& bound_port) {
  if (!opts.tls)
    return make_error(ec::bad_config,
                      "the signaling server needs a key (TLS is not optional)");
  std::string why;
  auto fd = open_listener(opts.listen, bound_port, why);
  if (fd < 0)
    return make_error(
      ec::io_failure,
      fmt::format("cannot listen on {}: {}", opts.listen.to_string(), why));
  auto effective = opts;
  effective.listen.port = bound_port;
  auto metrics = std::make_shared<server_metrics>();
  if (effective.cluster) {
    metrics->cluster = std::make_shared<cluster_metrics>();
    metrics->cluster->instance = effective.cluster->instance;
    metrics->cluster->redis = effective.cluster->redis.to_string();
  }
  auto server
    = sys.middleman().spawn_broker(signal_server_impl, fd, effective, metrics);
  log::info(subject,
            "listens on {} with TLS as server id {} (token {}, login "
            "timeout {} ms, heartbeat {} ms)",
            effective.listen.to_string(), opts.tls->id(),
            opts.token.empty() ? "not required" : "required",
            opts.login_timeout.count(), opts.heartbeat.count());
  return server;
}

} // namespace p2proxy
