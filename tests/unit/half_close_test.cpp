// Half-closable scribes on real sockets (a CAF middleman, a socketpair):
// the peer's FIN arrives as local_eof_atom with the connection still
// writable, and shutdown_write() sends our FIN while reading goes on.
#include <chrono>
#include <future>
#include <string>

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

TEST_F(half_close_test, reset_still_closes_the_connection) {
  std::promise<void> closed;
  auto fut = closed.get_future();
  auto broker = sys.middleman().spawn_broker(
    [fd = fds[0], &closed](caf::io::broker* self) -> caf::behavior {
      auto hdl = add_half_close_scribe(self, fd);
      self->configure_read(hdl, caf::io::receive_policy::at_most(1024));
      return {
        [=](const caf::io::new_data_msg&) {},
        [=](local_eof_atom, caf::io::connection_handle h) {
          // A unix socketpair reports the peer's close as EOF: write to
          // provoke the error a TCP reset gives at once.
          std::string x = "x";
          self->write(h, 1, x.data());
          self->flush(h);
        },
        [=, &closed](const caf::io::connection_closed_msg&) {
          closed.set_value();
          self->quit();
        },
      };
    });
  ::close(fds[1]);
  fds[1] = -1;
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  caf::scoped_actor waiter{sys};
  waiter->wait_for(broker);
}

} // namespace
} // namespace p2proxy
