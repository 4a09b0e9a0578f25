// The SETUP/Transport rewriting for RTSP media as datagrams: both sides'
// media hooks behind an rtsp_rewriter, with a fake of the sockets and flow.
#include "actors/channel/protocol/rtsp_media.hpp"
#include "actors/channel/protocol/rtsp_rewriter.hpp"
#include "actors/channel/protocol/rtsp_transport.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

using namespace p2proxy;

namespace {

struct fake_io : rtsp_media_io {
  uint16_t next_port = 40000;         // 0: none free
  std::map<uint8_t, uint16_t> open;   // channel -> local RTP port
  std::map<uint8_t, uint16_t> remote; // channel -> remote RTP port
  std::map<uint8_t, bool> interleaved;
  std::vector<std::pair<uint8_t, std::string>> flow, udp;
  uint32_t timeout = 0;
  int alive = 0;
  uint16_t open_pair(uint8_t ch) override {
    if (next_port == 0)
      return 0;
    open[ch] = next_port;
    next_port += 2;
    return open[ch];
  }
  void set_remote_port(uint8_t ch, uint16_t rtp) override {
    remote[ch] = rtp;
  }
  void close_pair(uint8_t ch) override {
    open.erase(ch);
    remote.erase(ch);
  }
  void send_flow(uint8_t ch, std::string_view p) override {
    flow.emplace_back(ch, std::string{p});
  }
  void send_udp(uint8_t ch, std::string_view p) override {
    udp.emplace_back(ch, std::string{p});
  }
  void set_interleaved(uint8_t ch, bool on) override {
    if (on)
      interleaved[ch] = true;
    else
      interleaved.erase(ch);
  }
  void client_alive(uint32_t t) override {
    timeout = t;
    ++alive;
  }
};

/// A listening node's rewriter: URLs unchanged, the listener's media hook.
struct listener_side {
  fake_io io;
  rtsp_listener_media media{io};
  rtsp_rewriter rw{[] {
    rtsp_url_map m;
    m.rewrite_urls = false;
    return m;
  }()};
  std::string to_server, reply, to_client;
  listener_side() {
    rw.set_media(&media);
  }
  void client(const std::string& s, bool bytewise = false) {
    if (!bytewise) {
      ASSERT_EQ(rw.from_client(s, to_server, reply), rtsp_rewriter::status::ok);
      return;
    }
    for (size_t i = 0; i < s.size(); ++i)
      ASSERT_EQ(
        rw.from_client(std::string_view{s}.substr(i, 1), to_server, reply),
        rtsp_rewriter::status::ok);
  }
  void server(const std::string& s) {
    ASSERT_EQ(rw.from_server(s, to_client), rtsp_rewriter::status::ok);
  }
};

struct export_side {
  fake_io io;
  rtsp_export_media media;
  rtsp_rewriter rw{[] {
    rtsp_url_map m;
    m.server_authority = "192.168.1.10:554";
    m.resource = "cam1";
    return m;
  }()};
  std::string to_server, reply, to_client;
  explicit export_side(bool udp) : media(io, udp) {
    rw.set_media(&media);
  }
  void client(const std::string& s) {
    ASSERT_EQ(rw.from_client(s, to_server, reply), rtsp_rewriter::status::ok);
  }
  void server(const std::string& s) {
    ASSERT_EQ(rw.from_server(s, to_client), rtsp_rewriter::status::ok);
  }
};

std::string frame(uint8_t channel, const std::string& payload) {
  std::string f = "$";
  f += static_cast<char>(channel);
  f += static_cast<char>(payload.size() >> 8);
  f += static_cast<char>(payload.size() & 0xff);
  return f + payload;
}

/// A plausible RTP packet (version 2, 12-byte header) with `tail`.
std::string rtp(const std::string& tail) {
  return std::string("\x80\x60\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01", 12)
         + tail;
}

const std::string udp_setup
  = "SETUP rtsp://127.0.0.1:8554/cam1/stream/stream=0 RTSP/1.0\r\n"
    "CSeq: 3\r\n"
    "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n"
    "User-Agent: test\r\n\r\n";

} // namespace

