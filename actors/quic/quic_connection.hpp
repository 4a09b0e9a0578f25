// QUIC over the ICE path: one ngtcp2 0.12 connection with GnuTLS (TLS 1.3,
// ALPN "p2proxy/1"), both ends authenticated by their node keys. A plain
// class with no threads and no clock of its own: the PEER SESSION feeds it
// datagrams and the time, and sends what it writes. Every ngtcp2 call of the
// project lives in this module (QUIC_NOTES.md, pitfall 13).
//
// Identity: each side presents a self-signed certificate for its node key;
// the handshake fails unless the peer's SubjectPublicKeyInfo hashes to
// `expected_peer` (node_id_from_spki). ALPN is mandatory and re-checked.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/identity/identity.hpp"

namespace p2proxy {

/// Nanoseconds on a monotonic clock (the owner's; virtual in actor tests).
using quic_time = uint64_t;

/// One network path of a connection, named by its owner: a session gives
/// each ICE generation's agent its own (the handshake runs on path 0).
/// QUIC sees a new id as a new path: the client migrates to it with path
/// validation and a fresh connection id, the server follows. Ids below
/// 2^24.
using quic_path_id = uint32_t;

/// QUIC's congestion controller (ngtcp2's). BBR (v1) by default: on a
/// path with random loss and a small bandwidth × delay product, BBR v2
/// takes each loss in a short flight as more than its 2 % threshold and
/// keeps shrinking its window (docs/benchmarks.md: 1 % loss on a LAN-like
/// path, ~170 against ~1100 Mbit/s). BBR v1 does not back off on random
/// loss; bbr2 and cubic are there for paths shared with loss-based flows.
enum class congestion_control { bbr, bbr2, cubic };

/// "bbr", "bbr2", "cubic"; false for anything else.
bool parse_congestion_control(const std::string& text, congestion_control& out);

struct quic_settings {
  /// Initial flow-control windows, sized for bandwidth x delay.
  uint64_t stream_window = 16 * 1024 * 1024;
  uint64_t connection_window = 64 * 1024 * 1024;
  uint64_t max_streams = 4096; // bidirectional, each way
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds keepalive{10000}; // PING when idle this long
  /// Bytes one stream may hold queued but not yet acknowledged (its owned
  /// send buffer); write_stream() takes no more. A single stream cannot go
  /// faster than this per round trip (4 MiB: ~80 MB/s at 50 ms).
  size_t stream_send_buffer = 4 * 1024 * 1024;
  congestion_control congestion = congestion_control::bbr;
  /// QUIC DATAGRAM (RFC 9221): the largest DATAGRAM frame we accept (the
  /// transport parameter max_datagram_frame_size); 0 turns datagrams off.
  uint64_t max_datagram_frame_size = 65535;
  /// Datagrams waiting for the congestion window: at most this many bytes
  /// (beyond, the oldest are dropped) and for at most this long (then they
  /// are dropped): live media stays live rather than arriving late.
  size_t datagram_queue_bytes = 64 * 1024;
  std::chrono::milliseconds datagram_max_delay{25};
};

/// What the connection reports to its owner, called from inside
/// receive()/on_expiry()/write() on the owner's thread. Handlers may call
/// open_stream(), write_stream(), consume(), reset_stream() and close(), but
/// not receive()/write()/on_expiry() (ignored there), and must not destroy
/// the connection.
class quic_events {
public:
  virtual ~quic_events() = default;
  /// The handshake finished, the peer proved it is `expected_peer` and it
  /// accepted us (the client hears this on handshake confirmation, so it
  /// never sees it when the server refuses its certificate).
  virtual void on_handshake_done() = 0;
  /// The peer opened stream `id`.
  virtual void on_stream_open(int64_t id) = 0;
  /// In-order bytes of stream `id`; `fin` once, with the last bytes. The
  /// owner calls consume() as it passes them on, which grants the peer more
  /// credit (the back-pressure hook). Every delivered byte must be consumed
  /// eventually, even after a reset, or the connection's credit shrinks.
  virtual void on_stream_data(int64_t id, const uint8_t* data, size_t size,
                              bool fin)
    = 0;
  /// The peer reset its sending side (RESET_STREAM) or asked us to stop
  /// sending (STOP_SENDING) with `app_error`. Once per stream; never for
  /// our own reset_stream().
  virtual void on_stream_reset(int64_t id, uint64_t app_error) = 0;
  /// Stream `id` is fully closed both ways; its id is never reused.
  virtual void on_stream_closed(int64_t id) = 0;
  /// Stream `id` can take more data again after write_stream() fell short.
  virtual void on_stream_writable(int64_t id) = 0;
  /// The connection is over (handshake failure, identity mismatch, idle
  /// timeout, peer closed, local close); nothing works after this. Call
  /// write() once more to flush our CONNECTION_CLOSE, if any.
  virtual void on_closed(const std::string& reason) = 0;
  /// A QUIC DATAGRAM arrived for `flow` (its varint prefix, removed). Never
  /// retransmitted, possibly reordered; at most once.
  virtual void on_datagram(uint64_t /*flow*/, const uint8_t* /*data*/,
                           size_t /*size*/) {}
};

/// What became of one send_datagram().
enum class datagram_result {
  queued,     // on its way (it may still be dropped if it waits too long)
  too_big,    // larger than max_datagram_payload(): dropped, counted
  unavailable // no handshake yet, closed, or the peer has no DATAGRAM support
};

/// QUIC DATAGRAM counters of one connection; bytes are payload bytes.
struct quic_datagram_stats {
  uint64_t sent = 0, received = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  uint64_t dropped_oversize = 0;    // larger than the path allows
  uint64_t dropped_congestion = 0;  // the oldest, when the queue was full
  uint64_t dropped_expired = 0;     // waited longer than datagram_max_delay
  uint64_t dropped_unavailable = 0; // not negotiated, not ready, closed
  uint64_t dropped_malformed = 0;   // received without a valid flow id
  uint64_t lost = 0;                // sent, then declared lost in flight
  uint64_t dropped_backlog = 0;     // received, but the owner fell behind
                                    // (counted by the owner's layer)
};

struct quic_stats {
  uint64_t bytes_sent = 0, bytes_received = 0;
  uint64_t packets_sent = 0, packets_received = 0;
  std::chrono::microseconds smoothed_rtt{0};
  std::chrono::microseconds min_rtt{0};
  uint64_t cwnd = 0;
  /// Packets carrying stream data that were declared lost.
  uint64_t lost_packets = 0;
  /// The path QUIC sends on, and how often it moved to a validated new
  /// one (migrate() on the client; the client's move on the server).
  quic_path_id path = 0;
  uint64_t migrations = 0;
  /// Path validations that failed (the connection stayed where it was).
  uint64_t path_validation_failures = 0;
};

class quic_connection {
public:
  virtual ~quic_connection() = default;

