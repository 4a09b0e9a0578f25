#include "actors/channel/protocol/rtsp_rewriter.hpp"
#include "actors/channel/protocol/rtsp_sniffer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace p2proxy;

namespace {

// Feeds `input` in one piece.
sniff_result sniff_once(rtsp_sniffer& s, const std::string& input) {
  return s.feed(input);
}

// Feeds `input` byte by byte; returns the first result that is not
// need_more (or the last need_more).
sniff_result sniff_bytes(rtsp_sniffer& s, const std::string& input) {
  sniff_result r;
  for (size_t i = 0; i < input.size(); ++i) {
    r = s.feed(std::string_view{input}.substr(i, 1));
    if (r.state != sniff_state::need_more) {
      // The rest of the input belongs to forward, as in one piece.
      r.forward += input.substr(i + 1);
      return r;
    }
  }
  return r;
}

void expect_same(const sniff_result& a, const sniff_result& b) {
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.resource, b.resource);
  EXPECT_EQ(a.forward, b.forward);
  EXPECT_EQ(a.reply, b.reply);
  EXPECT_EQ(a.reason, b.reason);
}

std::string body_reply(std::string status, std::string cseq, std::string text) {
  auto body = "p2proxy: " + text + "\n";
  auto r = "RTSP/1.0 " + status + "\r\n";
  if (!cseq.empty())
    r += "CSeq: " + cseq + "\r\n";
  return r + "Content-Type: text/plain\r\nContent-Length: "
         + std::to_string(body.size()) + "\r\n\r\n" + body;
}

struct sniff_case {
  const char* name;
  std::string default_resource;
  std::string input;
  sniff_state state;
  sniff_error error;
  std::string resource;
  std::string reply; // exact bytes
};

std::vector<sniff_case> sniff_cases() {
  std::string options = "OPTIONS rtsp://127.0.0.1:8554/cam1/stream RTSP/1.0\r\n"
                        "CSeq: 1\r\nUser-Agent: Lavf60.3.100\r\n\r\n";
  std::string long_line = "DESCRIBE rtsp://127.0.0.1:8554/cam1/"
                          + std::string(9000, 'a') + " RTSP/1.0\r\n\r\n";
  std::string big_head = "DESCRIBE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\n"
                         "CSeq: 7\r\n";
  while (big_head.size() < 17000)
    big_head += "X-Filler: " + std::string(100, 'x') + "\r\n";
  big_head += "\r\n";
  return {
    {"options_with_resource", "", options, sniff_state::done, sniff_error::none,
     "cam1", ""},
    {"describe_resource_only", "",
     "DESCRIBE rtsp://localhost:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n",
     sniff_state::done, sniff_error::none, "cam1", ""},
    {"lf_only_lines", "",
     "DESCRIBE rtsp://localhost:8554/cam1/x RTSP/1.0\nCSeq: 2\n\n",
     sniff_state::done, sniff_error::none, "cam1", ""},
    {"leading_crlf_dropped", "",
     "\r\n\r\nOPTIONS rtsp://h/cam2 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
     sniff_state::done, sniff_error::none, "cam2", ""},
    {"options_star_default", "cam9", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
     sniff_state::done, sniff_error::none, "cam9", ""},
    {"options_star_no_default", "", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
     sniff_state::failed, sniff_error::no_resource, "",
     body_reply("404 Not Found", "1",
                "no resource in the URL: use rtsp://HOST:PORT/<name>/...")},
    {"root_url_no_default", "",
     "DESCRIBE rtsp://127.0.0.1:8554/ RTSP/1.0\r\nCSeq: 3\r\n\r\n",
     sniff_state::failed, sniff_error::no_resource, "",
     body_reply("404 Not Found", "3",
                "no resource in the URL: use rtsp://HOST:PORT/<name>/...")},
    {"garbage_binary", "", std::string("\x16\x03\x01\x02\x00\x01", 6),
     sniff_state::failed, sniff_error::bad_request, "",
     body_reply("400 Bad Request", "", "not an RTSP request")},
    {"garbage_text", "", "hello there\r\n\r\n", sniff_state::failed,
     sniff_error::bad_request, "",
     body_reply("400 Bad Request", "", "not an RTSP request: \"hello there\"")},
    {"http_on_rtsp", "", "GET /cam1 HTTP/1.1\r\nHost: x\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     body_reply("400 Bad Request", "",
                "an HTTP request reached the RTSP listener")},
    {"bad_header", "",
     "OPTIONS rtsp://h/cam1 RTSP/1.0\r\nCSeq: 4\r\nno colon here\r\n\r\n",
     sniff_state::failed, sniff_error::bad_request, "",
     body_reply("400 Bad Request", "4",
                "malformed header line \"no colon here\"")},
    {"bad_resource_name", "",
     "OPTIONS rtsp://h/ca%20m RTSP/1.0\r\nCSeq: 4\r\n\r\n", sniff_state::failed,
     sniff_error::bad_request, "",
     body_reply("400 Bad Request", "4", "invalid resource name \"ca%20m\"")},
    {"oversize_line", "", long_line, sniff_state::failed,
     sniff_error::line_too_long, "",
     body_reply("414 Request-URI Too Large", "",
                "request line longer than 8 KiB")},
    {"oversize_head", "", big_head, sniff_state::failed,
     sniff_error::head_too_large, "",
     body_reply("431 Request Header Fields Too Large", "7",
                "request head larger than 16 KiB")},
  };
}

} // namespace

