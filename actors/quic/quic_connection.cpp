#include "actors/quic/quic_connection_impl.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include <gnutls/crypto.h>

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

} // namespace p2proxy

namespace p2proxy::quic_detail {

namespace {

// ngtcp2's own trace, on stderr when P2PROXY_QUIC_DEBUG is set.
void debug_log(void*, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  std::vfprintf(stderr, format, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

} // namespace

connection::connection(bool server, const identity& me,
                       std::string expected_peer, const quic_settings& cfg,
                       quic_events& events, quic_time now)
  : server_(server), cfg_(cfg), events_(events), my_id_(me.node_id()),
    cred_(me), buf_(datagram_buffer) {
  binding_.ref.get_conn = [](ngtcp2_crypto_conn_ref* ref) {
    return static_cast<connection*>(ref->user_data)->conn_;
  };
  binding_.ref.user_data = this;
  binding_.expected_peer = std::move(expected_peer);
  last_heard_ = now;
  tls_ = quic_tls::make_session(server_, cred_, &binding_);
  if (!server_)
    start_client(now);
}

connection::~connection() {
  if (conn_ != nullptr)
    ngtcp2_conn_del(conn_);
  if (tls_ != nullptr)
    gnutls_deinit(tls_);
}

bool connection::handshake_done() const {
  return handshake_done_;
}

bool connection::closed() const {
  return closed_;
}

quic_time connection::expiry() const {
  if (conn_ == nullptr || closed_)
    return UINT64_MAX;
  return std::min(ngtcp2_conn_get_expiry(conn_), silence_deadline());
}

uint64_t connection::bytes_in_flight() const {
  if (conn_ == nullptr || closed_)
    return 0;
  ngtcp2_conn_stat cs;
  ngtcp2_conn_get_conn_stat(conn_, &cs);
  return cs.bytes_in_flight;
}

quic_time connection::silence_deadline() const {
  auto limit = static_cast<quic_time>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.idle_timeout)
      .count());
  return limit > 0 ? last_heard_ + limit : UINT64_MAX;
}

quic_stats connection::stats() const {
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
  st.path = current_path();
  for (auto& [id, s] : streams_)
    st.lost_packets += ngtcp2_conn_get_stream_loss_count(conn_, id);
  return st;
}

ngtcp2_callbacks connection::callbacks() const {
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
  cb.path_validation = on_path_validation;
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
  cb.recv_datagram = on_recv_datagram;
  cb.lost_datagram = on_lost_datagram;
  return cb;
}

ngtcp2_settings connection::settings(quic_time now) const {
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

ngtcp2_transport_params connection::params() const {
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  p.initial_max_stream_data_bidi_local = cfg_.stream_window;
  p.initial_max_stream_data_bidi_remote = cfg_.stream_window;
  p.initial_max_stream_data_uni = 0;
  p.initial_max_data = cfg_.connection_window;
  p.initial_max_streams_bidi = cfg_.max_streams;
  p.initial_max_streams_uni = 0;
  p.max_idle_timeout = ns(cfg_.idle_timeout);
  // The client moves to each new ICE pair (migrate()); the spare
  // connection ids each move needs come from a larger pool than the
  // default two.
  p.disable_active_migration = 0;
  p.active_connection_id_limit = connection_id_pool;
  p.max_datagram_frame_size = cfg_.max_datagram_frame_size;
  return p;
}

ngtcp2_cid connection::random_cid(size_t len) {
  ngtcp2_cid cid;
  cid.datalen = len;
  gnutls_rnd(GNUTLS_RND_NONCE, cid.data, len);
  return cid;
}

void connection::after_create() {
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  if (cfg_.keepalive.count() > 0)
    ngtcp2_conn_set_keep_alive_timeout(conn_, ns(cfg_.keepalive));
}

void connection::start_client(quic_time now) {
  auto dcid = random_cid(18);
  auto scid = random_cid(16);
  auto cb = callbacks();
  auto st = settings(now);
  auto tp = params();
  logical_path lp{0, false};
  auto rv
    = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &lp.path,
                             NGTCP2_PROTO_VER_V1, &cb, &st, &tp, nullptr, this);
  if (rv != 0)
    throw std::runtime_error(
      fmt::format("QUIC client setup: {}", ngtcp2_strerror(rv)));
  after_create();
}

// The server's connection starts from the client's first Initial
// (pitfall 5): its SCID becomes our DCID, its DCID the original_dcid.
bool connection::accept(const uint8_t* data, size_t size, quic_time now,
                        quic_path_id path) {
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data, size) != 0)
    return false; // not a client Initial: stray datagram
  auto scid = random_cid(16);
  auto cb = callbacks();
  auto st = settings(now);
  auto tp = params();
  tp.original_dcid = hd.dcid;
  logical_path lp{path, true};
  auto rv = ngtcp2_conn_server_new(&conn_, &hd.scid, &scid, &lp.path,
                                   hd.version, &cb, &st, &tp, nullptr, this);
  if (rv != 0) {
    conn_ = nullptr;
    finish(fmt::format("QUIC server setup: {}", ngtcp2_strerror(rv)));
    return false;
  }
  after_create();
  return true;
}

