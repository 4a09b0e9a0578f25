// QUIC DATAGRAM on quic_connection, in memory over a QUIC PIPE with virtual
// time: flow ids, sizing to the path, and the drop-don't-delay queue.
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "actors/quic/quic_connection.hpp"
#include "actors/quic/quic_pipe.hpp"
#include "actors/quic/quic_varint.hpp"

using namespace p2proxy;

namespace {

constexpr quic_time ms = 1'000'000;

// One end: keeps what arrives; consumes stream bytes as they come.
struct dgram_end : quic_events {
  quic_connection* conn = nullptr;
  bool handshake = false;
  std::optional<std::string> closed;
  struct arrival {
    uint64_t flow;
    std::string bytes;
    quic_time at;
  };
  std::vector<arrival> got;
  const quic_time* clock = nullptr;
  uint64_t stream_bytes = 0;
  bool stream_fin = false;

  void on_handshake_done() override {
    handshake = true;
  }
  void on_stream_open(int64_t) override {}
  void on_stream_data(int64_t id, const uint8_t*, size_t size,
                      bool fin) override {
    stream_bytes += size;
    stream_fin = stream_fin || fin;
    conn->consume(id, size);
  }
  void on_stream_reset(int64_t, uint64_t) override {}
  void on_stream_closed(int64_t) override {}
  void on_stream_writable(int64_t) override {}
  void on_closed(const std::string& reason) override {
    closed = reason;
  }
  void on_datagram(uint64_t flow, const uint8_t* data, size_t size) override {
    got.push_back({flow, std::string(reinterpret_cast<const char*>(data), size),
                   clock != nullptr ? *clock : 0});
  }
};

quic_settings settings() {
  quic_settings s;
  s.idle_timeout = std::chrono::milliseconds{5000};
  s.keepalive = std::chrono::milliseconds{1000};
  return s;
}

std::string pattern(size_t size, uint64_t seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i)
    s[i] = static_cast<char>((seed * 131 + i * 7) & 0xff);
  return s;
}

struct datagram_pair : ::testing::Test {
  identity id_a = identity::generate();
  identity id_b = identity::generate();
  dgram_end a, b;
  std::unique_ptr<quic_connection> ca, cb;
  quic_pipe pipe;

  void connect(const quic_settings& sa = settings(),
               const quic_settings& sb = settings()) {
    ca = quic_connection::make_client(id_a, id_b.node_id(), sa, a, pipe.now);
    cb = quic_connection::make_server(id_b, id_a.node_id(), sb, b, pipe.now);
    a.conn = pipe.a = ca.get();
    b.conn = pipe.b = cb.get();
    a.clock = b.clock = &pipe.now;
    ASSERT_TRUE(pipe.run_until([&] { return a.handshake && b.handshake; }));
  }

  /// Moves time on for A alone while B is frozen (the pipe would jump
  /// straight to A's next timer): what A writes goes nowhere.
  void frozen_tick(quic_time span) {
    pipe.now += span;
    if (ca->expiry() <= pipe.now)
      ca->on_expiry(pipe.now);
    std::vector<std::string> out;
    ca->write(pipe.now, out, 64);
  }

  datagram_result send(quic_connection& c, uint64_t flow,
                       const std::string& bytes) {
    return c.send_datagram(flow, reinterpret_cast<const uint8_t*>(bytes.data()),
                           bytes.size(), pipe.now);
  }
};

} // namespace

TEST(quic_varint, round_trips_at_every_length_and_refuses_truncation) {
  for (uint64_t v : {uint64_t{0}, uint64_t{63}, uint64_t{64}, uint64_t{16383},
                     uint64_t{16384}, (uint64_t{1} << 30) - 1,
                     uint64_t{1} << 30, max_varint}) {
    uint8_t buf[8];
    auto n = put_varint(buf, v);
    EXPECT_EQ(n, varint_size(v));
    uint64_t back = 0;
    EXPECT_EQ(get_varint(buf, n, back), n);
    EXPECT_EQ(back, v);
    EXPECT_EQ(get_varint(buf, n - 1, back), 0u) << v;
  }
  // RFC 9000's example: 0x7bbd is 15293.
  const uint8_t ex[] = {0x7b, 0xbd};
  uint64_t v = 0;
  EXPECT_EQ(get_varint(ex, 2, v), 2u);
  EXPECT_EQ(v, 15293u);
}

