#include "actors/channel/protocol/http_sniffer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace p2proxy;

namespace {

std::string reply(std::string status, std::string text,
                  std::string extra = {}) {
  auto body = "p2proxy: " + text + "\n";
  return "HTTP/1.1 " + status
         + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "
         + std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra
         + "\r\n" + body;
}

const std::string hint = "use http://HOST:PORT/r/<name>/ or "
                         "http://<name>.localhost:PORT/";

struct sniff_case {
  const char* name;
  std::string default_resource;
  std::string input;
  sniff_state state;
  sniff_error error;
  std::string resource;
  std::string reply;
};

std::vector<sniff_case> sniff_cases() {
  std::string long_line
    = "GET /r/web/" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n";
  std::string big_head = "GET /r/web/ HTTP/1.1\r\nHost: x\r\n";
  while (big_head.size() < 17000)
    big_head += "Cookie: " + std::string(100, 'c') + "\r\n";
  big_head += "\r\n";
  return {
    {"prefix", "",
     "GET /r/web/index.html HTTP/1.1\r\nHost: 127.0.0.1:8080"
     "\r\n\r\n",
     sniff_state::done, sniff_error::none, "web", ""},
    {"host_localhost_port", "",
     "GET /index.html HTTP/1.1\r\nHost: NVR-Web.localhost:8080\r\n\r\n",
     sniff_state::done, sniff_error::none, "nvr-web", ""},
    {"host_wins_over_prefix", "",
     "GET /r/other/ HTTP/1.1\r\nHost: web.localhost\r\n\r\n", sniff_state::done,
     sniff_error::none, "web", ""},
    {"absolute_form", "",
     "GET http://cam.localhost:8080/x HTTP/1.1\r\nHost: ignored\r\n\r\n",
     sniff_state::done, sniff_error::none, "cam", ""},
    {"default", "nas", "GET / HTTP/1.0\r\n\r\n", sniff_state::done,
     sniff_error::none, "nas", ""},
    {"no_resource", "", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
     sniff_state::failed, sniff_error::no_resource, "",
     reply("404 Not Found", "no resource in the request: " + hint)},
    {"redirect", "", "GET /r/web HTTP/1.1\r\nHost: h\r\n\r\n",
     sniff_state::failed, sniff_error::redirect, "",
     reply("301 Moved Permanently", "moved to /r/web/",
           "Location: /r/web/\r\n")},
    {"redirect_keeps_query", "", "GET /r/web?a=1 HTTP/1.1\r\nHost: h\r\n\r\n",
     sniff_state::failed, sniff_error::redirect, "",
     reply("301 Moved Permanently", "moved to /r/web/?a=1",
           "Location: /r/web/?a=1\r\n")},
    {"garbage", "", std::string("\x16\x03\x01\x00", 4), sniff_state::failed,
     sniff_error::bad_request, "",
     reply("400 Bad Request", "not an HTTP request")},
    {"rtsp_on_http", "", "OPTIONS rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     reply("400 Bad Request",
           "not an HTTP request: \"OPTIONS rtsp://h/cam1 RTSP/1.0\"")},
    {"http2_preface", "", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
     sniff_state::failed, sniff_error::unsupported, "",
     reply("505 HTTP Version Not Supported",
           "HTTP version \"HTTP/2.0\" is not supported: HTTP/1.x only")},
    {"connect", "", "CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n",
     sniff_state::failed, sniff_error::unsupported, "",
     reply("501 Not Implemented",
           "CONNECT is not supported here: use a socks5 listener")},
    {"te_and_cl", "",
     "POST /r/web/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
     "Transfer-Encoding: chunked\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     reply("400 Bad Request", "both Transfer-Encoding and Content-Length")},
    {"two_hosts", "", "GET /r/web/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     reply("400 Bad Request", "more than one Host header")},
    {"bad_name", "", "GET /r/w%20b/ HTTP/1.1\r\nHost: h\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     reply("400 Bad Request", "invalid resource name \"w%20b\"")},
    {"oversize_line", "", long_line, sniff_state::failed,
     sniff_error::line_too_long, "",
     reply("414 URI Too Long", "request line longer than 8 KiB")},
    {"oversize_head", "", big_head, sniff_state::failed,
     sniff_error::head_too_large, "",
     reply("431 Request Header Fields Too Large",
           "request head larger than 16 KiB")},
  };
}

} // namespace