TEST(rtsp_sniffer, table_one_shot_equals_byte_by_byte) {
  for (auto& c : sniff_cases()) {
    SCOPED_TRACE(c.name);
    rtsp_sniffer a{c.default_resource};
    rtsp_sniffer b{c.default_resource};
    auto one = sniff_once(a, c.input);
    auto split = sniff_bytes(b, c.input);
    EXPECT_EQ(one.state, c.state);
    EXPECT_EQ(one.error, c.error);
    EXPECT_EQ(one.resource, c.resource);
    EXPECT_EQ(one.reply, c.reply);
    if (c.state == sniff_state::done) {
      auto expected = c.input;
      expected.erase(0, expected.find_first_not_of("\r\n"));
      EXPECT_EQ(one.forward, expected);
      expect_same(one, split);
    } else {
      // byte by byte may fail earlier, never differently
      EXPECT_EQ(split.state, one.state);
      EXPECT_EQ(split.error, one.error);
      EXPECT_EQ(split.reply, one.reply);
    }
  }
}

TEST(rtsp_sniffer, garbage_is_rejected_before_a_line_end) {
  rtsp_sniffer s;
  auto r = s.feed(std::string("\x16\x03", 2));
  EXPECT_EQ(r.state, sniff_state::failed);
  EXPECT_EQ(r.error, sniff_error::bad_request);
}

TEST(rtsp_sniffer, keeps_bytes_after_the_first_request) {
  rtsp_sniffer s;
  std::string req = "OPTIONS rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\nCSeq: 1"
                    "\r\n\r\nDESCRIBE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\n";
  auto r = s.feed(req);
  ASSERT_EQ(r.state, sniff_state::done);
  EXPECT_EQ(r.forward, req);
  EXPECT_EQ(s.cseq(), "1");
  EXPECT_EQ(s.client_authority(), "127.0.0.1:8554");
  EXPECT_TRUE(s.resource_in_url());
}

