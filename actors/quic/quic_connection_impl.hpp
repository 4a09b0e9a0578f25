// The one quic_connection implementation, private to actors/quic: an
// ngtcp2 0.12 connection with its GnuTLS session. Its members live in three
// files along one seam: setup, handshake and state (quic_connection.cpp), the
// packet I/O, time and closing (quic_packets.cpp), and the stream
// bookkeeping with the stream callbacks (quic_streams.cpp). The few helpers
// both the send path and the callbacks call per packet are defined here, so
// every file can inline them.
#pragma once

#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "actors/quic/quic_connection.hpp"
#include "actors/quic/tls_context.hpp"

namespace p2proxy::quic_detail {

using namespace std::chrono;

inline constexpr uint64_t ns(milliseconds d) {
  return static_cast<uint64_t>(duration_cast<nanoseconds>(d).count());
}

// Send buffers grow in blocks that never move: ngtcp2 keeps pointers into
// them until the bytes are acknowledged (QUIC_NOTES pitfall 9).
inline constexpr size_t block_size = 64 * 1024;
// Enough for any datagram ngtcp2 writes (PMTUD probes stay below 1500).
inline constexpr size_t datagram_buffer = 2048;
// How often a closing endpoint repeats its CONNECTION_CLOSE to a peer that
// keeps sending (the first copy may be lost).
inline constexpr int max_close_resends = 8;
// Connection ids each side may hold from the other (the transport
// parameter active_connection_id_limit): a migration uses a spare one.
inline constexpr uint64_t connection_id_pool = 8;
// A received reason phrase is quoted in our own reason; keep it short.
inline constexpr size_t max_reason_phrase = 256;

// Bytes of one stream from the owner to ngtcp2: [acked, sent) are in flight,
// [sent, end) not yet handed to ngtcp2. Whole blocks below `acked` are freed.
struct send_buffer {
  std::deque<std::unique_ptr<uint8_t[]>> blocks;
  uint64_t base = 0; // stream offset of blocks.front()[0]
  uint64_t acked = 0;
  uint64_t sent = 0;
  uint64_t end = 0;

  uint64_t unacked() const {
    return end - acked;
  }
  uint64_t unsent() const {
    return end - sent;
  }

  void append(const uint8_t* data, size_t size) {
    while (size > 0) {
      auto pos = end - base;
      auto idx = pos / block_size;
      auto off = pos % block_size;
      if (idx == blocks.size())
        blocks.emplace_back(new uint8_t[block_size]);
      auto n = std::min<size_t>(size, block_size - off);
      std::memcpy(blocks[idx].get() + off, data, n);
      data += n;
      size -= n;
      end += n;
    }
  }

  // Describes up to `max` pieces of [sent, end); returns how many, with
  // their total in `total`.
  size_t unsent_vecs(ngtcp2_vec* v, size_t max, uint64_t& total) const {
    size_t n = 0;
    total = 0;
    auto at = sent;
    while (at < end && n < max) {
      auto pos = at - base;
      auto idx = pos / block_size;
      auto off = pos % block_size;
      auto len = std::min<uint64_t>(end - at, block_size - off);
      v[n].base = blocks[idx].get() + off;
      v[n].len = len;
      ++n;
      total += len;
      at += len;
    }
    return n;
  }

  void ack(uint64_t offset, uint64_t len) {
    acked = std::max(acked, offset + len);
    while (!blocks.empty() && base + block_size <= acked) {
      blocks.pop_front();
      base += block_size;
    }
  }
};

struct stream {
  explicit stream(int64_t i) : id(i) {}
  int64_t id;
  send_buffer tx;
  bool fin_queued = false;     // the owner ended our side
  bool fin_sent = false;       // ngtcp2 took the FIN
  bool write_shut = false;     // ngtcp2 refuses more (STOP_SENDING, reset)
  bool local_reset = false;    // reset_stream() was called
  bool reset_reported = false; // on_stream_reset() was delivered
  bool blocked = false;        // out of the peer's stream credit
  bool in_ring = false;        // queued in the fair scheduler
  bool want_writable = false;  // write_stream() fell short
  bool closed = false;         // ngtcp2 closed it; erased after the call

