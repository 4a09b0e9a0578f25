// The ADMIN SERVER on a real actor system and real loopback sockets: HTTP
// runs on its own threads, so the deterministic coordinator cannot drive it.
// A fake source answers (get_atom) and (metrics_atom) with fixed texts.
#include "actors/admin/admin_server.hpp"
#include "node/status_command.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

const std::string status_json
  = R"({"nodeId":"N1","version":"0.1.0","uptimeSeconds":"3725",)"
    R"("signal":{"server":"127.0.0.1:7000","state":"online","reconnects":"2",)"
    R"("framesIn":"10","framesOut":"12"},)"
    R"("exports":[{"name":"cam1","target":"192.168.1.10:554",)"
    R"("protocol":"rtsp","allow":["*"]}],)"
    R"("actors":[{"name":"signal_link","state":"online",)"
    R"("fields":{"b":"2","a":"1"}}]})";

const std::string metrics_text
  = "# HELP p2proxy_up Whether the node runs\n# TYPE p2proxy_up gauge\n"
    "p2proxy_up 1\n";

caf::behavior fake_source(caf::event_based_actor*) {
  return {
    [](get_atom) { return status_json; },
    [](metrics_atom) { return metrics_text; },
  };
}

/// A source that is up but cannot produce a status.
caf::behavior failing_source(caf::event_based_actor*) {
  return {
    [](get_atom) -> caf::result<std::string> {
      return make_error(ec::not_online, "status is unavailable");
    },
  };
}

struct quiet_config : caf::actor_system_config {
  quiet_config() {
    set("logger.verbosity", caf::atom("quiet"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

class admin_server_test : public ::testing::Test {
protected:
  ~admin_server_test() override {
    // Every admin server here serves `source`: ending it ends them, so the
    // system's destructor does not wait forever.
    caf::anon_send_exit(source, caf::exit_reason::user_shutdown);
  }

  caf::actor start(uint16_t& port) {
    auto admin
      = start_admin_server(sys, endpoint{"127.0.0.1", 0}, source, port);
    if (!admin) {
      ADD_FAILURE() << error_text(admin.error());
      return {};
    }
    EXPECT_NE(port, 0);
    return *admin;
  }

  /// True once `who` has terminated, false after `timeout`.
  bool wait_down(const caf::actor& who, caf::timespan timeout = 10s) {
    caf::scoped_actor self{sys};
    self->monitor(who);
    bool down = false;
    self->receive([&](const caf::down_msg&) { down = true; },
                  caf::after(timeout) >> [] {});
    return down;
  }

  static bool port_open(uint16_t port) {
    httplib::Client cli{"127.0.0.1", port};
    cli.set_connection_timeout(2, 0);
    cli.set_read_timeout(2, 0);
    auto res = cli.Get("/v1/status");
    return static_cast<bool>(res);
  }

  quiet_config cfg;
  caf::actor_system sys{cfg};
  caf::actor source = sys.spawn(fake_source);
};

} // namespace

TEST_F(admin_server_test, serves_status_metrics_and_errors) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(3, 0);
  cli.set_read_timeout(5, 0);

  auto status = cli.Get("/v1/status");
  ASSERT_TRUE(status) << httplib::to_string(status.error());
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(status->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(status->body, status_json);

  auto metrics = cli.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->get_header_value("Content-Type"),
            "text/plain; version=0.0.4");
  EXPECT_EQ(metrics->body, metrics_text);

  auto nope = cli.Get("/nope");
  ASSERT_TRUE(nope);
  EXPECT_EQ(nope->status, 404);
  EXPECT_EQ(nope->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(nope->body, R"({"error":"not found: /nope"})");

  auto post = cli.Post("/v1/status", "{}", "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");
  EXPECT_NE(post->body.find("\"error\""), std::string::npos);

  auto post_unknown = cli.Post("/elsewhere", "{}", "application/json");
  ASSERT_TRUE(post_unknown);
  EXPECT_EQ(post_unknown->status, 404);

  auto big = cli.Post("/v1/status", std::string(128 * 1024, 'x'), "text/plain");
  if (big) { // the server may close before the client has sent it all
    EXPECT_EQ(big->status, 413);
  }
}

TEST_F(admin_server_test, answers_503_when_the_source_has_no_status) {
  auto failing = sys.spawn(failing_source);
  uint16_t port = 0;
  auto admin = start_admin_server(sys, endpoint{"127.0.0.1", 0}, failing, port);
  ASSERT_TRUE(admin) << error_text(admin.error());
  httplib::Client cli{"127.0.0.1", port};
  auto res = cli.Get("/v1/status");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, R"({"error":"status is unavailable"})");
  caf::anon_send_exit(failing, caf::exit_reason::user_shutdown);
  EXPECT_TRUE(wait_down(*admin));
}

TEST_F(admin_server_test, second_start_on_the_same_port_names_the_address) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  uint16_t again = 0;
  auto second
    = start_admin_server(sys, endpoint{"127.0.0.1", port}, source, again);
  ASSERT_FALSE(second);
  auto text = error_text(second.error());
  EXPECT_NE(text.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
    << text;
  EXPECT_NE(text.find("in use"), std::string::npos) << text;
  // The first one still serves.
  EXPECT_TRUE(port_open(port));
}

TEST_F(admin_server_test, stop_closes_the_port) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  ASSERT_TRUE(port_open(port));
  caf::anon_send(admin, stop_atom::value, std::string{"test is over"});
  ASSERT_TRUE(wait_down(admin));
  EXPECT_FALSE(port_open(port));
}

TEST_F(admin_server_test, stop_right_after_start_does_not_hang) {
  // The accept loop may not have started yet when the stop arrives.
  for (int i = 0; i < 20; ++i) {
    uint16_t port = 0;
    auto admin = start(port);
    ASSERT_TRUE(admin);
    caf::anon_send(admin, stop_atom::value, std::string{"test over"});
    ASSERT_TRUE(wait_down(admin));
  }
}

TEST_F(admin_server_test, ends_when_its_source_ends) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  caf::anon_send_exit(source, caf::exit_reason::user_shutdown);
  ASSERT_TRUE(wait_down(admin));
  EXPECT_FALSE(port_open(port));
}