TEST(rtsp_sniffer, timeout_and_open_failure_replies) {
  rtsp_sniffer fresh;
  EXPECT_EQ(
    fresh.timeout_reply(),
    body_reply("408 Request Timeout", "", "no complete request within 10 s"));
  rtsp_sniffer s;
  ASSERT_EQ(
    s.feed("DESCRIBE rtsp://h:8554/cam1 RTSP/1.0\r\nCSeq: 12\r\n\r\n").state,
    sniff_state::done);
  EXPECT_EQ(
    s.failure_reply(open_failure::unknown_resource, "no node exports \"cam1\""),
    body_reply("404 Not Found", "12", "no node exports \"cam1\""));
  EXPECT_EQ(s.failure_reply(open_failure::denied, "denied"),
            body_reply("403 Forbidden", "12", "denied"));
  EXPECT_EQ(s.failure_reply(open_failure::peer_unreachable, "offline"),
            body_reply("503 Service Unavailable", "12", "offline"));
  EXPECT_EQ(s.failure_reply(open_failure::target_refused, "refused"),
            body_reply("503 Service Unavailable", "12", "refused"));
  // The reason never breaks the reply's framing.
  EXPECT_EQ(s.failure_reply(open_failure::denied, "a\r\nb"),
            body_reply("403 Forbidden", "12", "a??b"));
}

// -- rewriter -----------------------------------------------------------------

namespace {

rtsp_url_map cam_map() {
  rtsp_url_map m;
  m.client_authority = "127.0.0.1:8554";
  m.server_authority = "192.168.1.10:554";
  m.resource = "cam1";
  return m;
}

struct flow {
  std::string to_server;
  std::string to_client_from_proxy;
  std::string to_client;
  bool failed = false;
};

flow run_flow(rtsp_url_map map, const std::string& client,
              const std::string& server, bool bytewise) {
  rtsp_rewriter rw{std::move(map)};
  flow f;
  auto feed_c = [&](std::string_view s) {
    f.failed |= rw.from_client(s, f.to_server, f.to_client_from_proxy)
                == rtsp_rewriter::status::failed;
  };
  auto feed_s = [&](std::string_view s) {
    f.failed |= rw.from_server(s, f.to_client) == rtsp_rewriter::status::failed;
  };
  if (bytewise) {
    for (size_t i = 0; i < client.size(); ++i)
      feed_c(std::string_view{client}.substr(i, 1));
    for (size_t i = 0; i < server.size(); ++i)
      feed_s(std::string_view{server}.substr(i, 1));
  } else {
    feed_c(client);
    feed_s(server);
  }
  return f;
}

std::string sdp(const std::string& authority, const std::string& prefix) {
  return "v=0\r\n"
         "o=- 1 1 IN IP4 192.168.1.10\r\n"
         "s=Camera\r\n"
         "t=0 0\r\n"
         "a=control:*\r\n"
         "m=video 0 RTP/AVP 96\r\n"
         "a=rtpmap:96 H264/90000\r\n"
         "a=control:rtsp://"
         + authority + prefix
         + "/stream/trackID=0\r\n"
           "m=audio 0 RTP/AVP 97\r\n"
           "a=rtpmap:97 MPEG4-GENERIC/16000/1\r\n"
           "a=control:trackID=1\r\n";
}

std::string frame(char channel, const std::string& payload) {
  std::string f = "$";
  f += channel;
  f += static_cast<char>(payload.size() >> 8);
  f += static_cast<char>(payload.size() & 0xff);
  return f + payload;
}

} // namespace