  bool has_pending() const {
    return !write_shut && !local_reset
           && (tx.unsent() > 0 || (fin_queued && !fin_sent));
  }
};

// The addresses ngtcp2 sees for path `id`. ICE below QUIC owns the real
// pair; each path id gets its own made-up local and remote address (10.x.y.z,
// the id in the low 24 bits), so a new ICE pair is a new path to QUIC
// (QUIC_NOTES pitfall 12). Only this side sees them.
struct logical_path {
  logical_path(quic_path_id id, bool server) {
    auto make = [id](sockaddr_in& sa, uint16_t port) {
      std::memset(&sa, 0, sizeof(sa));
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      sa.sin_addr.s_addr = htonl(0x0a000000u | (id & 0xffffffu));
    };
    make(local, server ? 2 : 1);
    make(remote, server ? 1 : 2);
    path.local = {reinterpret_cast<ngtcp2_sockaddr*>(&local), sizeof(local)};
    path.remote = {reinterpret_cast<ngtcp2_sockaddr*>(&remote), sizeof(remote)};
    path.user_data = nullptr;
  }
  logical_path(const logical_path&) = delete;
  logical_path& operator=(const logical_path&) = delete;

  /// The id of a path ngtcp2 reports (its local address).
  static quic_path_id id_of(const ngtcp2_path& p) {
    if (p.local.addr == nullptr || p.local.addrlen != sizeof(sockaddr_in))
      return 0;
    sockaddr_in sa{};
    std::memcpy(&sa, p.local.addr, sizeof(sa));
    return ntohl(sa.sin_addr.s_addr) & 0xffffffu;
  }

  sockaddr_in local{};
  sockaddr_in remote{};
  ngtcp2_path path{};
};

// Counts nesting of ngtcp2 calls: callbacks run inside them, and ngtcp2
// must not be re-entered for writing or reading from a callback.
struct call_guard {
  explicit call_guard(int& depth) : depth_(depth) {
    ++depth_;
  }
  ~call_guard() {
    --depth_;
  }
  int& depth_;
};

class connection final : public quic_connection {
public:
  connection(bool server, const identity& me, std::string expected_peer,
             const quic_settings& cfg, quic_events& events, quic_time now);
  ~connection() override;

  void receive(const uint8_t* data, size_t size, quic_time now,
               quic_path_id path) override;
  void write(quic_time now, std::vector<std::string>& out, size_t max) override;
  quic_path_id write_path() const override {
    return write_path_;
  }
  bool migrate(quic_path_id path, quic_time now) override;
  bool migrating() const override {
    return migrating_;
  }
  quic_path_id current_path() const override;
  quic_time expiry() const override;
  quic_time last_heard() const override {
    return last_heard_;
  }
  uint64_t bytes_in_flight() const override;
  void on_expiry(quic_time now) override;
  bool handshake_done() const override;
  int64_t open_stream() override;
  size_t write_stream(int64_t id, const uint8_t* data, size_t size,
                      bool fin) override;
  void consume(int64_t id, size_t size) override;
  void reset_stream(int64_t id, uint64_t app_error) override;
  void stop_sending(int64_t id, uint64_t app_error) override;
  size_t unacked(int64_t id) const override;
  void close(const std::string& reason) override;
  bool closed() const override;
  quic_stats stats() const override;
  datagram_result send_datagram(uint64_t flow, const uint8_t* data, size_t size,
                                quic_time now) override;
  size_t max_datagram_payload(uint64_t flow) const override;
  quic_datagram_stats datagram_stats() const override;

private:
  enum close_state { close_none, close_pending, close_sent };

  // -- setup and handshake (quic_connection.cpp) ------------------------------