  /// The controlling side of a session is the QUIC client. Both factories
  /// make a self-signed certificate for `me` (only read during the call)
  /// and throw std::runtime_error if TLS setup fails.
  static std::unique_ptr<quic_connection>
  make_client(const identity& me, std::string expected_peer,
              const quic_settings& cfg, quic_events& events, quic_time now);
  /// The server waits for the client's first Initial in receive().
  static std::unique_ptr<quic_connection>
  make_server(const identity& me, std::string expected_peer,
              const quic_settings& cfg, quic_events& events, quic_time now);

  /// Feeds one datagram that arrived on `path`.
  virtual void receive(const uint8_t* data, size_t size, quic_time now,
                       quic_path_id path = 0)
    = 0;
  /// Appends the datagrams to send now (at most `max` of them, and at most
  /// the congestion controller's send quantum), all for one path:
  /// write_path(). Call it after every receive(), on_expiry(),
  /// write_stream(), consume() or close(), and again while it appends
  /// datagrams (a datagram for another path ends a batch early).
  virtual void write(quic_time now, std::vector<std::string>& out,
                     size_t max = 64)
    = 0;
  /// The path the datagrams of the last write() go on.
  virtual quic_path_id write_path() const = 0;
  /// The client moves the connection to `path` at once (its owner knows
  /// the path works: ICE checked the pair): from now on it sends there,
  /// with a new connection id and a fresh congestion controller and RTT,
  /// while QUIC validates the path (PATH_CHALLENGE); a failed validation
  /// is counted and leaves the connection there. A migrate() under way is
  /// replaced. The server cannot: it follows when the client's packets come
  /// on a new path (and moves back if that path fails its validation).
  /// False, changing nothing, on the server, before the handshake is
  /// confirmed, without a spare connection id from the peer, or when
  /// `path` is already current.
  virtual bool migrate(quic_path_id path, quic_time now) = 0;
  /// A migrate() whose path validation has not ended yet.
  virtual bool migrating() const = 0;
  /// The path QUIC sends on now.
  virtual quic_path_id current_path() const = 0;
  /// When on_expiry() must run next (UINT64_MAX: no timer).
  virtual quic_time expiry() const = 0;
  /// When a packet from the peer was last accepted (the creation time
  /// before any), and the bytes sent but not yet acknowledged or lost.
  virtual quic_time last_heard() const = 0;
  virtual uint64_t bytes_in_flight() const = 0;
  virtual void on_expiry(quic_time now) = 0;