TEST(rtsp_rewriter, describe_setup_play_teardown_both_ways) {
  auto c = std::string{"127.0.0.1:8554"};
  auto t = std::string{"192.168.1.10:554"};
  // What the client sends, and what the server must receive.
  std::string client
    = "OPTIONS rtsp://" + c
      + "/cam1/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n"
        "DESCRIBE rtsp://"
      + c
      + "/cam1/stream RTSP/1.0\r\nCSeq: 2\r\n"
        "Accept: application/sdp\r\n\r\n"
        "SETUP rtsp://"
      + c
      + "/cam1/stream/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        "SETUP rtsp://"
      + c
      + "/cam1/stream/trackID=1 RTSP/1.0\r\nCSeq: 4\r\n"
        "Transport: RTP/AVP;unicast;client_port=5000-5001,"
        "RTP/AVP/TCP;unicast;interleaved=2-3\r\nSession: 77\r\n\r\n"
        "PLAY rtsp://"
      + c
      + "/cam1/stream/ RTSP/1.0\r\nCSeq: 5\r\n"
        "Session: 77\r\nRange: npt=0.000-\r\n\r\n"
      + frame(0, "RTCP-RR") + "GET_PARAMETER rtsp://" + c
      + "/cam1/stream/ RTSP/1.0\r\nCSeq: 6\r\n"
        "Session: 77\r\n\r\n"
        "TEARDOWN rtsp://"
      + c
      + "/cam1/stream/ RTSP/1.0\r\nCSeq: 7\r\n"
        "Session: 77\r\n\r\n";
  std::string expect_server
    = "OPTIONS rtsp://" + t
      + "/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n"
        "DESCRIBE rtsp://"
      + t
      + "/stream RTSP/1.0\r\nCSeq: 2\r\n"
        "Accept: application/sdp\r\n\r\n"
        "SETUP rtsp://"
      + t
      + "/stream/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        "SETUP rtsp://"
      + t
      + "/stream/trackID=1 RTSP/1.0\r\nCSeq: 4\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\nSession: 77\r\n\r\n"
        "PLAY rtsp://"
      + t
      + "/stream/ RTSP/1.0\r\nCSeq: 5\r\n"
        "Session: 77\r\nRange: npt=0.000-\r\n\r\n"
      + frame(0, "RTCP-RR") + "GET_PARAMETER rtsp://" + t
      + "/stream/ RTSP/1.0\r\nCSeq: 6\r\n"
        "Session: 77\r\n\r\n"
        "TEARDOWN rtsp://"
      + t
      + "/stream/ RTSP/1.0\r\nCSeq: 7\r\n"
        "Session: 77\r\n\r\n";
  // What the camera answers, and what the client must receive.
  auto server_sdp = sdp(t, "");
  auto client_sdp = sdp(c, "/cam1");
  std::string video(3000, 'v');
  video[0] = '$'; // payload bytes that look like RTSP never matter
  std::string server
    = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, "
      "TEARDOWN, GET_PARAMETER\r\n\r\n"
      "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://"
      + t
      + "/stream/\r\n"
        "Content-Type: application/sdp\r\nContent-Length: "
      + std::to_string(server_sdp.size()) + "\r\n\r\n" + server_sdp
      + "RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 77;timeout=60\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        "RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 77;timeout=60\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n\r\n"
        "RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: 77\r\n"
        "RTP-Info: url=rtsp://"
      + t
      + "/stream/trackID=0;seq=1;rtptime=0,"
        "url=rtsp://"
      + t + "/stream/trackID=1;seq=5;rtptime=10\r\n\r\n" + frame(0, video)
      + frame(1, "rtcp") + frame(2, "") + "\r\n"
      + "RTSP/1.0 200 OK\r\nCSeq: 6\r\nSession: 77\r\n\r\n" + frame(0, video)
      + "RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n";
  std::string expect_client
    = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, "
      "TEARDOWN, GET_PARAMETER\r\n\r\n"
      "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://"
      + c + "/cam1/stream/\r\nContent-Type: application/sdp\r\nContent-Length: "
      + std::to_string(client_sdp.size()) + "\r\n\r\n" + client_sdp
      + "RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 77;timeout=60\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        "RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 77;timeout=60\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n\r\n"
        "RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: 77\r\n"
        "RTP-Info: url=rtsp://"
      + c
      + "/cam1/stream/trackID=0;seq=1;rtptime=0,"
        "url=rtsp://"
      + c + "/cam1/stream/trackID=1;seq=5;rtptime=10\r\n\r\n" + frame(0, video)
      + frame(1, "rtcp") + frame(2, "") + "\r\n"
      + "RTSP/1.0 200 OK\r\nCSeq: 6\r\nSession: 77\r\n\r\n" + frame(0, video)
      + "RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n";
  for (auto bytewise : {false, true}) {
    SCOPED_TRACE(bytewise ? "byte by byte" : "one shot");
    auto f = run_flow(cam_map(), client, server, bytewise);
    EXPECT_FALSE(f.failed);
    EXPECT_EQ(f.to_server, expect_server);
    EXPECT_EQ(f.to_client, expect_client);
    EXPECT_EQ(f.to_client_from_proxy, "");
  }
}

