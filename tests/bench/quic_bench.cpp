// quic_bench: in-memory throughput of one QUIC stream between two
// quic_connections in this process (QUIC PIPE, virtual time), clean and with
// 1 % random loss. Measures the CPU cost of ngtcp2 + GnuTLS + our stream
// scheduler; no sockets, so no kernel cost (which dominates over a real
// path, see QUIC_NOTES.md). A benchmark, not a test: it always exits 0
// unless the data arrives damaged.
//
//   quic_bench [MiB=256]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "actors/quic/quic_connection.hpp"
#include "actors/quic/quic_pipe.hpp"

using namespace p2proxy;

namespace {

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto tv = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

struct sink : quic_events {
  quic_connection* conn = nullptr;
  // Receiver side: the bytes must repeat `expect` from offset 0 (memcmp is
  // cheap next to QUIC; a hash would dominate the CPU figure).
  const std::string* expect = nullptr;
  bool damaged = false;
  uint64_t bytes = 0;
  bool fin = false;
  bool up = false;
  std::string reason;
  // Sender side.
  int64_t stream = -1;
  uint64_t to_send = 0;
  std::string block;
  size_t block_off = 0;

  void on_handshake_done() override {
    up = true;
  }
  void on_stream_open(int64_t) override {}
  void on_stream_data(int64_t id, const uint8_t* data, size_t size,
                      bool f) override {
    if (expect != nullptr)
      check(data, size);
    bytes += size;
    fin = fin || f;
    conn->consume(id, size);
  }
  void on_stream_reset(int64_t, uint64_t) override {}
  void on_stream_closed(int64_t) override {}
  void on_stream_writable(int64_t) override {
    pump();
  }
  void on_closed(const std::string& r) override {
    reason = r;
  }

  void check(const uint8_t* data, size_t size) {
    auto off = bytes;
    while (size > 0) {
      auto at = off % expect->size();
      auto n = std::min<size_t>(size, expect->size() - at);
      if (std::memcmp(data, expect->data() + at, n) != 0)
        damaged = true;
      data += n;
      size -= n;
      off += n;
    }
  }

  // Writes the same 64 KiB block over and over.
  void pump() {
    while (to_send > 0) {
      auto rest = std::min<uint64_t>(block.size() - block_off, to_send);
      auto n = conn->write_stream(
        stream, reinterpret_cast<const uint8_t*>(block.data()) + block_off,
        rest, rest == to_send);
      block_off = (block_off + n) % block.size();
      to_send -= n;
      if (n < rest)
        return;
    }
  }
};

struct result {
  double wall = 0, cpu = 0, virt = 0;
  uint64_t dropped = 0, lost = 0;
  bool intact = false;
  std::string error;
};

result run(uint64_t size, double loss) {
  auto id_a = identity::generate();
  auto id_b = identity::generate();
  quic_settings cfg; // the production defaults
  quic_pipe pipe;
  pipe.loss = loss;
  sink a, b;
  auto ca
    = quic_connection::make_client(id_a, id_b.node_id(), cfg, a, pipe.now);
  auto cb
    = quic_connection::make_server(id_b, id_a.node_id(), cfg, b, pipe.now);
  a.conn = ca.get();
  b.conn = cb.get();
  pipe.a = ca.get();
  pipe.b = cb.get();
  result r;
  if (!pipe.run_until([&] { return a.up && b.up; })) {
    r.error = "handshake: " + a.reason + " / " + b.reason;
    return r;
  }
  a.block.resize(64 * 1024);
  for (size_t i = 0; i < a.block.size(); ++i)
    a.block[i] = static_cast<char>((i * 2654435761u) >> 13);
  b.expect = &a.block;
  auto wall0 = std::chrono::steady_clock::now();
  auto cpu0 = cpu_seconds();
  auto virt0 = pipe.now;
  a.stream = ca->open_stream();
  a.to_send = size;
  a.pump();
  bool ok = pipe.run_until([&] { return b.fin || !b.reason.empty(); },
                           3600'000'000'000ull);
  r.cpu = cpu_seconds() - cpu0;
  r.wall
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0)
        .count();
  r.virt = (pipe.now - virt0) / 1e9;
  r.dropped = pipe.dropped;
  r.lost = ca->stats().lost_packets;
  r.intact = ok && b.bytes == size && !b.damaged;
  if (!ok || !b.reason.empty())
    r.error = "transfer: " + b.reason;
  return r;
}

} // namespace

int main(int argc, char** argv) {
  uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;
  if (mib == 0)
    mib = 256;
  uint64_t size = mib * 1024 * 1024;
  std::printf("quic_bench: one stream, %llu MiB, in memory (both ends in this "
              "process; CPU is both ends together)\n",
              static_cast<unsigned long long>(mib));
  std::printf("%-6s %10s %10s %12s %14s %8s %8s  %s\n", "loss", "MB/s",
              "wall s", "CPU s", "CPU s per GB", "dropped", "lost", "data");
  bool all_ok = true;
  for (double loss : {0.0, 0.01}) {
    auto r = run(size, loss);
    if (!r.error.empty())
      std::printf("%5.1f%%  error: %s\n", loss * 100, r.error.c_str());
    double mb = size / 1e6;
    std::printf("%5.1f%% %10.1f %10.2f %12.2f %14.2f %8llu %8llu  %s\n",
                loss * 100, mb / r.wall, r.wall, r.cpu, r.cpu / (size / 1e9),
                static_cast<unsigned long long>(r.dropped),
                static_cast<unsigned long long>(r.lost),
                r.intact ? "intact" : "DAMAGED");
    all_ok = all_ok && r.intact;
  }
  return all_ok ? 0 : 1;
}
