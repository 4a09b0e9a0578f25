#include "actors/quic/quic_connection_impl.hpp"

#include <array>
#include <cctype>

namespace p2proxy::quic_detail {

namespace {

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

} // namespace

void connection::receive(const uint8_t* data, size_t size, quic_time now,
                         quic_path_id path) {
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
  if (conn_ == nullptr && !(server_ && accept(data, size, now, path)))
    return;
  ngtcp2_pkt_info pi{};
  logical_path lp{path, server_};
  int rv;
  {
    call_guard g{depth_};
    rv = ngtcp2_conn_read_pkt(conn_, &lp.path, &pi, data, size, now);
  }
  if (rv != 0)
    on_error(rv);
  else
    last_heard_ = std::max(last_heard_, now);
  flush();
}

void connection::write(quic_time now, std::vector<std::string>& out,
                       size_t max) {
  if (depth_ > 0 || conn_ == nullptr || max == 0)
    return;
  batch_open_ = false;
  if (closed_) {
    write_close(now, out);
    return;
  }
  if (!held_.empty()) {
    // The packet for another path that ended the last batch opens this one.
    write_path_ = held_path_;
    batch_open_ = true;
    out.push_back(std::move(held_));
    held_.clear();
  }
  auto packets = write_packets(now, out, max);
  if (closed_)
    write_close(now, out);
  else if (packets > 0 && ngtcp2_conn_get_handshake_completed(conn_))
    // Not before: 0.12 would delay the client's Finished (pitfall 6).
    ngtcp2_conn_update_pkt_tx_time(conn_, now);
  flush();
}

void connection::on_expiry(quic_time now) {
  if (depth_ > 0 || conn_ == nullptr || closed_)
    return;
  if (now >= silence_deadline()) {
    on_error(NGTCP2_ERR_IDLE_CLOSE); // silent, as ngtcp2's own
    flush();
    return;
  }
  int rv;
  {
    call_guard g{depth_};
    rv = ngtcp2_conn_handle_expiry(conn_, now);
  }
  if (rv != 0)
    on_error(rv);
  flush();
}

// The next stream of the round-robin that can send now, or nullptr.
stream* connection::next_stream() {
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
void connection::rotate(stream* s) {
  if (ring_.empty() || s == nullptr || ring_.front() != s->id)
    return;
  ring_.pop_front();
  if (s->has_pending() && !s->blocked) {
    ring_.push_back(s->id);
  } else {
    s->in_ring = false;
  }
}

size_t connection::write_packets(quic_time now, std::vector<std::string>& out,
                                 size_t max) {
  call_guard g{depth_};
  ngtcp2_pkt_info pi{};
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  auto quantum
    = std::max<size_t>(ngtcp2_conn_get_send_quantum(conn_), datagram_buffer);
  size_t packets = 0;
  size_t bytes = 0;
  // Datagrams first: they never wait behind stream data.
  if (!write_datagrams(now, out, max, quantum, packets, bytes, ps))
    return packets;
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
    std::array<ngtcp2_vec, 16> vec{};
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
    auto n = ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, buf_.data(),
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
    bool same_path = emit(out, static_cast<size_t>(n), ps);
    ++packets;
    bytes += static_cast<size_t>(n);
    rotate(s);
    if (!same_path)
      break;
  }
  return packets;
}

bool connection::emit(std::vector<std::string>& out, size_t n,
                      const ngtcp2_path_storage& ps) {
  stats_.bytes_sent += n;
  ++stats_.packets_sent;
  auto path = logical_path::id_of(ps.path);
  if (!batch_open_) {
    batch_open_ = true;
    write_path_ = path;
  } else if (path != write_path_) {
    held_.assign(reinterpret_cast<const char*>(buf_.data()), n);
    held_path_ = path;
    return false;
  }
  out.emplace_back(reinterpret_cast<const char*>(buf_.data()), n);
  return true;
}

void connection::write_close(quic_time now, std::vector<std::string>& out) {
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
    write_path_ = current_path();
    out.push_back(close_packet_);
    stats_.bytes_sent += close_packet_.size();
    ++stats_.packets_sent;
  }
}

void connection::close(const std::string& reason) {
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

void connection::finish(const std::string& reason) {
  if (closed_)
    return;
  closed_ = true;
  handshake_event_ = false;
  events_.on_closed(reason);
}

void connection::on_error(int rv) {
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
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr_, alert,
                                                                nullptr, 0);
    reason = !binding_.failure.empty()
               ? binding_.failure
               : fmt::format("TLS handshake with {} failed (alert {})",
                             binding_.expected_peer, alert_name(alert));
  } else if (rv == NGTCP2_ERR_CALLBACK_FAILURE && !callback_failure_.empty()) {
    ngtcp2_connection_close_error_set_transport_error(
      &ccerr_, NGTCP2_INTERNAL_ERROR, nullptr, 0);
    reason = callback_failure_;
  } else {
    ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr_, rv,
                                                             nullptr, 0);
    reason = fmt::format("QUIC error: {}", ngtcp2_strerror(rv));
  }
  close_state_ = close_pending;
  finish(reason);
}

void connection::on_peer_closed() {
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
  finish(reason);
}

// Runs what callbacks could not do inside ngtcp2, then tells the owner
// about state changes; loops because the owner's handlers may add more.
void connection::flush() {
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

} // namespace p2proxy::quic_detail
