#include "actors/udp/udp_reactor.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <caf/send.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"

namespace p2proxy {

namespace {

constexpr size_t max_udp_payload = 65535;
constexpr int poll_ms = 200;

std::weak_ptr<udp_reactor>& the_reactor() {
  static std::weak_ptr<udp_reactor> r;
  return r;
}

std::mutex& the_reactor_mutex() {
  static std::mutex m;
  return m;
}

addrinfo* resolve(const std::string& host, uint16_t port, bool passive,
                  std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  auto service = std::to_string(port);
  auto rv = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(),
                        &hints, &res);
  if (rv != 0) {
    why = fmt::format("cannot resolve {}: {}", host, gai_strerror(rv));
    return nullptr;
  }
  return res;
}

} // namespace

void udp_registration::done() {
  if (in_flight_.fetch_sub(1) == udp_reactor::max_in_flight)
    if (auto r = reactor_.lock())
      r->wake(); // it was paused: read it again
}

std::shared_ptr<udp_reactor> udp_reactor::shared() {
  std::lock_guard<std::mutex> guard{the_reactor_mutex()};
  auto r = the_reactor().lock();
  if (!r) {
    r = std::make_shared<udp_reactor>();
    the_reactor() = r;
  }
  return r;
}

udp_reactor::udp_reactor() {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread{[this] { run(); }};
}

udp_reactor::~udp_reactor() {
  stop_ = true;
  wake();
  if (thread_.joinable())
    thread_.join();
  if (wake_fd_ >= 0)
    ::close(wake_fd_);
}

std::shared_ptr<udp_registration> udp_reactor::add(int fd, caf::actor owner,
                                                   int64_t tag) {
  auto reg = std::make_shared<udp_registration>(fd, std::move(owner), tag);
  reg->reactor_ = weak_from_this();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    regs_.push_back(reg);
  }
  wake();
  return reg;
}

void udp_reactor::remove(const std::shared_ptr<udp_registration>& reg) {
  if (!reg)
    return;
  // Under the lock: the thread reads a socket only while holding it, so
  // once this returns the owner may close the socket.
  std::lock_guard<std::mutex> guard{mtx_};
  reg->removed_ = true;
  for (auto i = regs_.begin(); i != regs_.end(); ++i)
    if (*i == reg) {
      regs_.erase(i);
      break;
    }
}

void udp_reactor::wake() {
  uint64_t one = 1;
  if (wake_fd_ >= 0) [[maybe_unused]]
    auto n = ::write(wake_fd_, &one, sizeof(one));
}

void udp_reactor::run() {
  std::vector<pollfd> fds;
  std::vector<std::shared_ptr<udp_registration>> polled;
  std::vector<char> buf(max_udp_payload);
  while (!stop_) {
    fds.clear();
    polled.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    {
      std::lock_guard<std::mutex> guard{mtx_};
      for (auto& r : regs_)
        if (r->in_flight_ < max_in_flight) {
          fds.push_back({r->fd_, POLLIN, 0});
          polled.push_back(r);
        }
    }
    if (::poll(fds.data(), fds.size(), poll_ms) < 0 && errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      uint64_t n;
      [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof(n));
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLIN | POLLERR)) == 0)
        continue;
      auto& reg = polled[i - 1];
      std::vector<std::string> from, payloads;
      {
        std::lock_guard<std::mutex> guard{mtx_};
        if (reg->removed_)
          continue;
        for (size_t k = 0; k < batch; ++k) {
          sockaddr_storage ss{};
          socklen_t len = sizeof(ss);
          auto n = ::recvfrom(reg->fd_, buf.data(), buf.size(), MSG_DONTWAIT,
                              reinterpret_cast<sockaddr*>(&ss), &len);
          if (n < 0) {
            if (errno == EINTR)
              continue;
            break; // EAGAIN, or an ICMP error on a connected socket
          }
          from.emplace_back(reinterpret_cast<const char*>(&ss), len);
          payloads.emplace_back(buf.data(), static_cast<size_t>(n));
        }
      }
      if (payloads.empty())
        continue;
      ++reg->in_flight_;
      if (reg->tag_ >= 0)
        caf::anon_send(reg->owner_, udp_in_atom::value, reg->tag_,
                       std::move(from), std::move(payloads));
      else
        caf::anon_send(reg->owner_, udp_in_atom::value, std::move(from),
                       std::move(payloads));
    }
  }
}

std::string udp_address_text(const std::string& raw) {
  char host[INET6_ADDRSTRLEN] = "?";
  const auto* sa = reinterpret_cast<const sockaddr*>(raw.data());
  if (raw.size() >= sizeof(sockaddr_in) && sa->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, raw.data(), sizeof(in));
    inet_ntop(AF_INET, &in.sin_addr, host, sizeof(host));
    return fmt::format("{}:{}", host, ntohs(in.sin_port));
  }
  if (raw.size() >= sizeof(sockaddr_in6) && sa->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, raw.data(), sizeof(in6));
    inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof(host));
    return fmt::format("[{}]:{}", host, ntohs(in6.sin6_port));
  }
  return "?";
}

namespace {

/// A non-blocking UDP socket for the first address of host:port that
/// `attach` (bind or connect) accepts; -1 with `why` if none did.
template <class Attach>
int udp_socket(const std::string& host, uint16_t port, bool passive,
               Attach attach, std::string& why) {
  auto* res = resolve(host, port, passive, why);
  if (res == nullptr)
    return -1;
  int fd = -1;
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
      continue;
    if (attach(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    why = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0 && why.empty())
    why = std::strerror(errno);
  return fd;
}

} // namespace

int udp_bind(const std::string& host, uint16_t port, uint16_t& bound_port,
             std::string& why) {
  int fd = udp_socket(host, port, true, ::bind, why);
  if (fd < 0)
    return -1;
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  bound_port = ss.ss_family == AF_INET6
                 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                 : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

int udp_connect(const std::string& host, uint16_t port, std::string& why) {
  return udp_socket(host, port, false, ::connect, why);
}

} // namespace p2proxy