TEST(rtsp_rewriter, udp_only_setup_is_answered_461_and_not_forwarded) {
  std::string client
    = "SETUP rtsp://127.0.0.1:8554/cam1/stream/trackID=0 RTSP/1.0\r\n"
      "CSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
      "SETUP rtsp://127.0.0.1:8554/cam1/stream/trackID=0 RTSP/1.0\r\n"
      "CSeq: 4\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n";
  auto text = std::string{
    "p2proxy: only interleaved RTP over the RTSP connection is relayed: use "
    "TCP transport (ffplay: -rtsp_transport tcp)\n"};
  auto expect_461 = "RTSP/1.0 461 Unsupported Transport\r\nCSeq: 3\r\n"
                    "Content-Type: text/plain\r\nContent-Length: "
                    + std::to_string(text.size()) + "\r\n\r\n" + text;
  for (auto bytewise : {false, true}) {
    auto f = run_flow(cam_map(), client, "", bytewise);
    EXPECT_FALSE(f.failed);
    EXPECT_EQ(f.to_client_from_proxy, expect_461);
    EXPECT_EQ(f.to_server,
              "SETUP rtsp://192.168.1.10:554/stream/trackID=0 RTSP/1.0\r\n"
              "CSeq: 4\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1"
              "\r\n\r\n");
  }
  rtsp_rewriter rw{cam_map()};
  std::string a, b;
  rw.from_client(client, a, b);
  EXPECT_EQ(rw.udp_setups_refused(), 1u);
}

TEST(rtsp_rewriter, udp_setup_body_is_dropped_too) {
  std::string client = "SETUP rtsp://127.0.0.1:8554/cam1/t RTSP/1.0\r\nCSeq: "
                       "9\r\nTransport: RTP/AVP/UDP;unicast\r\n"
                       "Content-Length: 4\r\n\r\nbodyOPTIONS * RTSP/1.0\r\n"
                       "CSeq: 10\r\n\r\n";
  auto f = run_flow(cam_map(), client, "", true);
  EXPECT_EQ(f.to_server, "OPTIONS * RTSP/1.0\r\nCSeq: 10\r\n\r\n");
  EXPECT_NE(f.to_client_from_proxy.find("RTSP/1.0 461 Unsupported Transport"
                                        "\r\nCSeq: 9\r\n"),
            std::string::npos);
}

TEST(rtsp_rewriter, keep_resource_and_learned_authority) {
  auto m = cam_map();
  m.strip_resource = false;
  m.client_authority.clear(); // learned from the first request
  std::string client
    = "DESCRIBE rtsp://localhost:8554/cam1/live RTSP/1.0\r\nCSeq: 2\r\n\r\n";
  std::string server
    = "RTSP/1.0 200 OK\r\nCSeq: 2\r\n"
      "Content-Location: rtsp://10.0.0.5/cam1/live\r\n"
      "Location: rtsp://user:pw@10.0.0.5:554/cam1/other\r\n\r\n";
  auto f = run_flow(m, client, server, false);
  EXPECT_EQ(f.to_server, "DESCRIBE rtsp://192.168.1.10:554/cam1/live "
                         "RTSP/1.0\r\nCSeq: 2\r\n\r\n");
  EXPECT_EQ(f.to_client, "RTSP/1.0 200 OK\r\nCSeq: 2\r\n"
                         "Content-Location: rtsp://localhost:8554/cam1/live\r\n"
                         "Location: rtsp://user:pw@localhost:8554/cam1/other"
                         "\r\n\r\n");
}