  virtual bool handshake_done() const = 0;
  /// Opens a bidirectional stream; -1 before on_handshake_done(), after
  /// close, or when the peer's stream limit is hit.
  virtual int64_t open_stream() = 0;
  /// Queues bytes on a stream (copied; kept until acknowledged). Returns how
  /// many were taken: fewer than `size` when the stream's send buffer is
  /// full (then on_stream_writable() follows). `fin` ends our side once all
  /// of `size` was taken (a bare FIN is `size` 0). 0 after the side ended,
  /// a reset, or close.
  virtual size_t write_stream(int64_t id, const uint8_t* data, size_t size,
                              bool fin)
    = 0;
  /// Grants the peer `size` more bytes of credit on stream `id` (and the
  /// connection) after the owner has passed received bytes on.
  virtual void consume(int64_t id, size_t size) = 0;
  /// RESET_STREAM + STOP_SENDING with `app_error`.
  virtual void reset_stream(int64_t id, uint64_t app_error) = 0;
  /// STOP_SENDING with `app_error`: the peer should stop sending on `id`;
  /// what we send (and our FIN) still goes out.
  virtual void stop_sending(int64_t id, uint64_t app_error) = 0;
  /// Bytes queued on stream `id` and not yet acknowledged.
  virtual size_t unacked(int64_t id) const = 0;
  /// Graceful close with CONNECTION_CLOSE carrying `reason`; write() emits it.
  virtual void close(const std::string& reason) = 0;
  virtual bool closed() const = 0;
  virtual quic_stats stats() const = 0;

  // -- QUIC DATAGRAM (actors/quic/quic_datagrams.cpp) -------------------------

  /// Queues one datagram for `flow` (a varint prefix on the wire). Datagrams
  /// go out before stream data; one that waits for the congestion window
  /// longer than datagram_max_delay, or is the oldest when the queue is
  /// full, is dropped (counted), never delayed further.
  virtual datagram_result send_datagram(uint64_t flow, const uint8_t* data,
                                        size_t size, quic_time now)
    = 0;
  /// The largest payload a datagram for `flow` can carry on the current
  /// path (its MTU as probed, the peer's limit); 0 when datagrams are not
  /// available (yet).
  virtual size_t max_datagram_payload(uint64_t flow) const = 0;
  virtual quic_datagram_stats datagram_stats() const = 0;
};

} // namespace p2proxy
