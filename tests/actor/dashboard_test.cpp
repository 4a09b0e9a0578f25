// The DASHBOARD's routes on a real ADMIN SERVER (real loopback sockets): the
// page, its script and style sheet with their content types and security
// headers, served without the bearer token while the status still needs it,
// and 404/405 around them.
#include "actors/admin/admin_server.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

const std::string status_json = R"({"nodeId":"N1","version":"0.1.0"})";

caf::behavior fake_source(caf::event_based_actor*) {
  return {
    [](get_atom) { return status_json; },
    [](metrics_atom) { return std::string{"p2proxy_up 1\n"}; },
  };
}

struct quiet_config : caf::actor_system_config {
  quiet_config() {
    set("logger.verbosity", caf::atom("quiet"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

class dashboard_test : public ::testing::Test {
protected:
  ~dashboard_test() override {
    caf::anon_send_exit(source, caf::exit_reason::user_shutdown);
  }

  /// An admin server on loopback, with `token` when not empty.
  uint16_t start(const std::string& token = {}) {
    uint16_t port = 0;
    auto admin
      = start_admin_server(sys, endpoint{"127.0.0.1", 0}, source, port, token);
    if (!admin) {
      ADD_FAILURE() << error_text(admin.error());
      return 0;
    }
    // The server lives while someone holds its handle.
    admins.push_back(*admin);
    return port;
  }

  static void bound(httplib::Client& cli) {
    cli.set_connection_timeout(3, 0);
    cli.set_read_timeout(5, 0);
  }

  quiet_config cfg;
  caf::actor_system sys{cfg};
  caf::actor source = sys.spawn(fake_source);
  std::vector<caf::actor> admins;
};

void expect_security_headers(const httplib::Response& res) {
  auto csp = res.get_header_value("Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
  EXPECT_EQ(res.get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(res.get_header_value("X-Frame-Options"), "DENY");
  EXPECT_EQ(res.get_header_value("Cache-Control"), "no-store");
}

} // namespace

TEST_F(dashboard_test, serves_the_page_script_and_style_with_their_types) {
  auto port = start();
  ASSERT_NE(port, 0);
  httplib::Client cli{"127.0.0.1", port};
  bound(cli);

  auto page = cli.Get("/");
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  expect_security_headers(*page);
  EXPECT_NE(page->body.find("<!DOCTYPE html>"), std::string::npos);
  EXPECT_NE(page->body.find(R"(<script src="/dashboard.js")"),
            std::string::npos);
  EXPECT_NE(page->body.find(R"(href="/dashboard.css")"), std::string::npos);
  // No inline script: the only <script> element is the one with a src.
  EXPECT_EQ(page->body.find("<script>"), std::string::npos);
  EXPECT_EQ(page->body.find("<script", page->body.find("<script") + 1),
            std::string::npos);
  // Nothing from elsewhere.
  EXPECT_EQ(page->body.find("http://"), std::string::npos);
  EXPECT_EQ(page->body.find("https://"), std::string::npos);

  auto js = cli.Get("/dashboard.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->get_header_value("Content-Type"),
            "text/javascript; charset=utf-8");
  expect_security_headers(*js);
  EXPECT_NE(js->body.find("/v1/status"), std::string::npos);
  EXPECT_EQ(js->body.find("innerHTML"), std::string::npos);

  auto css = cli.Get("/dashboard.css");
  ASSERT_TRUE(css);
  EXPECT_EQ(css->status, 200);
  EXPECT_EQ(css->get_header_value("Content-Type"), "text/css; charset=utf-8");
  expect_security_headers(*css);
  EXPECT_FALSE(css->body.empty());

  auto head = cli.Head("/");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
  EXPECT_EQ(head->get_header_value("Content-Length"),
            std::to_string(page->body.size()));

  // The JSON answers say what they are too.
  auto status = cli.Get("/v1/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(status->get_header_value("X-Content-Type-Options"), "nosniff");
}

TEST_F(dashboard_test, unknown_paths_near_the_assets_are_404_and_post_is_405) {
  auto port = start();
  ASSERT_NE(port, 0);
  httplib::Client cli{"127.0.0.1", port};
  bound(cli);
  for (const char* path : {"/index.html", "/dashboard.jsx", "/dashboard.js/",
                           "/dashboard", "//", "/v1/status/"}) {
    auto res = cli.Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 404) << path;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json")
      << path;
    EXPECT_NE(res->body.find("not found"), std::string::npos) << res->body;
  }
  auto post = cli.Post("/", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");
  auto post_js = cli.Post("/dashboard.js", "x", "text/plain");
  ASSERT_TRUE(post_js);
  EXPECT_EQ(post_js->status, 405);
}

TEST_F(dashboard_test, assets_need_no_token_but_the_status_does) {
  auto port = start("s3cret");
  ASSERT_NE(port, 0);
  httplib::Client cli{"127.0.0.1", port};
  bound(cli);
  for (const char* path :
       {"/", "/dashboard.js", "/dashboard.css", "/favicon.ico"}) {
    auto res = cli.Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 200) << path;
    expect_security_headers(*res);
  }
  // Without the token: the data stays closed, also on paths that do not
  // exist (no 404 tells a stranger what is there).
  for (const char* path : {"/v1/status", "/metrics", "/index.html", "/nope"}) {
    auto res = cli.Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 401) << path;
    EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer") << path;
  }
  cli.set_bearer_token_auth("wrong");
  auto wrong = cli.Get("/v1/status");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  cli.set_bearer_token_auth("s3cret");
  auto ok = cli.Get("/v1/status");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, status_json);
  auto nope = cli.Get("/nope");
  ASSERT_TRUE(nope);
  EXPECT_EQ(nope->status, 404);
  // The page itself is the same with or without the token.
  auto page = cli.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
}