  ngtcp2_callbacks callbacks() const;
  ngtcp2_settings settings(quic_time now) const;
  ngtcp2_transport_params params() const;
  static ngtcp2_cid random_cid(size_t len);
  void after_create();
  void start_client(quic_time now);
  bool accept(const uint8_t* data, size_t size, quic_time now,
              quic_path_id path);
  static void on_rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*);
  static int on_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token,
                                  size_t cidlen, void*);
  static int on_handshake_completed(ngtcp2_conn*, void* ud);
  static int on_handshake_confirmed(ngtcp2_conn*, void* ud);
  static int on_path_validation(ngtcp2_conn*, uint32_t flags,
                                const ngtcp2_path* path,
                                ngtcp2_path_validation_result res, void* ud);

  // -- packet I/O and closing (quic_packets.cpp) ------------------------------

  stream* next_stream();
  void rotate(stream* s);
  size_t write_packets(quic_time now, std::vector<std::string>& out,
                       size_t max);
  void write_close(quic_time now, std::vector<std::string>& out);
  /// Appends the packet ngtcp2 wrote into buf_ (`n` bytes, for `ps`) to
  /// this write()'s batch; false if it goes on another path than the
  /// batch's (then it waits in held_ for the next write()).
  bool emit(std::vector<std::string>& out, size_t n,
            const ngtcp2_path_storage& ps);
  void finish(const std::string& reason);
  void on_error(int rv);
  void on_peer_closed();
  void flush();

  // -- stream bookkeeping (quic_streams.cpp) ----------------------------------

  stream* touch(int64_t id);
  static int on_recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t id,
                                 uint64_t, const uint8_t* data, size_t len,
                                 void* ud, void*);
  static int on_acked_stream_data(ngtcp2_conn*, int64_t id, uint64_t offset,
                                  uint64_t len, void* ud, void*);
  static int on_stream_open(ngtcp2_conn*, int64_t id, void* ud);
  static int on_stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t id,
                             uint64_t app_error, void* ud, void*);
  static int on_stream_reset(ngtcp2_conn*, int64_t id, uint64_t,
                             uint64_t app_error, void* ud, void*);
  static int on_extend_max_stream_data(ngtcp2_conn*, int64_t id, uint64_t,
                                       void* ud, void*);

  // -- QUIC DATAGRAM (quic_datagrams.cpp) -------------------------------------

  /// Writes queued datagrams (before any stream data) into `out`; false
  /// after a fatal error or when a packet for another path ended the batch.
  bool write_datagrams(quic_time now, std::vector<std::string>& out, size_t max,
                       size_t quantum, size_t& packets, size_t& bytes,
                       ngtcp2_path_storage& ps);
  void drop_stale_datagrams(quic_time now);
  /// Takes datagrams_[i] out of the queue and its byte counts.
  void unqueue_datagram(size_t i);
  /// The queue is over its bound: the flow holding the most bytes loses its
  /// oldest datagram, so one flooding flow cannot crowd out the others.
  void drop_for_room();
  static int on_recv_datagram(ngtcp2_conn*, uint32_t flags, const uint8_t* data,
                              size_t len, void* ud);
  static int on_lost_datagram(ngtcp2_conn*, uint64_t id, void* ud);

  // -- inline: called per packet from every file ------------------------------

  static connection* self(void* user_data) {
    return static_cast<connection*>(user_data);
  }

  stream* find(int64_t id) {
    auto i = streams_.find(id);
    return i == streams_.end() ? nullptr : i->second.get();
  }

  void schedule(stream& s) {
    if (!s.in_ring && !s.blocked && s.has_pending()) {
      s.in_ring = true;
      ring_.push_back(s.id);
    }
  }

  // Owner handlers must not unwind through ngtcp2's C frames.
  template <class F>
  int guarded(F&& f) {
    try {
      f();
      return 0;
    } catch (const std::exception& e) {
      callback_failure_ = fmt::format("event handler failed: {}", e.what());
    } catch (...) {
      callback_failure_ = "event handler failed";
    }
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }

  // -- state ------------------------------------------------------------------

  bool server_;
  quic_settings cfg_;
  quic_events& events_;
  std::string my_id_;
  quic_tls::credentials cred_;
  quic_tls::peer_binding binding_;
  gnutls_session_t tls_ = nullptr;
  ngtcp2_conn* conn_ = nullptr;
  std::vector<uint8_t> buf_;
  int depth_ = 0;

  bool handshake_done_ = false;
  bool handshake_event_ = false;
  bool closed_ = false;
  close_state close_state_ = close_none;
  ngtcp2_connection_close_error ccerr_{};
  std::string wire_reason_;
  std::string close_packet_;
  bool resend_close_ = false;
  int close_resends_ = 0;
  std::string callback_failure_;

  std::unordered_map<int64_t, std::unique_ptr<stream>> streams_;
  std::deque<int64_t> ring_;
  std::deque<int64_t> closed_streams_;
  std::deque<int64_t> writable_;
  std::vector<std::pair<int64_t, uint64_t>> deferred_resets_;
  std::vector<std::pair<int64_t, uint64_t>> deferred_stops_;

  quic_stats stats_;
  uint64_t lost_in_closed_streams_ = 0;

  // Paths (quic_packets.cpp): the batch's path, a packet for another path
  // that ended the last batch, and a migrate() under validation.
  quic_path_id write_path_ = 0;
  bool batch_open_ = false;
  std::string held_;
  quic_path_id held_path_ = 0;
  bool migrating_ = false;
  /// When a packet from the peer was last accepted. The session's silence
  /// limit counts from here: ngtcp2 also restarts its idle timer when it
  /// sends the first ack-eliciting packet after a receive (RFC 9000
  /// 10.1), so a keepalive PING sent into a silence would stretch that
  /// silence by up to the keepalive interval.
  quic_time last_heard_ = 0;
  quic_time silence_deadline() const;

  // QUIC DATAGRAM: flow id prefix + payload, with the time it was queued.
  struct queued_datagram {
    std::string bytes;
    quic_time at = 0;
    uint64_t flow = 0;
  };
  std::deque<queued_datagram> datagrams_;
  size_t datagram_bytes_ = 0;
  std::unordered_map<uint64_t, size_t> datagram_flow_bytes_; // queued, per flow
  uint64_t datagram_ids_ = 0;
  quic_datagram_stats dstats_;
};

} // namespace p2proxy::quic_detail
