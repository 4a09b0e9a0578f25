#include "actors/ice/stun_responder.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <stun/stunagent.h>

#include "actors/common/log.hpp"

namespace p2proxy {

namespace {

constexpr std::string_view subject = "stun_responder";

// Makes `rh` send from the address in `info` (an in_pktinfo or in6_pktinfo
// of `level`/`type`), written into `control`.
template <class PacketInfo>
void set_reply_source(msghdr& rh, char (&control)[64], int level, int type,
                      const PacketInfo& info) {
  static_assert(CMSG_SPACE(sizeof(PacketInfo)) <= sizeof(control));
  rh.msg_control = control;
  rh.msg_controllen = CMSG_SPACE(sizeof(info));
  auto c = CMSG_FIRSTHDR(&rh);
  c->cmsg_level = level;
  c->cmsg_type = type;
  c->cmsg_len = CMSG_LEN(sizeof(info));
  std::memcpy(CMSG_DATA(c), &info, sizeof(info));
}

struct bound_socket {
  int fd = -1;
  int family = AF_INET;
  uint16_t port = 0;
  size_t index = 0; // which of the binds
};

class responder_impl final : public stun_responder {
public:
  ~responder_impl() override {
    stop_ = true;
    if (wake_[1] >= 0) {
      char c = 0;
      [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
    }
    if (thread_.joinable())
      thread_.join();
    for (auto& s : sockets_)
      ::close(s.fd);
    for (int fd : wake_)
      if (fd >= 0)
        ::close(fd);
  }

  std::vector<uint16_t> ports() const override {
    return ports_;
  }

  uint64_t answered() const override {
    return answered_;
  }

  bool open(const std::vector<endpoint>& binds, std::string& why) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      why = std::strerror(errno);
      return false;
    }
    for (size_t i = 0; i < binds.size(); ++i) {
      auto before = sockets_.size();
      if (binds[i].host.empty()) {
        if (!bind_one("0.0.0.0", binds[i].port, i, why))
          return false;
        // Takes the same port as the IPv4 socket; a host without IPv6
        // just has none.
        std::string ignored;
        bind_one("::", sockets_.back().port, i, ignored);
      } else if (!bind_one(binds[i].host, binds[i].port, i, why)) {
        return false;
      }
      ports_.push_back(sockets_[before].port);
    }
    stun_agent_init(
      &agent_, STUN_ALL_KNOWN_ATTRIBUTES, STUN_COMPATIBILITY_RFC5389,
      static_cast<StunAgentUsageFlags>(STUN_AGENT_USAGE_USE_FINGERPRINT
                                       | STUN_AGENT_USAGE_IGNORE_CREDENTIALS));
    thread_ = std::thread{[this] { run(); }};
    return true;
  }

private:
  bool bind_one(const std::string& host, uint16_t port, size_t index,
                std::string& why) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    auto port_text = std::to_string(port);
    if (auto rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
        rc != 0) {
      why = fmt::format("cannot resolve {}: {}", host, ::gai_strerror(rc));
      return false;
    }
    auto ai = res;
    int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    bool ok = fd >= 0;
    if (ok && ai->ai_family == AF_INET6)
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (ok)
      ok = ai->ai_family == AF_INET6
             ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one,
                            sizeof(one))
                 == 0
             : ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == 0;
    ok = ok && ::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    if (!ok) {
      why = fmt::format("cannot bind UDP {}: {}",
                        endpoint{host, port}.to_string(), std::strerror(errno));
      if (fd >= 0)
        ::close(fd);
      ::freeaddrinfo(res);
      return false;
    }
    bound_socket s;
    s.fd = fd;
    s.family = ai->ai_family;
    s.index = index;
    sockaddr_storage sa{};
    socklen_t len = sizeof(sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    s.port = ntohs(sa.ss_family == AF_INET6
                     ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port
                     : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
    ::freeaddrinfo(res);
    sockets_.push_back(s);
    return true;
  }

  void run() {
    std::vector<pollfd> fds;
    for (auto& s : sockets_)
      fds.push_back(pollfd{s.fd, POLLIN, 0});
    fds.push_back(pollfd{wake_[0], POLLIN, 0});
    while (!stop_) {
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR)
          continue;
        log::error(subject, "stops: poll failed: {}", std::strerror(errno));
        return;
      }
      for (size_t i = 0; i < sockets_.size(); ++i)
        if (fds[i].revents & POLLIN)
          answer(sockets_[i]);
    }
  }

  // One datagram: a Binding request gets its source address back, from the
  // address and port it was sent to. Anything else is dropped unanswered.
  void answer(const bound_socket& s) {
    uint8_t in[1500];
    uint8_t out[512];
    sockaddr_storage from{};
    char control[256];
    iovec iov{in, sizeof(in)};
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof(from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    auto n = ::recvmsg(s.fd, &mh, MSG_DONTWAIT);
    if (n < 20)
      return;
    StunMessage req;
    if (stun_agent_validate(&agent_, &req, in, static_cast<size_t>(n), nullptr,
                            nullptr)
          != STUN_VALIDATION_SUCCESS
        || stun_message_get_class(&req) != STUN_REQUEST
        || stun_message_get_method(&req) != STUN_BINDING)
      return;
    StunMessage resp;
    if (!stun_agent_init_response(&agent_, &resp, out, sizeof(out), &req)
        || stun_message_append_xor_addr(
             &resp, STUN_ATTRIBUTE_XOR_MAPPED_ADDRESS, &from, mh.msg_namelen)
             != STUN_MESSAGE_RETURN_SUCCESS)
      return;
    auto len = stun_agent_finish_message(&agent_, &resp, nullptr, 0);
    if (len == 0)
      return;
    // The answer's source: the request's destination address.
    char reply_control[64]{};
    msghdr rh{};
    iovec riov{out, len};
    rh.msg_name = &from;
    rh.msg_namelen = mh.msg_namelen;
    rh.msg_iov = &riov;
    rh.msg_iovlen = 1;
    for (auto c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo got{};
        std::memcpy(&got, CMSG_DATA(c), sizeof(got));
        in_pktinfo pi{};
        pi.ipi_spec_dst = got.ipi_addr;
        set_reply_source(rh, reply_control, IPPROTO_IP, IP_PKTINFO, pi);
      } else if (c->cmsg_level == IPPROTO_IPV6
                 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo got{};
        std::memcpy(&got, CMSG_DATA(c), sizeof(got));
        in6_pktinfo pi{};
        pi.ipi6_addr = got.ipi6_addr;
        set_reply_source(rh, reply_control, IPPROTO_IPV6, IPV6_PKTINFO, pi);
      }
    }
    if (::sendmsg(s.fd, &rh, MSG_DONTWAIT) >= 0)
      ++answered_;
  }

  StunAgent agent_{};
  std::vector<bound_socket> sockets_;
  std::vector<uint16_t> ports_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> answered_{0};
  std::thread thread_;
};

} // namespace

std::unique_ptr<stun_responder>
stun_responder::start(const std::vector<endpoint>& binds, std::string& why) {
  auto r = std::make_unique<responder_impl>();
  if (!r->open(binds, why))
    return nullptr;
  return r;
}

} // namespace p2proxy
