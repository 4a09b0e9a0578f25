// The QUIC connection of one PEER SESSION, with the work on it that needs no
// actor: feeding received datagrams, writing packets, running QUIC's timers.
//
// Where the ICE agent supports it (ice_agent::attach, the libnice driver),
// that work runs on the ICE thread as datagrams arrive and timers fire: a
// datagram, its ACK and the next packets a freed congestion window allows
// never cross a thread. The session actor calls in for what streams need
// (open, write, consume, reset, close) and hears (quic_link_atom) when QUIC
// reported something (stream data, a stream the peer opened, room to write,
// the end). A turn (write, notify, re-arm) runs after each batch of
// datagrams and every 32 datagrams within one, so ACKs are not held back;
// while a stream flows, its bytes alone are handed over in batches (64 KiB
// or 1 ms). Otherwise (actor tests' fake ICE) the actor feeds the datagrams
// it gets as ice_data_atom and arms the timers itself, as one thread.
//
// Every public call takes the link's lock; quic_events handlers run inside
// them and only record. Lock order: the link, then the agent's own locks.
// The link holds the agent weakly and the agent (through attach) holds the
// link until it is closed, so neither keeps the other alive.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_addr.hpp>

#include "actors/ice/ice_driver.hpp"
#include "actors/quic/quic_connection.hpp"

