#include "actors/quic/quic_connection.hpp"

#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <unordered_map>

#include <fmt/format.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "actors/quic/tls_context.hpp"

namespace p2proxy {

bool parse_congestion_control(const std::string& text,
                              congestion_control& out) {
  if (text == "bbr")
    out = congestion_control::bbr;
  else if (text == "bbr2")
    out = congestion_control::bbr2;
  else if (text == "cubic")
    out = congestion_control::cubic;
  else
    return false;
  return true;
}

namespace {

using namespace std::chrono;

constexpr uint64_t ns(milliseconds d) {
  return static_cast<uint64_t>(duration_cast<nanoseconds>(d).count());
}

// Send buffers grow in blocks that never move: ngtcp2 keeps pointers into
// them until the bytes are acknowledged (QUIC_NOTES pitfall 9).
constexpr size_t block_size = 64 * 1024;
// Enough for any datagram ngtcp2 writes (PMTUD probes stay below 1500).
constexpr size_t datagram_buffer = 2048;
// How often a closing endpoint repeats its CONNECTION_CLOSE to a peer that
// keeps sending (the first copy may be lost).
constexpr int max_close_resends = 8;
// A received reason phrase is quoted in our own reason; keep it short.
constexpr size_t max_reason_phrase = 256;

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

std::string printable(const uint8_t* data, size_t size) {
  std::string out;
  for (size_t i = 0; i < size && out.size() < max_reason_phrase; ++i) {
    auto c = static_cast<char>(data[i]);
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return out;
}

// "bad_certificate" for GnuTLS's "GNUTLS_A_BAD_CERTIFICATE".
std::string alert_name(uint8_t alert) {
  auto* name
    = gnutls_alert_get_strname(static_cast<gnutls_alert_description_t>(alert));
  if (name == nullptr)
    return fmt::format("{}", alert);
  std::string out = name;
  if (out.rfind("GNUTLS_A_", 0) == 0)
    out.erase(0, 9);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ngtcp2's own trace, on stderr when P2PROXY_QUIC_DEBUG is set.
void debug_log(void*, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  std::vfprintf(stderr, format, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

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
             const quic_settings& cfg, quic_events& events, quic_time now)
    : server_(server), cfg_(cfg), events_(events), my_id_(me.node_id()),
      cred_(me), buf_(datagram_buffer) {
    binding_.ref.get_conn = [](ngtcp2_crypto_conn_ref* ref) {
      return static_cast<connection*>(ref->user_data)->conn_;
    };
    binding_.ref.user_data = this;
    binding_.expected_peer = std::move(expected_peer);
    init_path();
    tls_ = quic_tls::make_session(server_, cred_, &binding_);
    if (!server_)
      start_client(now);
  }

  ~connection() override {
    if (conn_ != nullptr)
      ngtcp2_conn_del(conn_);
    if (tls_ != nullptr)
      gnutls_deinit(tls_);
  }

  // -- datagrams and time ----------------------------------------------------

  void receive(const uint8_t* data, size_t size, quic_time now) override {
    if (depth_ > 0)
      return; // from inside a callback: dropped like any UDP datagram
    stats_.bytes_received += size;
    ++stats_.packets_received;
    if (closed_) {
      if (close_state_ == close_sent && close_resends_ < max_close_resends) {
        resend_close_ = true;
        ++close_resends_;
      }
      return;
    }
    if (conn_ == nullptr && !(server_ && accept(data, size, now)))
      return;
    ngtcp2_pkt_info pi{};
    int rv;
    {
      call_guard g{depth_};
      rv = ngtcp2_conn_read_pkt(conn_, &path_, &pi, data, size, now);
    }
    if (rv != 0)
      on_error(rv);
    flush();
  }

  void write(quic_time now, std::vector<std::string>& out,
             size_t max) override {
    if (depth_ > 0 || conn_ == nullptr || max == 0)
      return;
    if (closed_) {
      write_close(now, out);
      return;
    }
    auto packets = write_packets(now, out, max);
    if (closed_)
      write_close(now, out);
    else if (packets > 0 && ngtcp2_conn_get_handshake_completed(conn_))
      // Not before: 0.12 would delay the client's Finished (pitfall 6).
      ngtcp2_conn_update_pkt_tx_time(conn_, now);
    flush();
  }

  quic_time expiry() const override {
    if (conn_ == nullptr || closed_)
      return UINT64_MAX;
    return ngtcp2_conn_get_expiry(conn_);
  }

  void on_expiry(quic_time now) override {
    if (depth_ > 0 || conn_ == nullptr || closed_)
      return;
    int rv;
    {
      call_guard g{depth_};
      rv = ngtcp2_conn_handle_expiry(conn_, now);
    }
    if (rv != 0)
      on_error(rv);
    flush();
  }

  // -- streams ---------------------------------------------------------------

  bool handshake_done() const override {
    return handshake_done_;
  }

  int64_t open_stream() override {
    if (!handshake_done_ || closed_)
      return -1;
    int64_t id = -1;
    auto s = std::make_unique<stream>(-1);
    if (ngtcp2_conn_open_bidi_stream(conn_, &id, s.get()) != 0)
      return -1;
    s->id = id;
    streams_.emplace(id, std::move(s));
    return id;
  }

  size_t write_stream(int64_t id, const uint8_t* data, size_t size,
                      bool fin) override {
    auto* s = find(id);
    if (s == nullptr || closed_ || s->closed || s->write_shut || s->local_reset
        || s->fin_queued)
      return 0;
    auto room = cfg_.stream_send_buffer > s->tx.unacked()
                  ? cfg_.stream_send_buffer - s->tx.unacked()
                  : 0;
    auto take = std::min<size_t>(size, room);
    s->tx.append(data, take);
    if (take < size)
      s->want_writable = true;
    else if (fin)
      s->fin_queued = true;
    schedule(*s);
    return take;
  }

  void consume(int64_t id, size_t size) override {
    if (conn_ == nullptr || closed_ || size == 0)
      return;
    // Both are plain bookkeeping in ngtcp2 and allowed inside callbacks; the
    // MAX_STREAM_DATA / MAX_DATA frames go out with the next write().
    ngtcp2_conn_extend_max_stream_offset(conn_, id, size);
    ngtcp2_conn_extend_max_offset(conn_, size);
  }

  void reset_stream(int64_t id, uint64_t app_error) override {
    auto* s = find(id);
    if (s == nullptr || closed_ || s->closed || s->local_reset)
      return;
    s->local_reset = true;
    s->want_writable = false;
    if (depth_ > 0)
      deferred_resets_.emplace_back(id, app_error);
    else
      ngtcp2_conn_shutdown_stream(conn_, id, app_error);
  }

  void stop_sending(int64_t id, uint64_t app_error) override {
    auto* s = find(id);
    if (s == nullptr || closed_ || s->closed || s->local_reset)
      return;
    if (depth_ > 0)
      deferred_stops_.emplace_back(id, app_error);
    else
      ngtcp2_conn_shutdown_stream_read(conn_, id, app_error);
  }

  size_t unacked(int64_t id) const override {
    auto i = streams_.find(id);
    return i == streams_.end() ? 0 : i->second->tx.unacked();
  }

  // -- the connection --------------------------------------------------------

  void close(const std::string& reason) override {
    if (closed_)
      return;
    if (conn_ != nullptr) {
      wire_reason_ = reason.substr(0, max_reason_phrase);
      ngtcp2_connection_close_error_default(&ccerr_);
      ngtcp2_connection_close_error_set_application_error(
        &ccerr_, 0, reinterpret_cast<const uint8_t*>(wire_reason_.data()),
        wire_reason_.size());
      close_state_ = close_pending;
    }
    finish(reason);
  }

  bool closed() const override {
    return closed_;
  }

  quic_stats stats() const override {
    auto st = stats_;
    if (conn_ == nullptr)
      return st;
    ngtcp2_conn_stat cs;
    ngtcp2_conn_get_conn_stat(conn_, &cs);
    st.smoothed_rtt = duration_cast<microseconds>(nanoseconds{cs.smoothed_rtt});
    if (cs.min_rtt != UINT64_MAX)
      st.min_rtt = duration_cast<microseconds>(nanoseconds{cs.min_rtt});
    st.cwnd = cs.cwnd;
    st.lost_packets = lost_in_closed_streams_;
    for (auto& [id, s] : streams_)
      st.lost_packets += ngtcp2_conn_get_stream_loss_count(conn_, id);
    return st;
  }

private:
  enum close_state { close_none, close_pending, close_sent };

  // -- setup -----------------------------------------------------------------

  void init_path() {
    // The real path is the ICE pair, which ngtcp2 never sees: a fixed
    // logical pair keeps it from suspecting a migration (pitfall 12).
    auto make = [](sockaddr_in& sa, uint16_t port) {
      std::memset(&sa, 0, sizeof(sa));
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    };
    make(local_addr_, server_ ? 2 : 1);
    make(remote_addr_, server_ ? 1 : 2);
    path_.local
      = {reinterpret_cast<ngtcp2_sockaddr*>(&local_addr_), sizeof(local_addr_)};
    path_.remote = {reinterpret_cast<ngtcp2_sockaddr*>(&remote_addr_),
                    sizeof(remote_addr_)};
    path_.user_data = nullptr;
  }

  ngtcp2_callbacks callbacks() const {
    // ~40 positional members: zero them and assign by name (pitfall 4).
    ngtcp2_callbacks cb;
    std::memset(&cb, 0, sizeof(cb));
    if (server_) {
      cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    } else {
      cb.client_initial = ngtcp2_crypto_client_initial_cb;
      cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
      cb.handshake_confirmed = on_handshake_confirmed;
    }
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = on_rand;
    cb.get_new_connection_id = on_new_connection_id;
    cb.handshake_completed = on_handshake_completed;
    cb.recv_stream_data = on_recv_stream_data;
    cb.acked_stream_data_offset = on_acked_stream_data;
    cb.stream_open = on_stream_open;
    cb.stream_close = on_stream_close;
    cb.stream_reset = on_stream_reset;
    cb.extend_max_stream_data = on_extend_max_stream_data;
    return cb;
  }

  ngtcp2_settings settings(quic_time now) const {
    ngtcp2_settings s;
    ngtcp2_settings_default(&s);
    switch (cfg_.congestion) {
      case congestion_control::bbr:
        s.cc_algo = NGTCP2_CC_ALGO_BBR;
        break;
      case congestion_control::bbr2:
        s.cc_algo = NGTCP2_CC_ALGO_BBR2;
        break;
      case congestion_control::cubic:
        s.cc_algo = NGTCP2_CC_ALGO_CUBIC;
        break;
    }
    s.initial_ts = now;
    // Flow control stays manual (consume()): no window auto-tuning.
    s.max_window = 0;
    s.max_stream_window = 0;
    if (cfg_.idle_timeout.count() > 0)
      s.handshake_timeout = ns(cfg_.idle_timeout);
    if (std::getenv("P2PROXY_QUIC_DEBUG") != nullptr)
      s.log_printf = debug_log;
    return s;
  }

  ngtcp2_transport_params params() const {
    ngtcp2_transport_params p;
    ngtcp2_transport_params_default(&p);
    p.initial_max_stream_data_bidi_local = cfg_.stream_window;
    p.initial_max_stream_data_bidi_remote = cfg_.stream_window;
    p.initial_max_stream_data_uni = 0;
    p.initial_max_data = cfg_.connection_window;
    p.initial_max_streams_bidi = cfg_.max_streams;
    p.initial_max_streams_uni = 0;
    p.max_idle_timeout = ns(cfg_.idle_timeout);
    p.disable_active_migration = 1;
    return p;
  }

  static ngtcp2_cid random_cid(size_t len) {
    ngtcp2_cid cid;
    cid.datalen = len;
    gnutls_rnd(GNUTLS_RND_NONCE, cid.data, len);
    return cid;
  }

  void after_create() {
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);
    if (cfg_.keepalive.count() > 0)
      ngtcp2_conn_set_keep_alive_timeout(conn_, ns(cfg_.keepalive));
  }

  void start_client(quic_time now) {
    auto dcid = random_cid(18);
    auto scid = random_cid(16);
    auto cb = callbacks();
    auto st = settings(now);
    auto tp = params();
    auto rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path_,
                                     NGTCP2_PROTO_VER_V1, &cb, &st, &tp,
                                     nullptr, this);
    if (rv != 0)
      throw std::runtime_error(
        fmt::format("QUIC client setup: {}", ngtcp2_strerror(rv)));
    after_create();
  }

  // The server's connection starts from the client's first Initial
  // (pitfall 5): its SCID becomes our DCID, its DCID the original_dcid.
  bool accept(const uint8_t* data, size_t size, quic_time now) {
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data, size) != 0)
      return false; // not a client Initial: stray datagram
    auto scid = random_cid(16);
    auto cb = callbacks();
    auto st = settings(now);
    auto tp = params();
    tp.original_dcid = hd.dcid;
    auto rv = ngtcp2_conn_server_new(&conn_, &hd.scid, &scid, &path_,
                                     hd.version, &cb, &st, &tp, nullptr, this);
    if (rv != 0) {
      conn_ = nullptr;
      finish(fmt::format("QUIC server setup: {}", ngtcp2_strerror(rv)));
      return false;
    }
    after_create();
    return true;
  }