TEST(rtsp_transport, parses_alternatives) {
  auto s = parse_rtsp_transport(
    "RTP/AVP;unicast;client_port=5000-5001;mode=\"PLAY\", "
    "RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=1A2B");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_FALSE(s[0].tcp);
  EXPECT_TRUE(valid_client_ports(s[0]));
  EXPECT_EQ(s[0].client_port[0], 5000u);
  EXPECT_EQ(s[0].mode, "\"PLAY\"");
  EXPECT_TRUE(s[1].tcp);
  EXPECT_TRUE(s[1].has_interleaved);
  EXPECT_EQ(s[1].interleaved[1], 3u);
  EXPECT_EQ(s[1].ssrc, "1A2B");
  // One port means RTCP on the next.
  EXPECT_TRUE(valid_client_ports(
    parse_rtsp_transport("RTP/AVP;unicast;client_port=6000").front()));
  for (auto bad :
       {"RTP/AVP;client_port=abc", "RTP/AVP;client_port=0-1",
        "RTP/AVP;client_port=5001-5000", "RTP/AVP;client_port=70000-70001",
        "RTP/AVP;client_port=5000-5003",
        "RTP/AVP;client_port=", "RTP/AVP;client_port=65535", "RTP/AVP;unicast"})
    EXPECT_FALSE(valid_client_ports(parse_rtsp_transport(bad).front())) << bad;
  EXPECT_TRUE(
    parse_rtsp_transport("RTP/AVP/TCP;interleaved=255-256").front().malformed);
  EXPECT_EQ(interleaved_transport(128, "AB", "play"),
            "RTP/AVP/TCP;unicast;interleaved=128-129;ssrc=AB;mode=play");
  EXPECT_EQ(udp_transport(5000, 40000),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=40000-40001");
  EXPECT_EQ(rtsp_session_timeout("12345678;timeout=30", 60), 30u);
  EXPECT_EQ(rtsp_session_timeout("12345678", 60), 60u);
  EXPECT_EQ(rtsp_session_timeout("1;timeout=0", 60), 60u);
  EXPECT_TRUE(plausible_rtp(rtp(""), false));
  EXPECT_FALSE(plausible_rtp(rtp("").substr(0, 11), false));
  EXPECT_FALSE(plausible_rtp(std::string(12, '\0'), false));      // version 0
  EXPECT_FALSE(plausible_rtp("\x8f" + rtp("").substr(1), false)); // CSRCs
  EXPECT_TRUE(plausible_rtp(std::string("\x80\xc9\x00\x01\0\0\0\0", 8), true));
  EXPECT_FALSE(plausible_rtp("\x80\xc9", true));
}

TEST(rtsp_media, listener_turns_a_udp_setup_into_marked_interleaved) {
  for (auto bytewise : {false, true}) {
    listener_side l;
    l.client(udp_setup, bytewise);
    EXPECT_EQ(l.reply, "");
    EXPECT_EQ(l.to_server,
              "SETUP rtsp://127.0.0.1:8554/cam1/stream/stream=0 RTSP/1.0\r\n"
              "CSeq: 3\r\n"
              "Transport: RTP/AVP/TCP;unicast;interleaved=128-129\r\n"
              "P2proxy-Media: datagram\r\n"
              "User-Agent: test\r\n\r\n");
    ASSERT_EQ(l.io.open.count(128), 1u);
    l.server("RTSP/1.0 200 OK\r\nCSeq: 3\r\n"
             "Transport: RTP/AVP/TCP;unicast;interleaved=128-129;ssrc=ABCD;"
             "mode=\"PLAY\"\r\nSession: 77;timeout=30\r\n\r\n");
    EXPECT_EQ(l.to_client, "RTSP/1.0 200 OK\r\nCSeq: 3\r\n"
                           "Transport: RTP/AVP;unicast;client_port=5000-5001;"
                           "server_port=40000-40001;ssrc=ABCD;mode=\"PLAY\"\r\n"
                           "Session: 77;timeout=30\r\n\r\n");
    EXPECT_EQ(l.io.remote[128], 5000);
    EXPECT_EQ(l.io.timeout, 30u);
    // Frames for its channels that still come on the stream go out by UDP;
    // other channels pass.
    l.to_client.clear();
    l.server(frame(128, rtp("a")) + frame(0, "x") + frame(129, "rtcp"));
    EXPECT_EQ(l.to_client, frame(0, "x"));
    ASSERT_EQ(l.io.udp.size(), 2u);
    EXPECT_EQ(l.io.udp[0], std::make_pair(uint8_t{128}, rtp("a")));
    EXPECT_EQ(l.io.udp[1].first, 129);
    // TEARDOWN frees the pair.
    l.client("TEARDOWN rtsp://127.0.0.1:8554/cam1/stream RTSP/1.0\r\n"
             "CSeq: 4\r\nSession: 77\r\n\r\n");
    EXPECT_TRUE(l.io.open.empty());
    EXPECT_EQ(l.media.pairs(), 0u);
  }
}

TEST(rtsp_media, listener_keeps_tcp_and_refuses_nonsense) {
  listener_side l;
  // TCP first: interleaved end to end, the UDP alternative removed.
  l.client("SETUP rtsp://h/cam1/s RTSP/1.0\r\nCSeq: 2\r\nTransport: "
           "RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;unicast;"
           "client_port=5000-5001\r\n\r\n");
  EXPECT_EQ(l.to_server, "SETUP rtsp://h/cam1/s RTSP/1.0\r\nCSeq: 2\r\n"
                         "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                         "\r\n");
  EXPECT_TRUE(l.io.open.empty());
  // Nonsense ports, UDP only: 400 with the CSeq, nothing forwarded.
  l.to_server.clear();
  l.client("SETUP rtsp://h/cam1/s RTSP/1.0\r\nCSeq: 5\r\nTransport: "
           "RTP/AVP;unicast;client_port=9-3\r\nContent-Length: 2\r\n\r\nxx"
           "OPTIONS * RTSP/1.0\r\nCSeq: 6\r\n\r\n");
  EXPECT_EQ(l.to_server, "OPTIONS * RTSP/1.0\r\nCSeq: 6\r\n\r\n");
  EXPECT_EQ(l.reply.rfind("RTSP/1.0 400 Bad Request\r\nCSeq: 5\r\n", 0), 0u)
    << l.reply;
  EXPECT_EQ(l.media.bad_setups(), 1u);
  EXPECT_EQ(l.rw.setups_refused(), 1u);
  // Nonsense ports with a TCP alternative: the TCP one.
  l.to_server.clear();
  l.client("SETUP rtsp://h/cam1/s RTSP/1.0\r\nCSeq: 7\r\nTransport: "
           "RTP/AVP;client_port=x,RTP/AVP/TCP;interleaved=0-1\r\n\r\n");
  EXPECT_NE(l.to_server.find("Transport: RTP/AVP/TCP;interleaved=0-1\r\n"),
            std::string::npos)
    << l.to_server;
  // A client's own mark never passes.
  l.to_server.clear();
  l.client("OPTIONS * RTSP/1.0\r\nCSeq: 8\r\nP2proxy-Media: datagram\r\n\r\n");
  EXPECT_EQ(l.to_server, "OPTIONS * RTSP/1.0\r\nCSeq: 8\r\n\r\n");
}

TEST(rtsp_media, listener_limits_and_failed_setups) {
  listener_side l;
  for (int i = 0; i < 5; ++i) {
    l.reply.clear();
    l.client("SETUP rtsp://h/cam1/s RTSP/1.0\r\nCSeq: " + std::to_string(10 + i)
             + "\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n");
  }
  EXPECT_EQ(l.io.open.size(), max_media_pairs_per_channel);
  EXPECT_EQ(l.reply.rfind("RTSP/1.0 453 Not Enough Bandwidth\r\nCSeq: 14", 0),
            0u)
    << l.reply;
  // A refused SETUP frees its pair; the others stay.
  l.server(
    "RTSP/1.0 454 Session Not Found\r\nCSeq: 10\r\nTransport: x\r\n\r\n");
  EXPECT_EQ(l.io.open.size(), max_media_pairs_per_channel - 1);
  // No port free: 453 for UDP only.
  listener_side none;
  none.io.next_port = 0;
  none.client(udp_setup);
  EXPECT_EQ(none.to_server, "");
  EXPECT_EQ(none.reply.rfind("RTSP/1.0 453", 0), 0u);
}

TEST(rtsp_media, export_side_interleaved_camera) {
  export_side e{false};
  e.client("SETUP rtsp://127.0.0.1:8554/cam1/stream/stream=0 RTSP/1.0\r\n"
           "CSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=128-129\r\n"
           "P2proxy-Media: datagram\r\n\r\n");
  EXPECT_EQ(e.to_server,
            "SETUP rtsp://192.168.1.10:554/stream/stream=0 RTSP/1.0\r\n"
            "CSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=128-129\r\n"
            "\r\n");
  EXPECT_TRUE(e.io.interleaved.count(128));
  e.server("RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: "
           "RTP/AVP/TCP;unicast;interleaved=128-129;ssrc=1\r\n\r\n");
  EXPECT_NE(e.to_client.find("interleaved=128-129;ssrc=1"), std::string::npos);
  e.to_client.clear();
  e.server(frame(128, rtp("v")) + frame(129, "sr") + frame(2, "other"));
  EXPECT_EQ(e.to_client, frame(2, "other"));
  ASSERT_EQ(e.io.flow.size(), 2u);
  EXPECT_EQ(e.io.flow[0], std::make_pair(uint8_t{128}, rtp("v")));
  EXPECT_EQ(e.io.flow[1], std::make_pair(uint8_t{129}, std::string{"sr"}));
  EXPECT_TRUE(e.rw.client_at_boundary());
  e.client("TEARDOWN rtsp://127.0.0.1:8554/cam1/stream RTSP/1.0\r\nCSeq: 4\r\n"
           "\r\n");
  EXPECT_TRUE(e.io.interleaved.empty());
  // Unmarked SETUPs are plain interleaved ones.
  export_side plain{false};
  plain.client("SETUP rtsp://127.0.0.1:8554/cam1/s RTSP/1.0\r\nCSeq: 3\r\n"
               "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n");
  EXPECT_TRUE(plain.io.interleaved.empty());
  plain.server(frame(0, "x"));
  EXPECT_EQ(plain.to_client, frame(0, "x"));
}

TEST(rtsp_media, export_side_udp_camera) {
  export_side e{true};
  e.client("SETUP rtsp://127.0.0.1:8554/cam1/stream/stream=0 RTSP/1.0\r\n"
           "CSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=128-129\r\n"
           "P2proxy-Media: datagram\r\n\r\n");
  EXPECT_EQ(e.to_server,
            "SETUP rtsp://192.168.1.10:554/stream/stream=0 RTSP/1.0\r\n"
            "CSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=40000-40001\r\n"
            "\r\n");
  e.server("RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;"
           "client_port=40000-40001;server_port=6970-6971;ssrc=9\r\n\r\n");
  EXPECT_EQ(e.to_client, "RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: "
                         "RTP/AVP/TCP;unicast;interleaved=128-129;ssrc=9\r\n"
                         "\r\n");
  EXPECT_EQ(e.io.remote[128], 6970);
  // A failed one frees its pair.
  e.client("SETUP rtsp://127.0.0.1:8554/cam1/stream/stream=1 RTSP/1.0\r\n"
           "CSeq: 4\r\nTransport: RTP/AVP/TCP;unicast;interleaved=130-131\r\n"
           "P2proxy-Media: datagram\r\n\r\n");
  EXPECT_EQ(e.io.open.size(), 2u);
  e.server("RTSP/1.0 404 Not Found\r\nCSeq: 4\r\n\r\n");
  EXPECT_EQ(e.io.open.size(), 1u);
}
