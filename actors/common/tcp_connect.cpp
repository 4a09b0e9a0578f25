#include "actors/common/tcp_connect.hpp"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace p2proxy {

namespace {

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

ec code_of_errno(int err) {
  return err == ECONNREFUSED ? ec::target_refused : ec::target_unreachable;
}

} // namespace

int tcp_connect(const std::string& host, uint16_t port,
                std::chrono::milliseconds timeout, std::string& why,
                bool* reset, ec* code) {
  ec last = ec::target_unreachable; // the failure `why` describes
  auto failed = [&](std::string text, ec c) {
    why = std::move(text);
    last = c;
  };
  auto failed_errno
    = [&](int err) { failed(std::strerror(err), code_of_errno(err)); };
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  auto port_text = std::to_string(port);
  if (auto rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
      rc != 0) {
    why = fmt::format("cannot resolve {}: {}", host, ::gai_strerror(rc));
    if (code)
      *code = ec::target_unreachable;
    return -1;
  }
  why = "no address to try";
  int result = -1;
  for (auto ai = res; ai != nullptr && result < 0; ai = ai->ai_next) {
    int fd
      = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 ai->ai_protocol);
    if (fd < 0) {
      failed_errno(errno);
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
      failed_errno(errno);
      ::close(fd);
      continue;
    }
    if (rc != 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - clock::now());
      pollfd pfd{fd, POLLOUT, 0};
      int n = left.count() > 0 ? ::poll(&pfd, 1, static_cast<int>(left.count()))
                               : 0;
      if (n <= 0) {
        if (n == 0)
          failed(fmt::format("timed out after {} ms", timeout.count()),
                 ec::timeout);
        else
          failed_errno(errno);
        ::close(fd);
        if (n == 0)
          break; // the deadline covers all addresses
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      // A connect that fails reports ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH
      // and the like; ECONNRESET or EPIPE mean it was made, then reset.
      if (reset && (err == ECONNRESET || err == EPIPE)) {
        *reset = true;
        err = 0;
      }
      if (err != 0) {
        failed_errno(err);
        ::close(fd);
        continue;
      }
    }
    set_nodelay(fd);
    result = fd;
  }
  ::freeaddrinfo(res);
  if (result < 0 && code)
    *code = last;
  return result;
}

} // namespace p2proxy
