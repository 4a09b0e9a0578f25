#include "actors/admin/http_front.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/admin/http_parse.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"

namespace p2proxy::http {

namespace {

using clock = std::chrono::steady_clock;

constexpr const char* subject = "admin_server";
constexpr const char* json_type = "application/json";
constexpr size_t read_chunk = 16 * 1024;
/// Per connection and wake-up, so one fast sender cannot starve the rest.
constexpr size_t read_budget = 64 * 1024;
constexpr int accepts_per_wake = 64;
constexpr auto tick = std::chrono::milliseconds(50);
constexpr auto accept_pause = std::chrono::milliseconds(100);

enum class phase {
  reading,   // a request head or body is arriving (or the next one awaited)
  waiting,   // the handler has the request; input is not read meanwhile
  writing,   // the answer is being sent
  lingering, // after a final answer: input is dropped until EOF or timeout
  closed,    // its socket is closed; the entry goes at the next reap()
};

struct conn {
  int fd = -1;
  uint64_t serial = 0;
  phase ph = phase::reading;
  std::string in;
  bool have_head = false;
  detail::parsed_head head;
  size_t body_left = 0;
  bool head_only = false; // the request was HEAD
  bool keep_alive = true;
  size_t served = 0;
  std::string method, path; // of the request being answered, for the log
  std::string out;
  size_t out_pos = 0;
  clock::time_point started; // when the current request's wait began
  clock::time_point deadline;
};

struct posted {
  int fd;
  uint64_t serial;
  response res;
};

/// Where answers from other threads wait for the loop. Shared with every
/// reply function, so a late reply finds it closed instead of freed.
struct mailbox {
  std::mutex mtx;
  std::vector<posted> items;
  int wake_fd = -1; // -1 once closed

  void post(posted p) {
    std::lock_guard<std::mutex> guard{mtx};
    if (wake_fd < 0)
      return;
    items.push_back(std::move(p));
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  std::vector<posted> take() {
    std::lock_guard<std::mutex> guard{mtx};
    return std::exchange(items, {});
  }
};

bool is_loopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    return (ntohl(a.sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a))
      return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
  }
  return false;
}

bool bearer_matches(const request& req, const std::string& token) {
  auto* auth = req.header("authorization");
  if (auth == nullptr || auth->size() < 7)
    return false;
  std::string scheme = auth->substr(0, 7);
  for (auto& c : scheme)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "bearer ")
    return false;
  std::string_view presented{*auth};
  presented.remove_prefix(7);
  return equal_in_constant_time(token, presented);
}

/// Whether a request's Host names this machine's loopback (localhost,
/// *.localhost, 127.x.x.x, [::1], with any port), or is absent. A browser
/// always sends the name it resolved: a page of another site that rebinds
/// its name to 127.0.0.1 (DNS rebinding) names that site, not loopback.
bool host_is_loopback(const request& req) {
  auto* host = req.header("host");
  if (host == nullptr)
    return true;
  std::string h = *host;
  for (auto& c : h)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!h.empty() && h.front() == '[') {
    auto end = h.find(']');
    return end != std::string::npos && h.substr(1, end - 1) == "::1";
  }
  h = h.substr(0, h.find(':'));
  if (h == "localhost"
      || (h.size() > 10 && h.compare(h.size() - 10, 10, ".localhost") == 0))
    return true;
  in_addr a{};
  return ::inet_pton(AF_INET, h.c_str(), &a) == 1
         && (ntohl(a.s_addr) >> 24) == 127;
}

} // namespace

struct front::loop {
  front_limits limits;
  std::string token;
  std::vector<std::string> public_paths; // served without the token
  handler_fn handler;
  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::shared_ptr<mailbox> box = std::make_shared<mailbox>();
  std::atomic<bool> stopping{false};
  std::unordered_map<int, conn> conns;
  uint64_t next_serial = 1;
  bool accept_paused = false;
  clock::time_point accept_resume;
  clock::time_point next_sweep;