  // -- writing ---------------------------------------------------------------

  void schedule(stream& s) {
    if (!s.in_ring && !s.blocked && s.has_pending()) {
      s.in_ring = true;
      ring_.push_back(s.id);
    }
  }

  // The next stream of the round-robin that can send now, or nullptr.
  stream* next_stream() {
    while (!ring_.empty()) {
      auto* s = find(ring_.front());
      if (s != nullptr && !s->closed && s->has_pending()) {
        if (s->tx.unsent() == 0)
          return s; // only the FIN is left: needs no credit
        if (ngtcp2_conn_get_max_stream_data_left(conn_, s->id) > 0) {
          // Out of connection credit: every stream waits for MAX_DATA.
          return ngtcp2_conn_get_max_data_left(conn_) > 0 ? s : nullptr;
        }
        s->blocked = true; // until extend_max_stream_data
      }
      if (s != nullptr)
        s->in_ring = false;
      ring_.pop_front();
    }
    return nullptr;
  }

  // Moves the front stream to the back if it still has data (round-robin
  // per packet), or drops it from the ring.
  void rotate(stream* s) {
    if (ring_.empty() || s == nullptr || ring_.front() != s->id)
      return;
    ring_.pop_front();
    if (s->has_pending() && !s->blocked) {
      ring_.push_back(s->id);
    } else {
      s->in_ring = false;
    }
  }

