// QUIC DATAGRAM (RFC 9221) on the connection: a bounded queue written ahead
// of stream data, sized to the path, dropping rather than delaying.
//
// Each datagram is `varint flow id | payload`. The queue holds what the
// congestion window (or pacing) has not let out yet; it is bounded in bytes
// (the oldest goes first when it is full) and in age (datagram_max_delay):
// a late RTP packet is worth less than a lost one, and a queue that grew
// with the window full would turn into the very delay datagrams avoid.
// When it is full, the flow holding the most bytes loses its oldest one:
// a flood on one flow does not crowd out the others.
#include <array>

#include "actors/quic/quic_connection_impl.hpp"
#include "actors/quic/quic_varint.hpp"

namespace p2proxy::quic_detail {

namespace {

// What a 1-RTT packet carrying one DATAGRAM frame adds around the payload:
// header byte, the longest connection id, the longest packet number, the
// AEAD tag, the frame type and its length field.
constexpr size_t packet_overhead = 1 + NGTCP2_MAX_CIDLEN + 4 + 16 + 1 + 2;

} // namespace

size_t connection::max_datagram_payload(uint64_t flow) const {
  if (conn_ == nullptr || closed_ || !handshake_done_ || flow > max_varint
      || cfg_.max_datagram_frame_size == 0)
    return 0;
  const auto* remote = ngtcp2_conn_get_remote_transport_params(conn_);
  if (remote == nullptr || remote->max_datagram_frame_size == 0)
    return 0;
  // The current path's probed size (PMTUD), capped by our buffer.
  auto path = std::min<size_t>(
    ngtcp2_conn_get_path_max_tx_udp_payload_size(conn_), buf_.size());
  auto frame = std::min<uint64_t>(remote->max_datagram_frame_size, path);
  if (frame <= packet_overhead + varint_size(flow))
    return 0;
  auto by_path = path - packet_overhead - varint_size(flow);
  // The peer's limit counts the whole frame: type and length too.
  auto by_peer = remote->max_datagram_frame_size < 3 + varint_size(flow)
                   ? 0
                   : remote->max_datagram_frame_size - 3 - varint_size(flow);
  return static_cast<size_t>(std::min<uint64_t>(by_path, by_peer));
}

datagram_result connection::send_datagram(uint64_t flow, const uint8_t* data,
                                          size_t size, quic_time now) {
  auto limit = max_datagram_payload(flow);
  if (limit == 0) {
    ++dstats_.dropped_unavailable;
    return datagram_result::unavailable;
  }
  if (size > limit) {
    ++dstats_.dropped_oversize;
    return datagram_result::too_big;
  }
  queued_datagram d;
  d.bytes.resize(varint_size(flow) + size);
  auto* p = reinterpret_cast<uint8_t*>(d.bytes.data());
  auto n = put_varint(p, flow);
  if (size > 0)
    std::memcpy(p + n, data, size);
  d.at = now;
  d.flow = flow;
  datagram_bytes_ += d.bytes.size();
  datagram_flow_bytes_[flow] += d.bytes.size();
  datagrams_.push_back(std::move(d));
  while (datagram_bytes_ > cfg_.datagram_queue_bytes && datagrams_.size() > 1)
    drop_for_room();
  return datagram_result::queued;
}

void connection::unqueue_datagram(size_t i) {
  auto& d = datagrams_[i];
  datagram_bytes_ -= d.bytes.size();
  auto f = datagram_flow_bytes_.find(d.flow);
  if (f != datagram_flow_bytes_.end() && (f->second -= d.bytes.size()) == 0)
    datagram_flow_bytes_.erase(f);
  datagrams_.erase(datagrams_.begin() + static_cast<std::ptrdiff_t>(i));
}

void connection::drop_for_room() {
  uint64_t longest = datagrams_.front().flow;
  size_t most = 0;
  for (auto& [flow, bytes] : datagram_flow_bytes_)
    if (bytes > most) {
      most = bytes;
      longest = flow;
    }
  for (size_t i = 0; i < datagrams_.size(); ++i)
    if (datagrams_[i].flow == longest) {
      unqueue_datagram(i);
      ++dstats_.dropped_congestion;
      return;
    }
  unqueue_datagram(0); // (the counts were off: never leave the loop stuck)
  ++dstats_.dropped_congestion;
}

quic_datagram_stats connection::datagram_stats() const {
  return dstats_;
}

void connection::drop_stale_datagrams(quic_time now) {
  auto max_age = ns(cfg_.datagram_max_delay);
  while (!datagrams_.empty() && now > datagrams_.front().at + max_age) {
    unqueue_datagram(0);
    ++dstats_.dropped_expired;
  }
}

bool connection::write_datagrams(quic_time now, std::vector<std::string>& out,
                                 size_t max, size_t quantum, size_t& packets,
                                 size_t& bytes, ngtcp2_path_storage& ps) {
  drop_stale_datagrams(now);
  bool open_packet = false;
  ngtcp2_pkt_info pi{};
  while (!datagrams_.empty() || open_packet) {
    bool room = packets < max && bytes < quantum;
    ngtcp2_ssize n;
    int accepted = 0;
    bool offered = false;
    if (room && !datagrams_.empty()) {
      auto& d = datagrams_.front();
      // The path may have changed since it was queued: never offer ngtcp2
      // a datagram it cannot fit (it would wait forever at the front).
      auto flow = d.flow;
      if (d.bytes.size() - varint_size(flow) > max_datagram_payload(flow)) {
        unqueue_datagram(0);
        ++dstats_.dropped_oversize;
        continue;
      }
      ngtcp2_vec v{reinterpret_cast<uint8_t*>(d.bytes.data()), d.bytes.size()};
      offered = true;
      n = ngtcp2_conn_writev_datagram(
        conn_, &ps.path, &pi, buf_.data(), buf_.size(), &accepted,
        NGTCP2_WRITE_DATAGRAM_FLAG_MORE, ++datagram_ids_, &v, 1, now);
      if (accepted != 0) {
        ++dstats_.sent;
        dstats_.bytes_sent += d.bytes.size() - varint_size(flow);
        unqueue_datagram(0);
      }
    } else if (open_packet) {
      // Close the packet the last datagram left open (no more to add).
      n = ngtcp2_conn_writev_stream(
        conn_, &ps.path, &pi, buf_.data(), buf_.size(), nullptr,
        NGTCP2_WRITE_STREAM_FLAG_NONE, -1, nullptr, 0, now);
    } else {
      break; // out of room this turn: the rest waits (bounded by age)
    }
    if (n == NGTCP2_ERR_WRITE_MORE) {
      open_packet = true;
      continue;
    }
    open_packet = false;
    if (n < 0) {
      if (offered
          && (n == NGTCP2_ERR_INVALID_ARGUMENT
              || n == NGTCP2_ERR_INVALID_STATE)) {
        // The peer's limit or support, as ngtcp2 sees it: drop that one.
        if (accepted == 0 && !datagrams_.empty())
          unqueue_datagram(0);
        ++dstats_.dropped_unavailable;
        continue;
      }
      on_error(static_cast<int>(n));
      return false;
    }
    if (n == 0)
      break; // congestion window or pacing: stream data waits too
    ++packets;
    bytes += static_cast<size_t>(n);
    if (!emit(out, static_cast<size_t>(n), ps))
      return false; // the rest waits for the next write()
  }
  return true;
}

int connection::on_recv_datagram(ngtcp2_conn*, uint32_t, const uint8_t* data,
                                 size_t len, void* ud) {
  auto* c = self(ud);
  uint64_t flow = 0;
  auto n = get_varint(data, len, flow);
  if (n == 0) {
    ++c->dstats_.dropped_malformed; // untrusted input: counted, not fatal
    return 0;
  }
  ++c->dstats_.received;
  c->dstats_.bytes_received += len - n;
  return c->guarded([&] { c->events_.on_datagram(flow, data + n, len - n); });
}

int connection::on_lost_datagram(ngtcp2_conn*, uint64_t, void* ud) {
  ++self(ud)->dstats_.lost;
  return 0;
}

} // namespace p2proxy::quic_detail
