#include "load_worker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "actors/common/backoff.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/identity/identity.hpp"
#include "actors/signal/login_frames.hpp"
#include "actors/signal/tls_channel.hpp"
#include "proto/signal.pb.h"

namespace p2proxy::bench {

namespace {

using std::chrono::duration;
using std::chrono::milliseconds;

double ms_between(clock::time_point a, clock::time_point b) {
  return duration<double, std::milli>(b - a).count();
}

enum class conn_state {
  idle,
  connecting,
  handshaking,
  logging_in,
  online,
  waiting
};

struct node {
  size_t gid = 0;   // in the whole plan: picks the source address
  size_t local = 0; // in this process's share
  std::optional<identity> key;
  int fd = -1;
  conn_state s = conn_state::idle;
  int server = 0;
  uint32_t events = 0; // registered epoll interest
  std::unique_ptr<tls_channel> tls;
  frame_decoder dec;
  std::string out; // ciphertext not yet written
  clock::time_point first_try{};
  clock::time_point deadline{}; // login deadline, or next ping when online
  clock::time_point retry_at{};
  std::chrono::milliseconds heartbeat{15000};
  uint64_t ping_seq = 0;
  backoff retry;
  bool logged_in_once = false;
  bool displaced = false; // lost the killed server
  bool recovered = false;
};

struct pending_probe {
  clock::time_point sent;
};

// Source addresses: 127.0.X.Y with X in 1..16 and Y in 1..250, so that no
// one address runs out of ephemeral ports.
in_addr_t source_address(size_t gid) {
  size_t k = gid % 4000;
  uint32_t x = static_cast<uint32_t>(k / 250 + 1);
  uint32_t y = static_cast<uint32_t>(k % 250 + 1);
  return htonl((127u << 24) | (x << 8) | y);
}

class worker {
public:
  worker(load_shared& shared, unsigned index)
    : sh_(shared), plan_(shared.plan), index_(index),
      rng_(0x5eed0000u + index) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    for (size_t i = index; i < shared.size(); i += plan_.threads) {
      auto n = std::make_unique<node>();
      size_t gid = shared.begin + i;
      n->gid = gid;
      n->local = i;
      n->server = static_cast<int>(gid % plan_.servers.size());
      n->retry = backoff{plan_.backoff_first, plan_.backoff_max,
                         0x1000000ull * (index + 1) + gid};
      nodes_.push_back(std::move(n));
    }
  }
  ~worker() {
    for (auto& n : nodes_)
      if (n->fd >= 0)
        ::close(n->fd);
    ::close(epfd_);
  }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  void run() {
    for (auto& n : nodes_) {
      n->key.emplace(identity::generate());
      sh_.node_ids[n->local] = n->key->node_id();
      ++sh_.ctl.keys_ready;
    }
    while (sh_.now() == phase::keygen)
      std::this_thread::sleep_for(milliseconds(5));
    login_start_ = clock::now();
    std::vector<epoll_event> evs(512);
    auto last_scan = clock::now();
    while (sh_.now() != phase::stop) {
      int k = epoll_wait(epfd_, evs.data(), static_cast<int>(evs.size()), 2);
      for (int i = 0; i < k; ++i)
        on_event(*static_cast<node*>(evs[i].data.ptr), evs[i].events);
      auto now = clock::now();
      pace_logins(now);
      if (sh_.now() == phase::probe)
        pace_probes(now);
      if (now - last_scan >= milliseconds(100)) {
        last_scan = now;
        scan(now);
      }
    }
    std::lock_guard<std::mutex> lock{sh_.mu};
    auto& m = sh_.merged;
    auto append = [](auto& to, auto& from) {
      to.insert(to.end(), from.begin(), from.end());
    };
    append(m.login_ms, fig_.login_ms);
    append(m.probe_ms, fig_.probe_ms);
    append(m.relogin_at_ms, fig_.relogin_at_ms);
    append(m.relogin_try_ms, fig_.relogin_try_ms);
    m.probes_sent += fig_.probes_sent;
    m.probes_lost += fig_.probes_lost + pending_.size();
    m.login_failures += fig_.login_failures;
    m.server_errors += fig_.server_errors;
    for (auto& [why, count] : fig_.failure_reasons)
      m.failure_reasons[why] += count;
    if (sh_.first_error.empty())
      sh_.first_error = first_error_;
  }

private:
  void pace_logins(clock::time_point now) {
    double secs = duration<double>(now - login_start_).count();
    double share = plan_.login_rate / plan_.threads;
    auto due = static_cast<size_t>(share * secs) + 1;
    for (int burst = 0;
         next_login_ < nodes_.size() && next_login_ < due && burst < 256;
         ++burst) {
      auto& n = *nodes_[next_login_++];
      n.first_try = now;
      begin_connect(n, now);
    }
  }

