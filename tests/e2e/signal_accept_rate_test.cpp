// `p2proxy signal --accept-rate N`: a crowd of connections arriving at once
// is accepted at N per second (the rest wait in the listen queue), and every
// one of them is accepted in the end. Counted with the server's own
// p2proxy_signal_connections_total on its admin port. Connections whose
// client gave up while queued cost no accept.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/process.hpp"
#include "tests/e2e/tls_conn.hpp"

namespace {

namespace fs = std::filesystem;
using namespace p2proxy::e2e;
using namespace std::chrono_literals;

/// The value of an unlabelled counter in Prometheus text; nullopt if absent.
std::optional<uint64_t> counter(const std::string& text,
                                const std::string& name) {
  auto at = text.find("\n" + name + " ");
  if (at == std::string::npos)
    return std::nullopt;
  return std::strtoull(text.c_str() + at + name.size() + 2, nullptr, 10);
}

class SignalAcceptRate : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path()
           / ("p2proxy-accept-rate-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    port_ = free_port();
    admin_ = free_port();
  }
  void TearDown() override {
    for (int fd : fds_)
      ::close(fd);
    server_.kill_and_reap();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void start_server(const std::string& rate) {
    server_.start({p2proxy_bin(), "signal", "--listen",
                   "127.0.0.1:" + std::to_string(port_), "--key",
                   (dir_ / "signal.key").string(), "--admin",
                   "127.0.0.1:" + std::to_string(admin_), "--accept-rate",
                   rate},
                  (dir_ / "signal.log").string());
    ASSERT_TRUE(wait_until(
      15s, [&] { return accepted().has_value() || !server_.alive(); }));
    ASSERT_TRUE(server_.alive()) << server_.log_tail();
  }

  std::optional<uint64_t> accepted() {
    auto body = http_get(admin_, "/metrics");
    if (!body)
      return std::nullopt;
    return counter(*body, "p2proxy_signal_connections_total");
  }

  /// Opens `n` TCP connections without sending anything: the kernel
  /// completes them and they wait in the listen queue until accepted.
  void open_crowd(int n) {
    for (int i = 0; i < n; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_GE(fd, 0);
      fds_.push_back(fd);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port_);
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    }
  }

  fs::path dir_;
  uint16_t port_ = 0;
  uint16_t admin_ = 0;
  child_process server_;
  std::vector<int> fds_;
};

TEST_F(SignalAcceptRate, ACrowdIsAcceptedAtTheRateAndAllOfItInTheEnd) {
  start_server("10");
  auto before = accepted();
  ASSERT_TRUE(before.has_value());
  auto start = std::chrono::steady_clock::now();
  open_crowd(40);
  std::this_thread::sleep_for(1s);
  auto after_1s = accepted();
  auto elapsed
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
        .count();
  ASSERT_TRUE(after_1s.has_value()) << server_.log_tail();
  // 10 per second, in steps of one per 0.1 s (plus the step under way): a
  // slow machine only accepts fewer.
  EXPECT_LE(*after_1s - *before, static_cast<uint64_t>(10 * elapsed) + 2)
    << "accepted " << *after_1s - *before << " of 40 in " << elapsed << " s";
  EXPECT_TRUE(wait_until(20s,
                         [&] {
                           auto n = accepted();
                           return n && *n - *before >= 40;
                         }))
    << "accepted " << accepted().value_or(0) - *before << " of 40 after 20 s\n"
    << server_.log_tail();
  EXPECT_TRUE(server_.alive());
}

TEST_F(SignalAcceptRate, ConnectionsClosedInTheQueueDoNotHoldUpTheNext) {
  start_server("10");
  // 80 clients that give up while queued: were each to take an accept, the
  // next one would wait 8 s.
  open_crowd(80);
  for (int fd : fds_)
    ::close(fd);
  fds_.clear();
  tls_conn live;
  auto start = std::chrono::steady_clock::now();
  auto why = live.connect(port_, "127.0.0.1");
  auto took
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
        .count();
  EXPECT_EQ(why, "") << server_.log_tail();
  EXPECT_LT(took, 5.0) << "the TLS handshake behind 80 closed connections "
                          "took "
                       << took << " s";
  EXPECT_TRUE(server_.alive());
}

} // namespace