namespace p2proxy {

/// What QUIC reported, recorded while ngtcp2 is on the stack and handled by
/// the session afterwards.
struct quic_event {
  enum kind {
    handshake,
    open,
    data,
    reset,
    closed_stream,
    writable,
    closed,
    datagram // a QUIC DATAGRAM: `id` is its flow, `bytes` its payload
  };
  quic_event(kind what, int64_t stream_or_flow = 0)
    : k(what), id(stream_or_flow) {}
  kind k;
  int64_t id = 0;
  std::string bytes;
  bool fin = false;
  uint64_t code = 0;
};

class quic_link final : public datagram_sink,
                        private quic_events,
                        public std::enable_shared_from_this<quic_link> {
public:
  /// `owner` is told (quic_link_atom) when events recorded on the ICE
  /// thread wait for take_events().
  explicit quic_link(caf::actor_addr owner);

  /// Lets the setup's agent (QUIC path 0) drive the link on its thread if
  /// it can; true if it does (then the owner arms no QUIC timer and feeds
  /// no datagram).
  bool attach_to(const std::shared_ptr<ice_agent>& agent);
  bool io_driven() const {
    return io_driven_;
  }
  /// An ICE restart's new agent, QUIC path `path` (its generation): its
  /// datagrams feed this link too, as arrivals on that path (attach it
  /// before its gather()), and packets QUIC writes for that path go out on
  /// it.
  void listen_to(const std::shared_ptr<ice_agent>& agent, quic_path_id path);
  /// From now on `agent` (listened to already) drives the link with its
  /// wake-ups, and carries what QUIC writes for a path whose agent is gone.
  void switch_agent(const std::shared_ptr<ice_agent>& agent);
  /// The client's QUIC moves to `path` (see quic_connection::migrate());
  /// false if it cannot now (the server, no spare connection id, already
  /// there).
  bool migrate(quic_path_id path, quic_time now);
  /// The path QUIC sends on (0 before start()).
  quic_path_id quic_path() const;
  /// `path`'s agent was closed: forget it.
  void forget(quic_path_id path);
  /// When QUIC last took a packet from the peer (0: never) and the bytes it
  /// has in flight: a path that is silent while data waits for an ACK.
  struct silence_facts {
    quic_time last_heard = 0;
    uint64_t bytes_in_flight = 0;
  };
  silence_facts silence() const;

  using factory
    = std::function<std::unique_ptr<quic_connection>(quic_events&, quic_time)>;
  /// Creates the connection and feeds it the datagrams that came before.
  /// False if `make` gave none.
  bool start(const factory& make, quic_time now);
  bool started() const;
  /// Started and not closed.
  bool open() const;
  /// The connection reported its end; it stays for stats until dropped.
  void drop();

  /// Datagrams the owner got as ice_data_atom from `path`'s agent (not
  /// io_driven). Before start() a few are kept for it: the peer's ICE may
  /// report the path a moment before ours, and its first packet must not
  /// be lost.
  void receive(std::vector<std::string>& datagrams, quic_time now,
               quic_path_id path);
  /// Writes what QUIC has to send and sends it. True if it stopped at its
  /// batch limit: call again after other work had its turn.
  bool transmit(quic_time now);
  /// Owner-armed timer (not io_driven).
  void on_expiry(quic_time now);
  quic_time expiry() const;

  // The connection's stream calls (see quic_connection), locked; harmless
  // before start() and after the end.
  int64_t open_stream();
  size_t write_stream(int64_t id, const uint8_t* data, size_t size, bool fin);
  void consume(int64_t id, size_t size);
  void reset_stream(int64_t id, uint64_t app_error);
  void stop_sending(int64_t id, uint64_t app_error);
  void close(const std::string& reason);
  size_t unacked(int64_t id) const;
  std::optional<quic_stats> stats() const;
  uint64_t datagrams_in() const;
  uint64_t datagrams_out() const;

  /// What QUIC reported since the last call.
  std::vector<quic_event> take_events();

  // QUIC DATAGRAM (see quic_connection), locked; unavailable before
  // start() and after the end. The caller runs transmit() after a batch.
  datagram_result send_datagram(uint64_t flow, const uint8_t* data, size_t size,
                                quic_time now);
  size_t max_datagram_payload(uint64_t flow) const;
  std::optional<quic_datagram_stats> datagram_stats() const;

  // datagram_sink: the ICE thread, for path 0's agent (attach_to).
  void on_datagram(const uint8_t* data, size_t size) override;
  void on_datagrams_done() override;
  void on_wakeup() override;
  /// A datagram from `path`'s agent on the ICE thread.
  void on_path_datagram(const uint8_t* data, size_t size, quic_path_id path);

private:
  void on_handshake_done() override;
  void on_stream_open(int64_t id) override;
  void on_stream_data(int64_t id, const uint8_t* data, size_t size,
                      bool fin) override;
  void on_stream_reset(int64_t id, uint64_t app_error) override;
  void on_stream_closed(int64_t id) override;
  void on_stream_writable(int64_t id) override;
  void on_closed(const std::string& reason) override;
  void on_datagram(uint64_t flow, const uint8_t* data, size_t size) override;

  // With mtx_ held.
  quic_time monotonic_locked(quic_time now);
  void receive_locked(const uint8_t* data, size_t size, quic_time now,
                      quic_path_id path);
  /// The agent that carries `path` (the current one if it has none).
  std::shared_ptr<ice_agent> agent_for_locked(quic_path_id path) const;
  bool transmit_locked(quic_time now);
  void rearm_locked(bool on_io_thread, quic_time now, bool more);
  /// Tells the owner that events wait: at once if any is more than stream
  /// bytes, else once enough bytes wait or the first has waited long enough.
  void notify_locked(quic_time now);
  /// The ICE thread's turn: write (a bounded number of batches), re-arm
  /// the wake-up, tell the owner about events.
  void io_turn_locked(quic_time now);

  const caf::actor_addr owner_;
  bool io_driven_ = false;

  mutable std::mutex mtx_;
  std::weak_ptr<ice_agent> agent_; // guarded: drives the link
  /// Each path's agent (path 0: the setup's); guarded.
  std::vector<std::pair<quic_path_id, std::weak_ptr<ice_agent>>> paths_;
  std::unique_ptr<quic_connection> quic_; // guarded by mtx_
  std::optional<quic_stats> last_stats_;  // guarded
  /// Datagrams before start(), with the path they came on; guarded.
  std::vector<std::pair<std::string, quic_path_id>> early_;
  bool dropped_ = false;           // guarded: no more early ones
  std::vector<quic_event> events_; // guarded
  std::vector<std::string> out_;   // guarded: reused send batch
  bool notified_ = false;          // guarded: a quic_link_atom is on
                                   // its way and not yet taken
  quic_time armed_ = UINT64_MAX;   // guarded: the agent's wake-up
  quic_time last_now_ = 0;         // guarded: latest time given
  uint64_t datagrams_in_ = 0, datagrams_out_ = 0; // guarded
  int since_turn_ = 0;    // datagrams received since the last turn; guarded
  bool urgent_ = false;   // guarded: an event not data
  size_t data_bytes_ = 0; // guarded: stream bytes waiting
  quic_time hold_until_ = UINT64_MAX;              // guarded: notify by then
  quic_time last_notify_ = 0;                      // guarded
  std::optional<quic_datagram_stats> last_dstats_; // guarded
  size_t datagrams_waiting_ = 0;  // guarded: datagram events not yet taken
  uint64_t datagram_backlog_ = 0; // guarded: dropped, too many waiting
};

} // namespace p2proxy