TEST(http_sniffer, table_one_shot_equals_byte_by_byte) {
  for (auto& c : sniff_cases()) {
    SCOPED_TRACE(c.name);
    http_sniffer a{c.default_resource};
    auto one = a.feed(c.input);
    EXPECT_EQ(one.state, c.state);
    EXPECT_EQ(one.error, c.error);
    EXPECT_EQ(one.resource, c.resource);
    EXPECT_EQ(one.reply, c.reply);
    if (one.state == sniff_state::done) {
      EXPECT_EQ(one.forward, c.input);
    }
    http_sniffer b{c.default_resource};
    sniff_result split;
    for (size_t i = 0; i < c.input.size(); ++i) {
      split = b.feed(std::string_view{c.input}.substr(i, 1));
      if (split.state != sniff_state::need_more)
        break;
    }
    EXPECT_EQ(split.state, one.state);
    EXPECT_EQ(split.error, one.error);
    EXPECT_EQ(split.resource, one.resource);
    EXPECT_EQ(split.reply, one.reply);
    if (one.state == sniff_state::done) {
      EXPECT_EQ(split.forward, one.forward);
    }
  }
}

TEST(http_sniffer, timeout_and_open_failure_replies) {
  http_sniffer s;
  EXPECT_EQ(s.timeout_reply(),
            reply("408 Request Timeout", "no complete request within 10 s"));
  EXPECT_EQ(s.failure_reply(open_failure::unknown_resource, "no \"web\""),
            reply("404 Not Found", "no \"web\""));
  EXPECT_EQ(s.failure_reply(open_failure::denied, "denied"),
            reply("403 Forbidden", "denied"));
  EXPECT_EQ(s.failure_reply(open_failure::peer_unreachable, "offline"),
            reply("502 Bad Gateway", "offline"));
  EXPECT_EQ(s.failure_reply(open_failure::target_refused, "refused"),
            reply("502 Bad Gateway", "refused"));
  EXPECT_EQ(s.failure_reply(open_failure::overloaded, "busy"),
            reply("503 Service Unavailable", "busy"));
}

TEST(http_route, rules) {
  auto r = route_http_request("/r/cam/x", "127.0.0.1:8080", "");
  EXPECT_EQ(r.how, http_route::kind::prefix);
  EXPECT_EQ(r.name, "cam");
  EXPECT_EQ(r.strip, 6u);
  r = route_http_request("/x", "cam.localhost.:8080", "");
  EXPECT_EQ(r.how, http_route::kind::host);
  EXPECT_EQ(r.name, "cam");
  r = route_http_request("/x", "[::1]:8080", "d");
  EXPECT_EQ(r.how, http_route::kind::fallback);
  r = route_http_request("/r/", "localhost:8080", "");
  EXPECT_EQ(r.how, http_route::kind::none);
  r = route_http_request("*", "", "");
  EXPECT_EQ(r.how, http_route::kind::none);
}

// -- rewriter -----------------------------------------------------------------

namespace {

struct rewrite_run {
  std::string out;
  http_request_rewriter::status status = http_request_rewriter::status::ok;
  std::string stop_reply;
  uint64_t requests = 0;
};

rewrite_run rewrite(http_rewrite_config cfg, const std::string& in,
                    bool bytewise) {
  http_request_rewriter rw{std::move(cfg)};
  rewrite_run r;
  if (bytewise) {
    for (size_t i = 0; i < in.size(); ++i)
      if (rw.feed(std::string_view{in}.substr(i, 1), r.out)
          == http_request_rewriter::status::stop) {
        r.status = http_request_rewriter::status::stop;
        break;
      }
  } else {
    r.status = rw.feed(in, r.out);
  }
  r.stop_reply = rw.stop_reply();
  r.requests = rw.requests();
  return r;
}

http_rewrite_config web_cfg() {
  http_rewrite_config cfg;
  cfg.resource = "web";
  cfg.target_authority = "192.168.1.20:80";
  return cfg;
}

} // namespace

