#include "actors/common/tcp_connect.hpp"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

/// A loopback port with a listening socket (closed by the caller), or -1.
int listen_loopback(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0
      || ::listen(fd, 4) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return -1;
  port = ntohs(a.sin_port);
  return fd;
}

} // namespace

TEST(tcp_connect, a_listening_port_connects_and_sets_no_code) {
  uint16_t port = 0;
  int l = listen_loopback(port);
  ASSERT_GE(l, 0);
  std::string why;
  ec code = ec::unspecified;
  int fd = tcp_connect("127.0.0.1", port, 2s, why, nullptr, &code);
  EXPECT_GE(fd, 0) << why;
  EXPECT_EQ(code, ec::unspecified);
  ::close(fd);
  ::close(l);
}

TEST(tcp_connect, a_closed_port_is_target_refused) {
  uint16_t port = 0;
  int l = listen_loopback(port);
  ASSERT_GE(l, 0);
  ::close(l); // nobody listens there now
  std::string why;
  ec code = ec::unspecified;
  EXPECT_LT(tcp_connect("127.0.0.1", port, 2s, why, nullptr, &code), 0);
  EXPECT_EQ(code, ec::target_refused) << why;
  EXPECT_FALSE(why.empty());
}