  size_t write_packets(quic_time now, std::vector<std::string>& out,
                       size_t max) {
    call_guard g{depth_};
    ngtcp2_pkt_info pi{};
    auto quantum
      = std::max<size_t>(ngtcp2_conn_get_send_quantum(conn_), datagram_buffer);
    size_t packets = 0;
    size_t bytes = 0;
    // Each round either completes a packet, stops, or retires a stream from
    // the ring; the bound only guards against a library surprise. A packet
    // left open by FLAG_MORE is always finished (stream -1, no MORE): ngtcp2
    // must not be called otherwise while one is pending (pitfall 8).
    size_t rounds = 0;
    size_t max_rounds = 4 * max + 2 * ring_.size() + 16;
    bool open_packet = false;
    for (;;) {
      bool more = packets < max && bytes < quantum && rounds < max_rounds;
      if (!more && !open_packet)
        break;
      ++rounds;
      auto* s = more ? next_stream() : nullptr;
      std::array<ngtcp2_vec, 16> vec;
      size_t nvec = 0;
      uint64_t offered = 0;
      uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
      int64_t sid = -1;
      if (s != nullptr) {
        sid = s->id;
        nvec = s->tx.unsent_vecs(vec.data(), vec.size(), offered);
        flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
        if (s->fin_queued && offered == s->tx.unsent())
          flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
      }
      ngtcp2_ssize taken = -1;
      auto n = ngtcp2_conn_writev_stream(conn_, nullptr, &pi, buf_.data(),
                                         buf_.size(), &taken, flags, sid,
                                         vec.data(), nvec, now);
      if (s != nullptr && taken >= 0) {
        s->tx.sent += static_cast<uint64_t>(taken);
        if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && s->tx.unsent() == 0)
          s->fin_sent = true;
      }
      if (n < 0) {
        switch (n) {
          case NGTCP2_ERR_WRITE_MORE:
            // Room left in the packet: offer it to the next stream.
            open_packet = true;
            rotate(s);
            continue;
          case NGTCP2_ERR_STREAM_DATA_BLOCKED:
            if (s != nullptr)
              s->blocked = true;
            open_packet = true;
            rotate(s);
            continue;
          case NGTCP2_ERR_STREAM_SHUT_WR:
          case NGTCP2_ERR_STREAM_NOT_FOUND:
            if (s != nullptr)
              s->write_shut = true;
            open_packet = true;
            rotate(s);
            continue;
          default:
            on_error(static_cast<int>(n));
            return packets;
        }
      }
      open_packet = false;
      if (n == 0)
        break; // congestion, pacing or nothing to send
      out.emplace_back(reinterpret_cast<const char*>(buf_.data()),
                       static_cast<size_t>(n));
      ++packets;
      bytes += static_cast<size_t>(n);
      stats_.bytes_sent += static_cast<uint64_t>(n);
      ++stats_.packets_sent;
      rotate(s);
    }
    return packets;
  }

  void write_close(quic_time now, std::vector<std::string>& out) {
    if (close_state_ == close_pending) {
      close_state_ = close_sent;
      ngtcp2_pkt_info pi{};
      ngtcp2_ssize n;
      {
        call_guard g{depth_};
        n = ngtcp2_conn_write_connection_close(conn_, nullptr, &pi, buf_.data(),
                                               buf_.size(), &ccerr_, now);
      }
      if (n > 0) {
        close_packet_.assign(reinterpret_cast<const char*>(buf_.data()),
                             static_cast<size_t>(n));
        resend_close_ = true;
      }
    }
    if (resend_close_ && !close_packet_.empty()) {
      resend_close_ = false;
      out.push_back(close_packet_);
      stats_.bytes_sent += close_packet_.size();
      ++stats_.packets_sent;
    }
  }

  // -- errors and closing ----------------------------------------------------

  void finish(std::string reason) {
    if (closed_)
      return;
    closed_ = true;
    handshake_event_ = false;
    events_.on_closed(reason);
  }

  void on_error(int rv) {
    if (closed_)
      return;
    switch (rv) {
      case NGTCP2_ERR_DRAINING:
        on_peer_closed();
        return;
      case NGTCP2_ERR_IDLE_CLOSE:
        // Silent by definition: the peer is gone or unreachable.
        finish(fmt::format("idle timeout: nothing heard from peer {} for {} ms",
                           binding_.expected_peer, cfg_.idle_timeout.count()));
        return;
      case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
        finish(fmt::format("QUIC handshake with {} timed out",
                           binding_.expected_peer));
        return;
      case NGTCP2_ERR_DROP_CONN:
        finish("QUIC connection dropped (invalid first packet)");
        return;
      default:
        break;
    }
    std::string reason;
    ngtcp2_connection_close_error_default(&ccerr_);
    // Identity failures carry no reason phrase on the wire: before the
    // handshake completes it would travel in packets an on-path observer can
    // decrypt (Initial keys are public), and node ids are not its business.
    if (rv == NGTCP2_ERR_CRYPTO || !binding_.failure.empty()) {
      auto alert = conn_ != nullptr ? ngtcp2_conn_get_tls_alert(conn_) : 0;
      if (alert == 0)
        alert = binding_.failure.empty() ? GNUTLS_A_HANDSHAKE_FAILURE
                                         : GNUTLS_A_BAD_CERTIFICATE;
      ngtcp2_connection_close_error_set_transport_error_tls_alert(
        &ccerr_, alert, nullptr, 0);
      reason = !binding_.failure.empty()
                 ? binding_.failure
                 : fmt::format("TLS handshake with {} failed (alert {})",
                               binding_.expected_peer, alert_name(alert));
    } else if (rv == NGTCP2_ERR_CALLBACK_FAILURE
               && !callback_failure_.empty()) {
      ngtcp2_connection_close_error_set_transport_error(
        &ccerr_, NGTCP2_INTERNAL_ERROR, nullptr, 0);
      reason = callback_failure_;
    } else {
      ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr_, rv,
                                                               nullptr, 0);
      reason = fmt::format("QUIC error: {}", ngtcp2_strerror(rv));
    }
    close_state_ = close_pending;
    finish(std::move(reason));
  }

  void on_peer_closed() {
    ngtcp2_connection_close_error cc;
    ngtcp2_conn_get_connection_close_error(conn_, &cc);
    auto phrase = printable(cc.reason, cc.reasonlen);
    auto with_phrase = phrase.empty() ? std::string{} : ": " + phrase;
    std::string reason;
    if (cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
      reason = phrase.empty()
                 ? fmt::format("peer closed the connection (application "
                               "error {})",
                               cc.error_code)
                 : fmt::format("peer closed the connection: {}", phrase);
    } else if ((cc.error_code & ~uint64_t{0xff}) == NGTCP2_CRYPTO_ERROR) {
      auto alert = static_cast<uint8_t>(cc.error_code & 0xff);
      reason = fmt::format("peer refused the TLS handshake with alert {} "
                           "(we are node id {}, we expect peer {}){}",
                           alert_name(alert), my_id_, binding_.expected_peer,
                           with_phrase);
    } else if (cc.error_code == NGTCP2_NO_ERROR) {
      reason = "peer closed the connection" + with_phrase;
    } else {
      reason = fmt::format("peer closed the connection with transport error "
                           "0x{:x}{}",
                           cc.error_code, with_phrase);
    }
    finish(std::move(reason));
  }

  // Runs what callbacks could not do inside ngtcp2, then tells the owner
  // about state changes; loops because the owner's handlers may add more.
  void flush() {
    for (;;) {
      if (!deferred_resets_.empty() && !closed_) {
        auto resets = std::move(deferred_resets_);
        deferred_resets_.clear();
        for (auto& [id, err] : resets)
          ngtcp2_conn_shutdown_stream(conn_, id, err);
        continue;
      }
      if (!deferred_stops_.empty() && !closed_) {
        auto stops = std::move(deferred_stops_);
        deferred_stops_.clear();
        for (auto& [id, err] : stops)
          if (auto* s = find(id); s != nullptr && !s->closed)
            ngtcp2_conn_shutdown_stream_read(conn_, id, err);
        continue;
      }
      if (handshake_event_ && !closed_) {
        handshake_event_ = false;
        events_.on_handshake_done();
        continue;
      }
      if (!closed_streams_.empty()) {
        auto id = closed_streams_.front();
        closed_streams_.pop_front();
        streams_.erase(id);
        events_.on_stream_closed(id);
        continue;
      }
      if (!writable_.empty()) {
        auto id = writable_.front();
        writable_.pop_front();
        auto* s = find(id);
        if (s != nullptr && !closed_ && !s->closed && !s->local_reset
            && !s->write_shut)
          events_.on_stream_writable(id);
        continue;
      }
      break;
    }
    if (closed_) {
      deferred_resets_.clear();
      deferred_stops_.clear();
      writable_.clear();
    }
  }

  // -- ngtcp2 callbacks ------------------------------------------------------

  static connection* self(void* user_data) {
    return static_cast<connection*>(user_data);
  }

  stream* find(int64_t id) {
    auto i = streams_.find(id);
    return i == streams_.end() ? nullptr : i->second.get();
  }

  // Our record of stream `id`, created (and announced) for a peer's stream
  // the first time any frame of it shows up.
  stream* touch(int64_t id) {
    if (auto* s = find(id))
      return s;
    if (ngtcp2_conn_is_local_stream(conn_, id))
      return nullptr;
    // A client may see the server's first stream before HANDSHAKE_DONE (that
    // packet was lost or came later). The server opens streams only after it
    // accepted us, so the handshake is as good as confirmed: say so first.
    if (!handshake_done_ && binding_.verified) {
      handshake_done_ = true;
      handshake_event_ = false;
      events_.on_handshake_done();
    }
    auto s = std::make_unique<stream>(id);
    auto* p = s.get();
    streams_.emplace(id, std::move(s));
    ngtcp2_conn_set_stream_user_data(conn_, id, p);
    events_.on_stream_open(id);
    return p;
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

  static void on_rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
    gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
  }

  static int on_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token,
                                  size_t cidlen, void*) {
    cid->datalen = cidlen;
    if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) != 0
        || gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN)
             != 0)
      return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
  }

  // Server: the client's Finished arrived, after its certificate passed.
  // Client: ngtcp2 calls this when *our* side is done; the server has not
  // yet checked us, so the owner hears about it on confirmation.
  static int on_handshake_completed(ngtcp2_conn*, void* ud) {
    auto* c = self(ud);
    if (!quic_tls::alpn_ok(c->tls_)) {
      c->callback_failure_
        = fmt::format("peer did not negotiate ALPN \"{}\"", quic_tls::alpn);
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (!c->binding_.verified) {
      c->callback_failure_
        = fmt::format("peer completed the handshake without proving node id {}",
                      c->binding_.expected_peer);
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (c->server_) {
      c->handshake_done_ = true;
      c->handshake_event_ = true;
    }
    return 0;
  }

  static int on_handshake_confirmed(ngtcp2_conn*, void* ud) {
    auto* c = self(ud);
    if (!c->handshake_done_ && c->binding_.verified
        && quic_tls::alpn_ok(c->tls_)) {
      c->handshake_done_ = true;
      c->handshake_event_ = true;
    }
    return 0;
  }

  static int on_recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t id,
                                 uint64_t, const uint8_t* data, size_t len,
                                 void* ud, void*) {
    auto* c = self(ud);
    return c->guarded([&] {
      if (c->touch(id) == nullptr)
        return;
      c->events_.on_stream_data(id, data, len,
                                (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    });
  }

  static int on_acked_stream_data(ngtcp2_conn*, int64_t id, uint64_t offset,
                                  uint64_t len, void* ud, void*) {
    auto* c = self(ud);
    auto* s = c->find(id);
    if (s == nullptr)
      return 0;
    s->tx.ack(offset, len);
    // Wake the owner once a quarter of the buffer is free, not per ACK.
    auto cap = c->cfg_.stream_send_buffer;
    if (s->want_writable && s->tx.unacked() + cap / 4 <= cap) {
      s->want_writable = false;
      c->writable_.push_back(id);
    }
    return 0;
  }

  static int on_stream_open(ngtcp2_conn*, int64_t id, void* ud) {
    auto* c = self(ud);
    return c->guarded([&] { c->touch(id); });
  }

  static int on_stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t id,
                             uint64_t app_error, void* ud, void*) {
    auto* c = self(ud);
    auto* s = c->find(id);
    if (s == nullptr)
      return 0;
    c->lost_in_closed_streams_ += ngtcp2_conn_get_stream_loss_count(conn, id);
    auto rc = 0;
    // A STOP_SENDING from the peer has no callback in 0.12; its code shows up
    // here, and the owner still needs to hear that the peer gave up.
    if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)
        && !s->reset_reported && !s->local_reset) {
      s->reset_reported = true;
      rc = c->guarded([&] { c->events_.on_stream_reset(id, app_error); });
    }
    s->closed = true;
    c->closed_streams_.push_back(id);
    if (!ngtcp2_conn_is_local_stream(conn, id))
      ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    return rc;
  }

  static int on_stream_reset(ngtcp2_conn*, int64_t id, uint64_t,
                             uint64_t app_error, void* ud, void*) {
    auto* c = self(ud);
    return c->guarded([&] {
      auto* s = c->touch(id);
      if (s == nullptr || s->reset_reported || s->local_reset)
        return;
      s->reset_reported = true;
      c->events_.on_stream_reset(id, app_error);
    });
  }

  static int on_extend_max_stream_data(ngtcp2_conn*, int64_t id, uint64_t,
                                       void* ud, void*) {
    auto* c = self(ud);
    if (auto* s = c->find(id); s != nullptr && s->blocked) {
      s->blocked = false;
      c->schedule(*s);
    }
    return 0;
  }

  // -- state -----------------------------------------------------------------

  bool server_;
  quic_settings cfg_;
  quic_events& events_;
  std::string my_id_;
  quic_tls::credentials cred_;
  quic_tls::peer_binding binding_;
  gnutls_session_t tls_ = nullptr;
  ngtcp2_conn* conn_ = nullptr;
  sockaddr_in local_addr_{};
  sockaddr_in remote_addr_{};
  ngtcp2_path path_{};
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
};

} // namespace

std::unique_ptr<quic_connection>
quic_connection::make_client(const identity& me, std::string expected_peer,
                             const quic_settings& cfg, quic_events& events,
                             quic_time now) {
  return std::make_unique<connection>(false, me, std::move(expected_peer), cfg,
                                      events, now);
}

std::unique_ptr<quic_connection>
quic_connection::make_server(const identity& me, std::string expected_peer,
                             const quic_settings& cfg, quic_events& events,
                             quic_time now) {
  return std::make_unique<connection>(true, me, std::move(expected_peer), cfg,
                                      events, now);
}

} // namespace p2proxy