TEST_F(datagram_pair,
       unavailable_before_the_handshake_and_when_a_side_turns_them_off) {
  auto off = settings();
  off.max_datagram_frame_size = 0;
  ca = quic_connection::make_client(id_a, id_b.node_id(), settings(), a,
                                    pipe.now);
  EXPECT_EQ(ca->max_datagram_payload(1), 0u);
  EXPECT_EQ(send(*ca, 1, "early"), datagram_result::unavailable);
  cb = quic_connection::make_server(id_b, id_a.node_id(), off, b, pipe.now);
  a.conn = pipe.a = ca.get();
  b.conn = pipe.b = cb.get();
  ASSERT_TRUE(pipe.run_until([&] { return a.handshake && b.handshake; }));
  EXPECT_EQ(ca->max_datagram_payload(1), 0u);
  EXPECT_EQ(send(*ca, 1, "x"), datagram_result::unavailable);
  EXPECT_EQ(ca->datagram_stats().dropped_unavailable, 2u);
  // B turned them off: it sends none either, and streams still work.
  EXPECT_EQ(cb->max_datagram_payload(1), 0u);
  EXPECT_EQ(send(*cb, 1, "to a"), datagram_result::unavailable);
  auto id = ca->open_stream();
  ASSERT_GE(id, 0);
  const uint8_t hi[] = {'h', 'i'};
  EXPECT_EQ(ca->write_stream(id, hi, 2, true), 2u);
  ASSERT_TRUE(pipe.run_until([&] { return b.stream_fin; }));
  EXPECT_EQ(b.stream_bytes, 2u);
  EXPECT_TRUE(a.got.empty() && b.got.empty());
}

TEST_F(datagram_pair, every_size_arrives_intact_with_its_flow_id) {
  connect();
  pipe.run_for(200 * ms); // path MTU discovery
  auto limit = ca->max_datagram_payload(70000);
  EXPECT_GE(limit, 1200u) << "a 1500-byte path carries 1200-byte payloads";
  std::map<uint64_t, std::string> sent;
  uint64_t flows[] = {0, 63, 64, 70000, max_varint};
  for (uint64_t i = 0; i < 1000; ++i) {
    auto flow = flows[i % 5];
    auto size = static_cast<size_t>(1 + (i * 37) % 1200);
    auto bytes = pattern(size, i);
    bytes.replace(0, std::min<size_t>(8, size),
                  std::to_string(i).substr(0, std::min<size_t>(8, size)));
    ASSERT_EQ(send(*ca, flow, bytes), datagram_result::queued) << i;
    sent[i] = bytes;
    pipe.run_for(ms / 4);
  }
  pipe.run_for(50 * ms);
  ASSERT_EQ(b.got.size(), 1000u);
  for (uint64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(b.got[i].flow, flows[i % 5]);
    EXPECT_EQ(b.got[i].bytes, sent[i]) << i;
  }
  auto st = ca->datagram_stats();
  EXPECT_EQ(st.sent, 1000u);
  EXPECT_EQ(cb->datagram_stats().received, 1000u);
  EXPECT_EQ(st.dropped_congestion + st.dropped_expired + st.dropped_oversize,
            0u);
}

TEST_F(datagram_pair, oversize_for_a_1280_byte_path_is_dropped_and_counted) {
  pipe.mtu = 1280 - 28; // IPv4 + UDP headers
  connect();
  pipe.run_for(2000 * ms); // PMTUD probes above the MTU are lost
  auto limit = ca->max_datagram_payload(1);
  ASSERT_GT(limit, 1000u);
  EXPECT_LT(limit, 1252u);
  EXPECT_EQ(send(*ca, 1, pattern(1400, 1)), datagram_result::too_big);
  EXPECT_EQ(send(*ca, 1, pattern(limit + 1, 2)), datagram_result::too_big);
  EXPECT_EQ(send(*ca, 1, pattern(limit, 3)), datagram_result::queued);
  pipe.run_for(20 * ms);
  ASSERT_EQ(b.got.size(), 1u); // nothing fragmented, nothing garbled
  EXPECT_EQ(b.got[0].bytes, pattern(limit, 3));
  EXPECT_EQ(ca->datagram_stats().dropped_oversize, 2u);
  EXPECT_FALSE(a.closed);
  EXPECT_FALSE(b.closed);
}