TEST(rtsp_rewriter, url_mapping_edges) {
  rtsp_rewriter rw{cam_map()};
  auto to_server = [&](std::string_view u) {
    std::string out;
    rw.url_to_server(u, out);
    return out;
  };
  auto to_client = [&](std::string_view u) {
    std::string out;
    rw.url_to_client(u, out);
    return out;
  };
  EXPECT_EQ(to_server("rtsp://127.0.0.1:8554/cam1"),
            "rtsp://192.168.1.10:554/");
  EXPECT_EQ(to_server("rtsp://127.0.0.1:8554/cam1/"),
            "rtsp://192.168.1.10:554/");
  EXPECT_EQ(to_server("rtsp://127.0.0.1:8554/cam1?x=1"),
            "rtsp://192.168.1.10:554/?x=1");
  EXPECT_EQ(to_server("rtsp://127.0.0.1:8554/cam10/a"),
            "rtsp://192.168.1.10:554/cam10/a");
  EXPECT_EQ(to_server("RTSP://127.0.0.1:8554/cam1/a"),
            "RTSP://192.168.1.10:554/a");
  EXPECT_EQ(to_server("*"), "*");
  EXPECT_EQ(to_server("/cam1/a"), "/a");
  EXPECT_EQ(to_client("rtsp://192.168.1.10:554"), "rtsp://127.0.0.1:8554/cam1");
  EXPECT_EQ(to_client("rtsp://192.168.1.10:554/"),
            "rtsp://127.0.0.1:8554/cam1/");
  EXPECT_EQ(to_client("trackID=1"), "trackID=1");
  EXPECT_EQ(to_client("*"), "*");
  EXPECT_EQ(to_client("http://example.com/x"), "http://example.com/x");
}

TEST(rtsp_rewriter, rtp_info_quoted_urls_and_rtsp2) {
  std::string server
    = "RTSP/2.0 200 OK\r\nCSeq: 5\r\nRTP-Info: "
      "url=\"rtsp://192.168.1.10:554/s/t0\" ssrc=0A13C760:seq=45102, "
      "url=\"rtsp://192.168.1.10:554/s/t1\" ssrc=9A9DE123:seq=30211\r\n\r\n";
  auto f = run_flow(cam_map(), "", server, true);
  EXPECT_EQ(f.to_client,
            "RTSP/2.0 200 OK\r\nCSeq: 5\r\nRTP-Info: "
            "url=\"rtsp://127.0.0.1:8554/cam1/s/t0\" ssrc=0A13C760:seq=45102, "
            "url=\"rtsp://127.0.0.1:8554/cam1/s/t1\" ssrc=9A9DE123:seq=30211"
            "\r\n\r\n");
}