TEST_F(admin_server_test, status_command_reports_a_closed_port_with_code_2) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  caf::anon_send(admin, stop_atom::value, std::string{"free the port"});
  ASSERT_TRUE(wait_down(admin));
  auto where = "127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(run_status_command(where, false), 2);
  EXPECT_EQ(run_status_command(where, true), 2);
  EXPECT_EQ(run_status_command("no-port", false), 2);
}

TEST_F(admin_server_test, status_command_prints_a_live_node) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  auto where = "127.0.0.1:" + std::to_string(port);
  testing::internal::CaptureStdout();
  EXPECT_EQ(run_status_command(where, true), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), status_json + "\n");
  testing::internal::CaptureStdout();
  EXPECT_EQ(run_status_command(where, false), 0);
  auto text = testing::internal::GetCapturedStdout();
  EXPECT_NE(text.find("N1"), std::string::npos) << text;
  EXPECT_NE(text.find("1h 02m 05s"), std::string::npos) << text;
}

TEST_F(admin_server_test, refuses_a_non_loopback_address_without_a_token) {
  uint16_t port = 0;
  auto admin
    = start_admin_server(sys, endpoint{"0.0.0.0", 0}, source, port, "");
  ASSERT_FALSE(admin);
  EXPECT_TRUE(is_error(admin.error(), ec::bad_config));
  auto text = error_text(admin.error());
  EXPECT_NE(text.find("not a loopback address"), std::string::npos) << text;
}

TEST_F(admin_server_test, with_a_token_every_request_must_carry_it) {
  uint16_t port = 0;
  auto admin
    = start_admin_server(sys, endpoint{"0.0.0.0", 0}, source, port, "s3cret");
  ASSERT_TRUE(admin) << error_text(admin.error());
  httplib::Client cli{"127.0.0.1", port};
  auto res = cli.Get("/v1/status");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  cli.set_bearer_token_auth("s3creT");
  res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  cli.set_bearer_token_auth("s3cret");
  res = cli.Get("/v1/status");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, status_json);

  auto file = testing::TempDir() + "admin_server_test.token";
  {
    std::ofstream out{file};
    out << "s3cret\n";
  }
  auto where = "127.0.0.1:" + std::to_string(port);
  ::chmod(file.c_str(), 0644);
  EXPECT_EQ(run_status_command(where, true, file), 2); // readable by others
  ::chmod(file.c_str(), 0600);
  testing::internal::CaptureStdout();
  EXPECT_EQ(run_status_command(where, true, file), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), status_json + "\n");
  EXPECT_EQ(run_status_command(where, true), 1); // 401
  std::remove(file.c_str());
}

TEST_F(admin_server_test, answers_431_to_a_head_with_too_many_fields) {
  uint16_t port = 0;
  auto admin = start(port);
  ASSERT_TRUE(admin);
  httplib::Client cli{"127.0.0.1", port};
  httplib::Headers many;
  for (int i = 0; i < 200; ++i)
    many.emplace("X-" + std::to_string(i), "b");
  auto res = cli.Get("/v1/status", many);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 431);
  EXPECT_NE(res->body.find("\"error\""), std::string::npos);
}