void connection::on_rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
  gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

int connection::on_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid,
                                     uint8_t* token, size_t cidlen, void*) {
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
int connection::on_handshake_completed(ngtcp2_conn*, void* ud) {
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

int connection::on_handshake_confirmed(ngtcp2_conn*, void* ud) {
  auto* c = self(ud);
  if (!c->handshake_done_ && c->binding_.verified
      && quic_tls::alpn_ok(c->tls_)) {
    c->handshake_done_ = true;
    c->handshake_event_ = true;
  }
  return 0;
}

quic_path_id connection::current_path() const {
  if (conn_ == nullptr)
    return 0;
  return logical_path::id_of(*ngtcp2_conn_get_path(conn_));
}

bool connection::migrate(quic_path_id path, quic_time now) {
  if (server_ || conn_ == nullptr || closed_ || depth_ > 0
      || path == current_path())
    return false;
  logical_path lp{path, false};
  int rv;
  {
    call_guard g{depth_};
    rv = ngtcp2_conn_initiate_immediate_migration(conn_, &lp.path, now);
  }
  if (rv == 0)
    migrating_ = true;
  else if (ngtcp2_err_is_fatal(rv))
    on_error(rv);
  flush();
  return rv == 0;
}

// The end of a path validation: of the path the client's migrate() moved
// to, or the server's of a path the client moved to (the server moves back
// on failure; the client stays, and its owner decides).
int connection::on_path_validation(ngtcp2_conn* conn, uint32_t,
                                   const ngtcp2_path* path,
                                   ngtcp2_path_validation_result res,
                                   void* ud) {
  auto* c = self(ud);
  auto id = logical_path::id_of(*path);
  bool mine = !c->server_ && c->migrating_;
  if (mine)
    c->migrating_ = false;
  if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) {
    if (logical_path::id_of(*ngtcp2_conn_get_path(conn)) == id)
      ++c->stats_.migrations;
  } else if (res == NGTCP2_PATH_VALIDATION_RESULT_FAILURE) {
    ++c->stats_.path_validation_failures;
  }
  return 0;
}

} // namespace p2proxy::quic_detail

namespace p2proxy {

std::unique_ptr<quic_connection>
quic_connection::make_client(const identity& me, std::string expected_peer,
                             const quic_settings& cfg, quic_events& events,
                             quic_time now) {
  return std::make_unique<quic_detail::connection>(
    false, me, std::move(expected_peer), cfg, events, now);
}

std::unique_ptr<quic_connection>
quic_connection::make_server(const identity& me, std::string expected_peer,
                             const quic_settings& cfg, quic_events& events,
                             quic_time now) {
  return std::make_unique<quic_detail::connection>(
    true, me, std::move(expected_peer), cfg, events, now);
}

} // namespace p2proxy