TEST(rtsp_rewriter, server_requests_and_client_responses) {
  // A server's own request (RTSP 2.0 style) goes to the client rewritten; the
  // client's response goes back untouched.
  std::string server = "GET_PARAMETER rtsp://192.168.1.10:554/s RTSP/1.0\r\n"
                       "CSeq: 100\r\nContent-Length: 0\r\n\r\n";
  std::string client = "RTSP/1.0 200 OK\r\nCSeq: 100\r\n\r\n";
  auto f = run_flow(cam_map(), client, server, false);
  EXPECT_EQ(f.to_client, "GET_PARAMETER rtsp://127.0.0.1:8554/cam1/s "
                         "RTSP/1.0\r\nCSeq: 100\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(f.to_server, client);
}

TEST(rtsp_rewriter, large_non_sdp_body_streams_untouched) {
  std::string body(100000, 'b');
  std::string server = "RTSP/1.0 200 OK\r\nCSeq: 8\r\nContent-Type: "
                       "text/parameters\r\nContent-Length: 100000\r\n\r\n"
                       + body + frame(0, "x");
  auto f = run_flow(cam_map(), "", server, false);
  EXPECT_EQ(f.to_client, server);
}

TEST(rtsp_rewriter, errors) {
  {
    rtsp_rewriter rw{cam_map()};
    std::string to_server, to_client;
    EXPECT_EQ(rw.from_client("garbage line\r\n\r\n", to_server, to_client),
              rtsp_rewriter::status::failed);
    EXPECT_EQ(to_server, "");
    EXPECT_EQ(to_client.rfind("RTSP/1.0 400 Bad Request\r\n", 0), 0u);
    EXPECT_EQ(rw.failure_reason(),
              "client: malformed request line \"garbage line\"");
    // failed stays failed
    EXPECT_EQ(
      rw.from_client("OPTIONS * RTSP/1.0\r\n\r\n", to_server, to_client),
      rtsp_rewriter::status::failed);
  }
  {
    rtsp_rewriter rw{cam_map()};
    std::string to_server, to_client;
    std::string head = "OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n";
    while (head.size() < 17000)
      head += "X: " + std::string(100, 'x') + "\r\n";
    EXPECT_EQ(rw.from_client(head, to_server, to_client),
              rtsp_rewriter::status::failed);
    EXPECT_EQ(to_client.rfind("RTSP/1.0 431 Request Header Fields Too Large"
                              "\r\nCSeq: 3\r\n",
                              0),
              0u);
  }
  {
    rtsp_rewriter rw{cam_map()};
    std::string out;
    EXPECT_EQ(
      rw.from_server("RTSP/1.0 200 OK\r\nContent-Length: x\r\n\r\n", out),
      rtsp_rewriter::status::failed);
    EXPECT_EQ(rw.failure_reason(), "server: bad Content-Length");
  }
}

// Random splits and random damage: whatever the bytes, the rewriter's output
// does not depend on how the input was cut, and it never crashes.
TEST(rtsp_rewriter, random_splits_and_mutations_are_consistent) {
  std::string base
    = "DESCRIBE rtsp://127.0.0.1:8554/cam1/s RTSP/1.0\r\nCSeq: 2\r\n\r\n"
      "SETUP rtsp://127.0.0.1:8554/cam1/s/t0 RTSP/1.0\r\nCSeq: 3\r\n"
      "Transport: RTP/AVP;unicast;client_port=1-2,RTP/AVP/TCP;interleaved=0-1"
      "\r\n\r\n"
      + frame(0, std::string(300, 'r'))
      + "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://192.168.1.10/s/\r\n"
        "Content-Type: application/sdp\r\nContent-Length: 40\r\n\r\n"
        "v=0\r\na=control:rtsp://192.168.1.10/s/t0\r\n"
      + "RTSP/1.0 200 OK\r\nRTP-Info: url=rtsp://x/a;seq=1,url=rtsp://x/b\r\n"
        "\r\n";
  uint32_t seed = 12345;
  auto rnd = [&] {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) & 0x7fff;
  };
  for (int round = 0; round < 300; ++round) {
    auto input = base;
    auto damage = rnd() % 4;
    for (uint32_t i = 0; i < damage; ++i)
      input[rnd() % input.size()] = static_cast<char>(rnd() % 256);
    for (auto from_client : {true, false}) {
      rtsp_rewriter one{cam_map()};
      rtsp_rewriter split{cam_map()};
      std::string a1, b1, a2, b2;
      rtsp_rewriter::status s1, s2 = rtsp_rewriter::status::ok;
      if (from_client)
        s1 = one.from_client(input, a1, b1);
      else
        s1 = one.from_server(input, a1);
      size_t pos = 0;
      while (pos < input.size() && s2 == rtsp_rewriter::status::ok) {
        auto n = std::min<size_t>(1 + rnd() % 64, input.size() - pos);
        auto piece = std::string_view{input}.substr(pos, n);
        s2 = from_client ? split.from_client(piece, a2, b2)
                         : split.from_server(piece, a2);
        pos += n;
      }
      EXPECT_EQ(s1, s2) << "round " << round;
      EXPECT_EQ(a1, a2) << "round " << round;
      EXPECT_EQ(b1, b2) << "round " << round;
    }
  }
}