  void watch(int fd, uint32_t events, int op = EPOLL_CTL_MOD) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd, op, fd, &ev);
  }

  std::vector<int> dead;

  /// Closes the socket at once but keeps the entry until reap(), so that
  /// callers up the stack still hold a valid reference.
  void close_conn(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end() || it->second.ph == phase::closed)
      return;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    it->second.ph = phase::closed;
    dead.push_back(fd);
  }

  void reap() {
    for (auto fd : dead) {
      auto it = conns.find(fd);
      if (it != conns.end() && it->second.ph == phase::closed)
        conns.erase(it);
    }
    dead.clear();
  }

  void close_all() {
    {
      std::lock_guard<std::mutex> guard{box->mtx};
      box->wake_fd = -1;
      box->items.clear();
    }
    for (auto& [fd, c] : conns)
      if (c.ph != phase::closed)
        ::close(fd);
    conns.clear();
    dead.clear();
    for (int* fd : {&listen_fd, &wake_fd, &epoll_fd})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
  }

  /// Frees the slot of the connection that has waited longest for its next
  /// request; false when every connection is busy with an answer.
  bool evict_one() {
    conn* oldest = nullptr;
    for (auto& [fd, c] : conns)
      if (c.ph == phase::reading && (!oldest || c.started < oldest->started))
        oldest = &c;
    if (oldest == nullptr)
      return false;
    log::debug(subject, "closes a connection that sent no request in time "
                        "to make room for a new one");
    close_conn(oldest->fd);
    reap();
    return true;
  }

  void accept_some() {
    for (int i = 0; i < accepts_per_wake; ++i) {
      int fd
        = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR)
          continue;
        if ((errno == EMFILE || errno == ENFILE) && !evict_one()) {
          // Out of descriptors with nothing to give back: stop taking new
          // connections for a moment instead of spinning on the backlog.
          log::warn(subject, "cannot accept: {}", std::strerror(errno));
          watch(listen_fd, 0);
          accept_paused = true;
          accept_resume = clock::now() + accept_pause;
        }
        return;
      }
      if (conns.size() >= limits.max_connections && !evict_one()) {
        ::close(fd);
        continue;
      }
      int yes = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
      auto& c = conns[fd];
      c = conn{};
      c.fd = fd;
      c.serial = next_serial++;
      c.started = clock::now();
      c.deadline = c.started + limits.request_timeout;
      watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
  }

  void answer(conn& c, const response& res) {
    log::debug(subject, "answers {} {} with {}", c.method, c.path, res.status);
    c.out = detail::serialize(res, c.head_only, c.keep_alive);
    c.out_pos = 0;
    c.ph = phase::writing;
    c.deadline = clock::now() + limits.write_timeout;
    watch(c.fd, EPOLLOUT);
    flush(c);
  }

  void answer_error(conn& c, int status, const std::string& text,
                    fields extra = {}) {
    c.keep_alive = false;
    answer(c, response{status, json_type, error_json(text), std::move(extra)});
  }

  void flush(conn& c) {
    while (c.out_pos < c.out.size()) {
      auto n = ::send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos,
                      MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
          close_conn(c.fd);
        return;
      }
      c.out_pos += static_cast<size_t>(n);
    }
    c.out.clear();
    if (!c.keep_alive) {
      // Dropping what the client still sends, rather than closing on it,
      // keeps the kernel from answering it with a reset that could destroy
      // the answer before the client has read it.
      ::shutdown(c.fd, SHUT_WR);
      c.in.clear();
      c.ph = phase::lingering;
      c.deadline = clock::now() + limits.linger;
      watch(c.fd, EPOLLIN);
      return;
    }
    c.ph = phase::reading;
    c.started = clock::now();
    c.deadline = c.started + limits.request_timeout;
    watch(c.fd, EPOLLIN);
    advance(c); // a pipelined request may be waiting already
  }

  void dispatch(conn& c) {
    auto req = std::move(c.head.req);
    c.have_head = false;
    if (c.in.empty())
      c.in.shrink_to_fit(); // an idle connection keeps no head buffer
    c.served++;
    c.keep_alive
      = c.head.keep_alive && c.served < limits.max_requests_per_connection;
    c.head_only = req.method == "HEAD";
    c.method = req.method;
    c.path = req.path;
    bool is_public
      = std::find(public_paths.begin(), public_paths.end(), req.path)
        != public_paths.end();
    if (token.empty() && !host_is_loopback(req)) {
      // No token means a loopback-only port: a request naming another host
      // comes from a web page that rebound its name to this machine.
      answer(c, response{403,
                         json_type,
                         error_json("this admin port answers only requests "
                                    "for a loopback host (127.0.0.1, [::1], "
                                    "localhost); set a bearer token to use "
                                    "another name"),
                         {}});
      return;
    }
    if (!token.empty() && !is_public && !bearer_matches(req, token)) {
      answer(c, response{401,
                         json_type,
                         error_json("unauthorized: this admin port needs "
                                    "Authorization: Bearer TOKEN"),
                         {{"WWW-Authenticate", "Bearer"}}});
      return;
    }
    c.ph = phase::waiting;
    c.deadline = clock::time_point::max();
    watch(c.fd, 0);
    std::weak_ptr<mailbox> box_ref = box;
    handler(std::move(req),
            [box_ref, fd = c.fd, serial = c.serial](response res) {
              if (auto b = box_ref.lock())
                b->post(posted{fd, serial, std::move(res)});
            });
  }

  /// Consumes what `c.in` holds: heads, bodies, requests.
  void advance(conn& c) {
    while (c.ph == phase::reading) {
      if (!c.have_head) {
        auto st = detail::parse_head(c.in, limits, c.head);
        if (st == detail::head_state::incomplete)
          return;
        if (st == detail::head_state::refused) {
          c.method = c.head.req.method;
          c.path = c.head.req.path;
          answer_error(c, c.head.error_status, c.head.error_text);
          return;
        }
        c.in.erase(0, c.head.head_bytes);
        c.body_left = c.head.content_length;
        c.have_head = true;
      }
      auto drop = std::min(c.body_left, c.in.size());
      c.in.erase(0, drop);
      c.body_left -= drop;
      if (c.body_left > 0)
        return;
      dispatch(c);
    }
  }

  void on_readable(conn& c) {
    char buf[read_chunk];
    size_t budget = read_budget;
    auto fd = c.fd;
    while (budget > 0 && (c.ph == phase::reading || c.ph == phase::lingering)) {
      // A head in the making never takes more than one byte past its limit,
      // so the limit is what a connection costs.
      size_t want = sizeof buf;
      if (c.ph == phase::reading && !c.have_head)
        want = std::min(want, limits.max_head_bytes + 1
                                - std::min(c.in.size(), limits.max_head_bytes));
      auto n = ::recv(fd, buf, want, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      if (n <= 0) {
        close_conn(fd);
        return;
      }
      budget -= std::min(budget, static_cast<size_t>(n));
      if (c.ph == phase::lingering)
        continue;
      c.in.append(buf, static_cast<size_t>(n));
      advance(c);
    }
  }

  void on_event(int fd, uint32_t events) {
    auto it = conns.find(fd);
    if (it == conns.end() || it->second.ph == phase::closed)
      return;
    auto& c = it->second;
    if (events & EPOLLERR) {
      close_conn(fd);
      return;
    }
    switch (c.ph) {
      case phase::reading:
      case phase::lingering:
        on_readable(c);
        break;
      case phase::writing:
        flush(c);
        break;
      case phase::waiting:
        if (events & EPOLLHUP) // the client is gone; its answer is dropped
          close_conn(fd);
        break;
      case phase::closed:
        break;
    }
  }

  void deliver() {
    uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(wake_fd, &count, sizeof count);
    for (auto& p : box->take()) {
      auto it = conns.find(p.fd);
      if (it == conns.end() || it->second.serial != p.serial
          || it->second.ph != phase::waiting)
        continue;
      answer(it->second, p.res);
    }
  }

  void sweep() {
    auto now = clock::now();
    if (now < next_sweep)
      return;
    next_sweep = now + tick;
    if (accept_paused && now >= accept_resume) {
      accept_paused = false;
      watch(listen_fd, EPOLLIN);
    }
    std::vector<int> late;
    for (auto& [fd, c] : conns)
      if (c.deadline <= now)
        late.push_back(fd);
    for (auto fd : late)
      close_conn(fd);
    reap();
  }

  void run() {
    epoll_event evs[64];
    while (!stopping.load()) {
      auto n = ::epoll_wait(epoll_fd, evs, 64, static_cast<int>(tick.count()));
      if (n < 0 && errno != EINTR) {
        log::error(subject, "stops serving: epoll_wait: {}",
                   std::strerror(errno));
        return;
      }
      for (int i = 0; i < n && !stopping.load(); ++i) {
        auto fd = evs[i].data.fd;
        if (fd == wake_fd)
          deliver();
        else if (fd == listen_fd)
          accept_some();
        else
          on_event(fd, evs[i].events);
        reap();
      }
      sweep();
    }
  }
};