TEST(http_request_rewriter, keep_alive_chunked_then_another_resource) {
  std::string chunked_body
    = "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz"
      "\r\n0\r\nX-Trailer: t\r\n\r\n";
  std::string in = "POST /r/web/upload HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n"
                   + chunked_body
                   + "GET /r/web/a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                     "Content-Length: 4\r\n\r\nGET "
                     "\r\n"
                     "GET /r/nvr/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
                     "GET /r/web/never HTTP/1.1\r\n\r\n";
  std::string expect = "POST /upload HTTP/1.1\r\nHost: 192.168.1.20:80\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       + chunked_body
                       + "GET /a?x=1 HTTP/1.1\r\nHost: 192.168.1.20:80\r\n"
                         "Content-Length: 4\r\n\r\nGET ";
  auto misdirected = reply("421 Misdirected Request",
                           "request for \"nvr\" on a connection to \"web\": "
                           "retry on a new connection");
  for (auto bytewise : {false, true}) {
    SCOPED_TRACE(bytewise ? "byte by byte" : "one shot");
    auto r = rewrite(web_cfg(), in, bytewise);
    EXPECT_EQ(r.status, http_request_rewriter::status::stop);
    EXPECT_EQ(r.out, expect);
    EXPECT_EQ(r.stop_reply, misdirected);
    EXPECT_EQ(r.requests, 2u);
  }
}

TEST(http_request_rewriter, host_route_and_default) {
  auto cfg = web_cfg();
  cfg.default_resource = "web";
  std::string in = "GET / HTTP/1.1\r\nHost: web.localhost:8080\r\n"
                   "Accept: */*\r\n\r\n"
                   "GET /r/x HTTP/1.1\r\nHost: web.localhost:8080\r\n\r\n"
                   "GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
                   "GET /r/web HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
  // Host routing keeps /r/x (the target's own path); the default catches a
  // request naming nothing; /r/web needs the redirect: misdirected.
  auto r = rewrite(cfg, in, false);
  EXPECT_EQ(r.out,
            "GET / HTTP/1.1\r\nHost: 192.168.1.20:80\r\n"
            "Accept: */*\r\n\r\n"
            "GET /r/x HTTP/1.1\r\nHost: 192.168.1.20:80\r\n\r\n"
            "GET /favicon.ico HTTP/1.1\r\nHost: 192.168.1.20:80\r\n\r\n");
  EXPECT_EQ(r.status, http_request_rewriter::status::stop);
  EXPECT_EQ(r.stop_reply,
            reply("421 Misdirected Request",
                  "request for \"web\" on a connection to \"web\": retry on a "
                  "new connection"));
}

TEST(http_request_rewriter, no_default_means_misdirected) {
  std::string in = "GET /r/web/ HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n";
  auto r = rewrite(web_cfg(), in, false);
  EXPECT_EQ(r.out, "GET / HTTP/1.1\r\nHost: 192.168.1.20:80\r\n\r\n");
  EXPECT_EQ(r.stop_reply,
            reply("421 Misdirected Request",
                  "request for no resource on a connection to \"web\": retry "
                  "on a new connection"));
}