/// Answers status at once, but never a look-up (until it ends).
struct stalling_state {
  std::vector<caf::response_promise> held;
};

caf::behavior stalling_source(caf::stateful_actor<stalling_state>* self) {
  return {
    [](get_atom) { return status_json; },
    [self](lookup_atom, const std::string&) {
      auto rp = self->make_response_promise<std::vector<std::string>>();
      self->state.held.push_back(rp);
      return rp;
    },
  };
}

TEST_F(admin_server_test, slow_answers_do_not_hold_up_a_status_request) {
  auto stalling = sys.spawn(stalling_source);
  uint16_t port = 0;
  auto admin
    = start_admin_server(sys, endpoint{"127.0.0.1", 0}, stalling, port);
  ASSERT_TRUE(admin) << error_text(admin.error());
  // More stalled requests than cpp-httplib had worker threads.
  std::vector<std::thread> stuck;
  for (int i = 0; i < 8; ++i)
    stuck.emplace_back([port] {
      httplib::Client c{"127.0.0.1", port};
      c.set_read_timeout(15, 0);
      c.Get("/v1/lookup/never");
    });
  std::this_thread::sleep_for(300ms);
  httplib::Client cli{"127.0.0.1", port};
  auto t0 = std::chrono::steady_clock::now();
  auto res = cli.Get("/v1/status");
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(took, 1s);
  // Ending the source fails the stalled look-ups at once (503).
  caf::anon_send_exit(stalling, caf::exit_reason::user_shutdown);
  for (auto& t : stuck)
    t.join();
  EXPECT_TRUE(wait_down(*admin));
}

TEST(describe_status, summarises_a_node) {
  std::string why;
  auto text = describe_status(status_json, why);
  ASSERT_TRUE(text) << why;
  for (auto needle :
       {"node     N1", "version  0.1.0", "uptime   1h 02m 05s", "signal link",
        "state            online", "reconnects       2",
        "frames in/out    10 / 12", "cam1  ->  192.168.1.10:554  rtsp",
        "signal_link", "a=1 b=2"})
    EXPECT_NE(text->find(needle), std::string::npos) << needle << "\n" << *text;
}

TEST(describe_status, lists_sessions_and_channels) {
  std::string why;
  auto text = describe_status(
    R"({"nodeId":"N2","sessions":{"sessions":[{"peer":"PEERA","state":"ready",)"
    R"("localCandidateType":"srflx","localAddress":"198.18.1.2:5000",)"
    R"("remoteCandidateType":"host","remoteAddress":"198.18.2.2:6000",)"
    R"("rttMs":1.5,"bytesSent":"100","bytesReceived":"2000","openStreams":1}]},)"
    R"("channels":[{"side":"client","resource":"cam1","client":"127.0.0.1:40000",)"
    R"("state":"connected","bytesIn":"7","bytesOut":"9000","ageMs":"65000"}],)"
    R"("channelsOpened":"3","channelsFailed":"1",)"
    R"("process":{"openFds":"17","runningActors":"12","rssBytes":"10485760"}})",
    why);
  ASSERT_TRUE(text) << why;
  for (auto needle :
       {"sessions", "PEERA", "ready",
        "srflx 198.18.1.2:5000 -> host 198.18.2.2:6000", "1.5 ms", "2000",
        "channels (1 open; ended: 3 ok, 1 failed)", "cam1", "127.0.0.1:40000",
        "connected", "9000", "65 s", "17 open fds, 12 actors, 10 MiB"})
    EXPECT_NE(text->find(needle), std::string::npos) << needle << "\n" << *text;
}

TEST(describe_status, summarises_a_signaling_server) {
  std::string why;
  auto text = describe_status(
    R"({"version":"0.1.0","uptimeSeconds":"42","connections":"5",)"
    R"("logins":"4","nodes":[{"nodeId":"NA","address":"10.0.0.1:5000",)"
    R"("since":"2026-01-01T00:00:00.000Z","exports":["cam1","web"]}],)"
    R"("someFutureField":true})",
    why);
  ASSERT_TRUE(text) << why;
  for (auto needle :
       {"signaling server", "uptime   42s", "nodes online (1)", "NA",
        "10.0.0.1:5000", "cam1,web", "connections", "logins"})
    EXPECT_NE(text->find(needle), std::string::npos) << needle << "\n" << *text;
}

TEST(describe_status, rejects_what_is_not_json) {
  std::string why;
  EXPECT_FALSE(describe_status("<html>", why));
  EXPECT_FALSE(why.empty());
}
