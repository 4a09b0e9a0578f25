// Half-closable scribes on real sockets (a CAF middleman, a socketpair):
// the peer's FIN arrives as local_eof_atom with the connection still
// writable, and shutdown_write() sends our FIN while reading goes on.
#include <chrono>
#include <future>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <gtest/gtest.h>

#include "actors/actors.hpp"
#include "actors/common/half_close.hpp"

namespace p2proxy {
namespace {

/// Reads from fd until EOF (or 10 s pass); returns what came.
std::string read_to_eof(int fd) {
  std::string out;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0)
      return out;
    out.append(buf, static_cast<size_t>(n));
  }
  return out + "<no EOF within 10 s>";
}

struct half_close_test : testing::Test {
  half_close_test() : cfg(), sys((cfg.load<caf::io::middleman>(), cfg)) {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  }
  ~half_close_test() override {
    if (fds[1] >= 0)
      ::close(fds[1]);
  }
  caf::actor_system_config cfg;
  caf::actor_system sys;
  int fds[2] = {-1, -1};
};

TEST_F(half_close_test, peer_fin_keeps_our_side_writable) {
  // The broker echoes everything it read, once the peer has finished.
  std::promise<std::string> seen;
  auto fut = seen.get_future();
  auto broker = sys.middleman().spawn_broker(
    [fd = fds[0], &seen](caf::io::broker* self) -> caf::behavior {
      auto hdl = add_half_close_scribe(self, fd);
      self->configure_read(hdl, caf::io::receive_policy::at_most(1024));
      self->ack_writes(hdl, true);
      auto got = std::make_shared<std::string>();
      return {
        [=](const caf::io::new_data_msg& m) {
          got->append(m.buf.begin(), m.buf.end());
        },
        [=, &seen](local_eof_atom, caf::io::connection_handle h) {
          seen.set_value(*got);
          auto reply = "got:" + *got;
          self->write(h, reply.size(), reply.data());
          self->flush(h);
        },
        [=](const caf::io::data_transferred_msg& m) {
          if (m.remaining == 0) {
            shutdown_write(m.handle);
            self->close(m.handle);
            self->quit();
          }
        },
        [=](const caf::io::connection_closed_msg&) { self->quit(); },
      };
    });
  std::string request = "hello, then FIN";
  ASSERT_EQ(::write(fds[1], request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  ASSERT_EQ(::shutdown(fds[1], SHUT_WR), 0);
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(fut.get(), request);
  EXPECT_EQ(read_to_eof(fds[1]), "got:" + request);
  caf::scoped_actor waiter{sys};
  waiter->wait_for(broker);
}

TEST_F(half_close_test, our_fin_keeps_reading) {
  std::promise<std::string> after_fin;
  auto fut = after_fin.get_future();
  auto broker = sys.middleman().spawn_broker(
    [fd = fds[0], &after_fin](caf::io::broker* self) -> caf::behavior {
      auto hdl = add_half_close_scribe(self, fd);
      self->configure_read(hdl, caf::io::receive_policy::at_most(1024));
      self->ack_writes(hdl, true);
      std::string bye = "bye";
      self->write(hdl, bye.size(), bye.data());
      self->flush(hdl);
      auto got = std::make_shared<std::string>();
      return {
        [=](const caf::io::data_transferred_msg& m) {
          if (m.remaining == 0)
            shutdown_write(m.handle); // our FIN; keep reading
        },
        [=](const caf::io::new_data_msg& m) {
          got->append(m.buf.begin(), m.buf.end());
        },
        [=, &after_fin](local_eof_atom, caf::io::connection_handle h) {
          after_fin.set_value(*got);
          self->close(h);
          self->quit();
        },
      };
    });
  EXPECT_EQ(read_to_eof(fds[1]), "bye");
  std::string more = "still talking after your FIN";
  ASSERT_EQ(::write(fds[1], more.data(), more.size()),
            static_cast<ssize_t>(more.size()));
  ASSERT_EQ(::shutdown(fds[1], SHUT_WR), 0);
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(fut.get(), more);
  caf::scoped_actor waiter{sys};
  waiter->wait_for(broker);
}

/// A connected TCP pair on loopback: {ours, the peer's}.
std::pair<int, int> tcp_pair() {
  int lst = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(lst, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0
      || ::listen(lst, 1) != 0
      || ::getsockname(lst, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return {-1, -1};
  int peer = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(peer, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return {-1, -1};
  int ours = ::accept(lst, nullptr, nullptr);
  ::close(lst);
  return {ours, peer};
}

TEST_F(half_close_test, a_peer_that_closed_is_reported_lost_and_still_read) {
  // The peer sends and closes (FIN). Our writes then meet its reset: the
  // broker hears local_lost_atom, and still reads what the peer sent, to
  // its FIN (as a TCP client that wrote its request and closed).
  auto [ours, peer] = tcp_pair();
  ASSERT_GE(ours, 0);
  ASSERT_GE(peer, 0);
  std::string last_words = "sent before closing";
  ASSERT_EQ(::write(peer, last_words.data(), last_words.size()),
            static_cast<ssize_t>(last_words.size()));
  ::close(peer);
  std::promise<std::string> got_all;
  auto fut = got_all.get_future();
  auto broker = sys.middleman().spawn_broker(
    [fd = ours, &got_all](caf::io::broker* self) -> caf::behavior {
      auto hdl = add_half_close_scribe(self, fd);
      self->ack_writes(hdl, true);
      auto got = std::make_shared<std::string>();
      auto lost = std::make_shared<bool>(false);
      auto poke = [=](caf::io::connection_handle h) {
        std::string x(4096, 'x');
        self->write(h, x.size(), x.data());
        self->flush(h);
      };
      // Write first, until a write fails; read only afterwards.
      poke(hdl);
      return {
        [=](const caf::io::data_transferred_msg& m) {
          if (!*lost)
            self->delayed_send(self, std::chrono::milliseconds(20),
                               timeout_atom::value,
                               static_cast<uint64_t>(m.handle.id()));
        },
        [=](timeout_atom, uint64_t id) {
          if (!*lost)
            poke(
              caf::io::connection_handle::from_int(static_cast<int64_t>(id)));
        },
        [=](local_lost_atom, caf::io::connection_handle h) {
          *lost = true;
          self->configure_read(h, caf::io::receive_policy::at_most(1024));
        },
        [=](const caf::io::new_data_msg& m) {
          got->append(m.buf.begin(), m.buf.end());
        },
        [=, &got_all](local_eof_atom, caf::io::connection_handle h) {
          got_all.set_value(*lost ? *got : "EOF before the write failed");
          self->close(h);
          self->quit();
        },
        [=, &got_all](const caf::io::connection_closed_msg&) {
          got_all.set_value("closed as failed: " + *got);
          self->quit();
        },
      };
    });
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(fut.get(), last_words);
  caf::scoped_actor waiter{sys};
  waiter->wait_for(broker);
}

} // namespace
} // namespace p2proxy