TEST(http_request_rewriter, absolute_form_missing_host_and_host_only_mode) {
  std::string in = "GET http://web.localhost:8080/p?q HTTP/1.1\r\n\r\n"
                   "GET /r/web/z HTTP/1.0\r\n\r\n";
  auto r = rewrite(web_cfg(), in, false);
  EXPECT_EQ(r.out, "GET /p?q HTTP/1.1\r\nHost: 192.168.1.20:80\r\n\r\n"
                   "GET /z HTTP/1.0\r\nHost: 192.168.1.20:80\r\n\r\n");
  // No routing (e.g. on the exporting node): only Host changes.
  http_rewrite_config host_only;
  host_only.target_authority = "10.0.0.1:8000";
  r = rewrite(host_only, "GET /r/other/x HTTP/1.1\r\nHost: a\r\n\r\n", true);
  EXPECT_EQ(r.out, "GET /r/other/x HTTP/1.1\r\nHost: 10.0.0.1:8000\r\n\r\n");
  // No target: Host is kept (the listener side, before it knows the target).
  auto cfg = web_cfg();
  cfg.target_authority.clear();
  r = rewrite(cfg, "GET /r/web/x HTTP/1.1\r\nHost: a\r\n\r\n", false);
  EXPECT_EQ(r.out, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
}

TEST(http_request_rewriter, websocket_upgrade_passes_through) {
  std::string frames = std::string("\x81\x05hello\r\n\r\nGET /r/nvr/ ", 20);
  std::string in
    = "GET /r/web/ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, "
      "Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
      + frames;
  for (auto bytewise : {false, true}) {
    http_request_rewriter rw{web_cfg()};
    std::string out;
    if (bytewise) {
      for (char c : in)
        EXPECT_EQ(rw.feed(std::string_view{&c, 1}, out),
                  http_request_rewriter::status::ok);
    } else {
      EXPECT_EQ(rw.feed(in, out), http_request_rewriter::status::ok);
    }
    EXPECT_TRUE(rw.upgraded());
    EXPECT_EQ(out, "GET /ws HTTP/1.1\r\nHost: 192.168.1.20:80\r\nConnection: "
                   "keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                     + frames);
  }
}

TEST(http_request_rewriter, errors_stop_the_stream) {
  struct c {
    std::string in;
    std::string reply;
  };
  std::string big = "GET /r/web/ HTTP/1.1\r\n";
  while (big.size() < 17000)
    big += "X: " + std::string(100, 'x') + "\r\n";
  std::vector<c> cases = {
    {"garbage\x01 / HTTP/1.1\r\n\r\n",
     reply("400 Bad Request", "not an HTTP request")},
    {"POST /r/web/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     reply("400 Bad Request", "bad chunk size line")},
    {"POST /r/web/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
     reply("400 Bad Request", "chunk data longer than its size")},
    {"POST /r/web/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
     reply("400 Bad Request", "Transfer-Encoding without chunked")},
    {big, reply("431 Request Header Fields Too Large",
                "request head larger than 16 KiB")},
  };
  for (auto& x : cases) {
    for (auto bytewise : {false, true}) {
      auto r = rewrite(web_cfg(), x.in, bytewise);
      EXPECT_EQ(r.status, http_request_rewriter::status::stop);
      EXPECT_EQ(r.stop_reply, x.reply);
    }
  }
}

TEST(http_request_rewriter, random_splits_and_mutations_are_consistent) {
  std::string base = "POST /r/web/u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
                     "chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
                     "GET /r/web/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
                     "GET http://web.localhost/b HTTP/1.1\r\n\r\n"
                     "GET /r/web/c HTTP/1.1\r\nConnection: Upgrade\r\n"
                     "Upgrade: websocket\r\n\r\nopaque bytes";
  uint32_t seed = 777;
  auto rnd = [&] {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) & 0x7fff;
  };
  for (int round = 0; round < 300; ++round) {
    auto input = base;
    auto damage = rnd() % 4;
    for (uint32_t i = 0; i < damage; ++i)
      input[rnd() % input.size()] = static_cast<char>(rnd() % 256);
    http_request_rewriter one{web_cfg()};
    http_request_rewriter split{web_cfg()};
    std::string o1, o2;
    auto s1 = one.feed(input, o1);
    auto s2 = http_request_rewriter::status::ok;
    size_t pos = 0;
    while (pos < input.size() && s2 == http_request_rewriter::status::ok) {
      auto n = std::min<size_t>(1 + rnd() % 64, input.size() - pos);
      s2 = split.feed(std::string_view{input}.substr(pos, n), o2);
      pos += n;
    }
    EXPECT_EQ(s1, s2) << "round " << round;
    EXPECT_EQ(o1, o2) << "round " << round;
    EXPECT_EQ(one.stop_reply(), split.stop_reply()) << "round " << round;
  }
}