front::front(front_limits limits, std::string bearer_token, handler_fn handler)
  : loop_(std::make_unique<loop>()) {
  loop_->limits = limits;
  loop_->token = std::move(bearer_token);
  loop_->handler = std::move(handler);
}

front::~front() {
  stop();
}

caf::expected<uint16_t> front::bind(const endpoint& listen) {
  auto where = listen.to_string();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  auto port_text = std::to_string(listen.port);
  auto rc = ::getaddrinfo(listen.host.empty() ? nullptr : listen.host.c_str(),
                          port_text.c_str(), &hints, &found);
  if (rc != 0)
    return make_error(
      ec::io_failure,
      fmt::format("admin: cannot listen on {}: {}", where, ::gai_strerror(rc)));
  int fd = -1;
  int err = 0;
  for (auto* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    // SO_REUSEADDR allows a quick restart over connections in TIME_WAIT;
    // never SO_REUSEPORT, which would let a second process share the port.
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0
        || ::listen(fd, SOMAXCONN) != 0) {
      err = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0)
    return make_error(
      ec::io_failure,
      fmt::format("admin: cannot listen on {}: {}", where, std::strerror(err)));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (!is_loopback(ss) && loop_->token.empty()) {
    ::close(fd);
    return make_error(
      ec::bad_config,
      fmt::format("admin: {} is not a loopback address; an admin port "
                  "reachable from other hosts needs a bearer token ([admin] "
                  "token_file for a node, --admin-token-file for the "
                  "signaling server)",
                  where));
  }
  uint16_t port = 0;
  if (ss.ss_family == AF_INET)
    port = ntohs(reinterpret_cast<sockaddr_in&>(ss).sin_port);
  else if (ss.ss_family == AF_INET6)
    port = ntohs(reinterpret_cast<sockaddr_in6&>(ss).sin6_port);
  auto& l = *loop_;
  l.listen_fd = fd;
  l.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  l.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (l.epoll_fd < 0 || l.wake_fd < 0) {
    err = errno;
    l.close_all();
    return make_error(ec::io_failure, fmt::format("admin: cannot serve {}: {}",
                                                  where, std::strerror(err)));
  }
  l.box->wake_fd = l.wake_fd;
  l.watch(l.listen_fd, EPOLLIN, EPOLL_CTL_ADD);
  l.watch(l.wake_fd, EPOLLIN, EPOLL_CTL_ADD);
  return port;
}

void front::serve_without_token(std::vector<std::string> paths) {
  loop_->public_paths = std::move(paths);
}

void front::start() {
  thread_ = std::thread([l = loop_.get()] { l->run(); });
}

void front::stop() {
  if (!loop_)
    return;
  loop_->stopping.store(true);
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(loop_->wake_fd, &one, sizeof one);
    thread_.join();
  }
  loop_->close_all();
}

} // namespace p2proxy::http