  void pace_probes(clock::time_point now) {
    size_t share = plan_.probes / plan_.threads
                   + (index_ < plan_.probes % plan_.threads ? 1 : 0);
    if (probe_start_ == clock::time_point{})
      probe_start_ = now;
    double secs = duration<double>(now - probe_start_).count();
    auto due = static_cast<size_t>(plan_.probe_rate / plan_.threads * secs) + 1;
    for (size_t tries = 0; fig_.probes_sent < share && fig_.probes_sent < due
                           && tries < nodes_.size();
         ++tries) {
      auto& n = *nodes_[probe_cursor_++ % nodes_.size()];
      size_t to = (n.local + 1) % sh_.size();
      int their = sh_.server_of[to].load();
      if (n.s != conn_state::online || their < 0
          || (plan_.servers.size() > 1 && their == n.server))
        continue;
      uint64_t nonce = (uint64_t{index_} << 48) | ++probe_seq_;
      signal::Envelope env;
      auto sig = env.mutable_signal();
      sig->set_to(sh_.node_ids[to]);
      sig->set_session_id(nonce);
      sig->mutable_probe()->set_nonce(nonce);
      pending_[nonce] = pending_probe{now};
      ++fig_.probes_sent;
      send(n, env);
    }
  }

  void scan(clock::time_point now) {
    for (auto& p : nodes_) {
      auto& n = *p;
      switch (n.s) {
        case conn_state::online:
          if (now >= n.deadline) {
            signal::Envelope env;
            env.mutable_ping()->set_seq(++n.ping_seq);
            n.deadline = now + n.heartbeat;
            send(n, env);
          }
          break;
        case conn_state::connecting:
        case conn_state::handshaking:
        case conn_state::logging_in:
          if (now >= n.deadline)
            fail(n, now, "no LoginOk within the login timeout");
          break;
        case conn_state::waiting:
          if (now >= n.retry_at)
            begin_connect(n, now);
          break;
        case conn_state::idle:
          break;
      }
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (now - it->second.sent > std::chrono::seconds(5)) {
        ++fig_.probes_lost;
        ++sh_.ctl.probes_done;
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void begin_connect(node& n, clock::time_point now) {
    if (n.displaced && !n.recovered)
      fig_.relogin_try_ms.push_back(since_kill(now));
    n.deadline = now + plan_.login_timeout;
    n.s = conn_state::connecting;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      note_error(std::string{"socket: "} + std::strerror(errno));
      fail(n, now, "socket failed");
      return;
    }
    n.fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = source_address(n.gid);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      note_error(std::string{"bind: "} + std::strerror(errno));
      fail(n, now, "bind failed");
      return;
    }
    auto& t = plan_.servers[static_cast<size_t>(n.server)];
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(t.port);
    inet_pton(AF_INET, t.host.c_str(), &dst.sin_addr);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst);
    if (rc != 0 && errno != EINPROGRESS) {
      fail(n, now, "connect failed");
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.ptr = &n;
    n.events = ev.events;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void on_event(node& n, uint32_t events) {
    auto now = clock::now();
    if (n.fd < 0)
      return;
    if (n.s == conn_state::connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(n.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
        fail(n, now, "connect failed");
        return;
      }
      n.s = conn_state::handshaking;
      n.tls = tls_channel::client(
        plan_.servers[static_cast<size_t>(n.server)].host);
      n.out += n.tls->take_output();
      flush(n, now);
      return;
    }
    if ((events & EPOLLOUT) != 0) {
      flush(n, now);
      if (n.fd < 0)
        return;
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0)
      read_all(n, now);
  }

  void read_all(node& n, clock::time_point now) {
    char buf[16384];
    std::string plain;
    for (int rounds = 0; rounds < 16; ++rounds) {
      auto got = ::recv(n.fd, buf, sizeof buf, 0);
      if (got == 0) {
        fail(n, now, "closed by the server");
        return;
      }
      if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        fail(n, now, "connection error");
        return;
      }
      if (!n.tls->feed(buf, static_cast<size_t>(got), plain)) {
        note_error("TLS: " + n.tls->error());
        fail(n, now, "TLS error");
        return;
      }
    }
    n.out += n.tls->take_output();
    if (!plain.empty()) {
      std::vector<std::string> frames;
      if (n.dec.feed(plain.data(), plain.size(), frames)
          != frame_decoder::status::ok) {
        note_error("frame too large from the server");
        fail(n, now, "frame too large");
        return;
      }
      for (auto& f : frames) {
        on_frame(n, f, now);
        if (n.fd < 0)
          return;
      }
    }
    flush(n, now);
  }

  void on_frame(node& n, const std::string& bytes, clock::time_point now) {
    signal::Envelope env;
    if (!env.ParseFromString(bytes)) {
      note_error("undecodable frame from the server");
      fail(n, now, "undecodable frame");
      return;
    }
    switch (env.msg_case()) {
      case signal::Envelope::kHello: {
        if (env.hello().heartbeat_seconds() > 0)
          n.heartbeat = std::chrono::seconds(env.hello().heartbeat_seconds());
        auto login = make_login(*n.key, n.tls->channel_binding(), env.hello(),
                                plan_.token, false);
        n.s = conn_state::logging_in;
        send(n, login);
        break;
      }
      case signal::Envelope::kLoginOk:
        on_online(n, now);
        break;
      case signal::Envelope::kSignal:
        on_signal(n, env.signal(), now);
        break;
      case signal::Envelope::kError: {
        ++fig_.server_errors;
        auto& e = env.error();
        if (e.code() == signal::PEER_OFFLINE) {
          if (pending_.erase(e.session_id()) > 0) {
            ++fig_.probes_lost;
            ++sh_.ctl.probes_done;
          }
          break;
        }
        note_error(signal::ErrorCode_Name(e.code()) + ": " + e.text());
        if (n.s != conn_state::online)
          ++fig_.failure_reasons["Error " + signal::ErrorCode_Name(e.code())];
        break;
      }
      default:
        break; // Pong, IceServers, RegisterResult: nothing to do
    }
  }

  void on_online(node& n, clock::time_point now) {
    n.s = conn_state::online;
    n.retry.reset();
    std::uniform_int_distribution<int64_t> spread{
      0, std::chrono::duration_cast<milliseconds>(n.heartbeat).count()};
    n.deadline = now + milliseconds(spread(rng_));
    sh_.server_of[n.local] = n.server;
    ++sh_.ctl.online;
    ++sh_.ctl.held[n.server];
    if (!n.logged_in_once) {
      n.logged_in_once = true;
      fig_.login_ms.push_back(ms_between(n.first_try, now));
      ++sh_.ctl.first_logins;
    }
    if (n.displaced && !n.recovered) {
      n.recovered = true;
      fig_.relogin_at_ms.push_back(since_kill(now));
      ++sh_.ctl.recovered;
    }
  }

  void on_signal(node& n, const signal::Signal& sig, clock::time_point now) {
    if (!sig.has_probe())
      return;
    if (sig.probe().reply()) {
      auto it = pending_.find(sig.probe().nonce());
      if (it == pending_.end())
        return;
      fig_.probe_ms.push_back(ms_between(it->second.sent, now));
      pending_.erase(it);
      ++sh_.ctl.probes_done;
      return;
    }
    signal::Envelope env;
    auto out = env.mutable_signal();
    out->set_to(sig.from());
    out->set_session_id(sig.session_id());
    out->mutable_probe()->set_nonce(sig.probe().nonce());
    out->mutable_probe()->set_reply(true);
    send(n, env);
  }

  void send(node& n, const signal::Envelope& env) {
    if (n.fd < 0 || !n.tls)
      return;
    std::string frame;
    encode_frame(env.SerializeAsString(), frame);
    if (!n.tls->write(frame)) {
      fail(n, clock::now(), "TLS write failed");
      return;
    }
    n.out += n.tls->take_output();
    flush(n, clock::now());
  }

  void flush(node& n, clock::time_point now) {
    while (!n.out.empty()) {
      auto put = ::send(n.fd, n.out.data(), n.out.size(), MSG_NOSIGNAL);
      if (put < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        fail(n, now, "send failed");
        return;
      }
      n.out.erase(0, static_cast<size_t>(put));
    }
    uint32_t want = EPOLLIN | (n.out.empty() ? 0u : uint32_t{EPOLLOUT});
    if (want != n.events) {
      epoll_event ev{};
      ev.events = want;
      ev.data.ptr = &n;
      n.events = want;
      epoll_ctl(epfd_, EPOLL_CTL_MOD, n.fd, &ev);
    }
  }

  /// The connection or attempt is over: back off and try the next server,
  /// as a node's SIGNAL LINK does.
  void fail(node& n, clock::time_point now, const char* why) {
    bool was_online = n.s == conn_state::online;
    if (n.fd >= 0) {
      epoll_ctl(epfd_, EPOLL_CTL_DEL, n.fd, nullptr);
      ::close(n.fd);
      n.fd = -1;
    }
    n.tls.reset();
    n.dec = frame_decoder{};
    n.out.clear();
    n.out.shrink_to_fit();
    if (was_online) {
      --sh_.ctl.online;
      --sh_.ctl.held[n.server];
      sh_.server_of[n.local] = -1;
      if (n.server == sh_.ctl.killed_server.load() && !n.displaced) {
        n.displaced = true;
        ++sh_.ctl.displaced;
      }
    } else {
      ++fig_.login_failures;
      ++fig_.failure_reasons[why];
    }
    n.s = conn_state::waiting;
    n.retry_at = now + n.retry.next();
    n.server = (n.server + 1) % static_cast<int>(plan_.servers.size());
  }

  double since_kill(clock::time_point now) const {
    auto at = clock::time_point{clock::duration{sh_.ctl.kill_at_ns.load()}};
    return ms_between(at, now);
  }

  void note_error(const std::string& text) {
    if (first_error_.empty())
      first_error_ = text;
  }

  load_shared& sh_;
  const load_plan& plan_;
  unsigned index_;
  int epfd_ = -1;
  std::vector<std::unique_ptr<node>> nodes_;
  size_t next_login_ = 0;
  clock::time_point login_start_{};
  clock::time_point probe_start_{};
  size_t probe_cursor_ = 0;
  uint64_t probe_seq_ = 0;
  std::unordered_map<uint64_t, pending_probe> pending_;
  std::mt19937_64 rng_;
  worker_figures fig_;
  std::string first_error_;
};

} // namespace

void run_worker(load_shared& shared, unsigned index) {
  worker w{shared, index};
  w.run();
}

} // namespace p2proxy::bench