TEST_F(datagram_pair, a_full_window_drops_the_oldest_instead_of_delaying) {
  connect();
  pipe.run_for(100 * ms);
  pipe.b_frozen = true; // no ACKs come back: the window fills and stays full
  auto payload = pattern(1000, 9);
  for (int i = 0; i < 400; ++i) {
    ASSERT_EQ(send(*ca, 2, payload), datagram_result::queued);
    frozen_tick(ms / 10);
  }
  auto st = ca->datagram_stats();
  EXPECT_GT(st.sent, 0u);
  EXPECT_GT(st.dropped_congestion, 0u);
  // What waits is bounded by bytes, and is gone once too old.
  frozen_tick(100 * ms);
  EXPECT_EQ(send(*ca, 2, payload), datagram_result::queued);
  frozen_tick(ms / 10);
  auto later = ca->datagram_stats();
  EXPECT_GT(later.dropped_expired, 0u);
  // Every datagram went out or was dropped, but for at most the newest one,
  // which the full window holds back (for less than datagram_max_delay).
  auto settled = later.sent + later.dropped_congestion + later.dropped_expired;
  EXPECT_GE(settled, 400u);
  EXPECT_LE(settled, 401u);
  EXPECT_FALSE(a.closed);
}

TEST_F(datagram_pair, datagrams_are_not_held_behind_a_bulk_stream) {
  connect();
  pipe.delay = 5 * ms;
  pipe.run_for(100 * ms);
  auto id = ca->open_stream();
  ASSERT_GE(id, 0);
  // A bulk transfer keeps the window full for the whole measurement.
  std::string chunk = pattern(64 * 1024, 5);
  uint64_t queued = 0;
  auto feed = [&] {
    while (ca->unacked(id) < 2 * 1024 * 1024) {
      auto n
        = ca->write_stream(id, reinterpret_cast<const uint8_t*>(chunk.data()),
                           chunk.size(), false);
      queued += n;
      if (n < chunk.size())
        break;
    }
  };
  feed();
  // One 200-byte datagram every millisecond for half a second, its send
  // time inside.
  for (int i = 0; i < 500; ++i) {
    auto bytes = pattern(200, static_cast<uint64_t>(i));
    std::memcpy(bytes.data(), &pipe.now, sizeof(pipe.now));
    send(*ca, 7, bytes);
    pipe.run_for(ms);
    feed();
  }
  pipe.run_for(50 * ms);
  EXPECT_GT(b.stream_bytes, 1024u * 1024) << "the bulk stream moved";
  ASSERT_GE(b.got.size(), 475u) << "at most 5 % dropped";
  quic_time worst = 0;
  for (auto& g : b.got) {
    quic_time sent = 0;
    std::memcpy(&sent, g.bytes.data(), sizeof(sent));
    worst = std::max(worst, g.at - sent);
  }
  // One-way delay plus at most the queue's age bound.
  EXPECT_LE(worst, pipe.delay + 25 * ms + ms);
}

TEST_F(datagram_pair, a_flooding_flow_loses_its_own_datagrams_not_the_others) {
  auto cfg = settings();
  cfg.datagram_max_delay = std::chrono::milliseconds{2000};
  connect(cfg, cfg);
  pipe.run_for(100 * ms);
  // All at one instant, nothing written in between: far more than the
  // queue holds (64 KiB), flow 1 flooding, flow 2 quiet among it.
  auto big = pattern(1000, 1);
  for (int i = 0; i < 300; ++i)
    ASSERT_EQ(send(*ca, 1, big), datagram_result::queued);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(send(*ca, 2, "quiet " + std::to_string(i)),
              datagram_result::queued);
    send(*ca, 1, big);
    send(*ca, 1, big);
  }
  auto st = ca->datagram_stats();
  EXPECT_GT(st.dropped_congestion, 200u);
  pipe.run_for(500 * ms);
  std::vector<std::string> quiet;
  size_t loud = 0;
  for (auto& g : b.got)
    if (g.flow == 2)
      quiet.push_back(g.bytes);
    else
      ++loud;
  ASSERT_EQ(quiet.size(), 10u) << "the quiet flow lost datagrams";
  EXPECT_EQ(quiet.front(), "quiet 0");
  EXPECT_EQ(quiet.back(), "quiet 9");
  EXPECT_LE(loud, 66u); // what the queue held of the flood
  EXPECT_EQ(loud + ca->datagram_stats().dropped_congestion, 320u);
}
