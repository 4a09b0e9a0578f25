#include "actors/peer/quic_link.hpp"

#include <algorithm>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/actors.hpp"

namespace p2proxy {

namespace {

/// QUIC datagrams kept while this side's ICE has not reported the path yet.
constexpr size_t max_early_datagrams = 16;
/// Datagrams written per batch (a batch also ends at QUIC's send quantum,
/// at most 64 KiB).
constexpr size_t max_batch = 256;
/// Batches written in one turn; more wait for the next turn (a wake-up at
/// once), so receiving and other agents are not starved. QUIC's pacing
/// lets a sender run up to a millisecond ahead of its schedule and the
/// timers wake up to a millisecond late: a turn must be able to write that
/// much, or the timer's rounding, not the path, sets the rate.
constexpr int max_batches = 16;
/// Datagrams received in a row before a turn (ACKs, data, events) without
/// waiting for the end of the batch. On a fast path QUIC's window is small
/// (BBR v1 sizes it from a minimum RTT of tens of microseconds), so a
/// sender waits for ACKs that a long batch would hold back; at 1 % loss
/// this doubled the rate. Every 16 cost more than it gave on a clean path.
constexpr int turn_every = 32;
/// While bytes stream in, stream bytes alone are handed to the owner once
/// this many wait, or this long after the first came: on a paced path
/// packets arrive one at a time, and waking the session and the channel for
/// each one cost more than the rest of the transfer (half the CPU at
/// 100 Mbit/s). The first bytes after a pause, and anything else (an open,
/// a FIN, a reset), go at once, so a request or a keystroke is not held.
constexpr size_t coalesce_bytes = 64 * 1024;
constexpr quic_time coalesce_ns = 1000000;
constexpr quic_time streaming_ns = 5000000;
/// Received datagrams waiting for the session to take them; beyond this a
/// busy session drops new ones (counted) rather than queueing without end.
constexpr size_t max_waiting_datagrams = 4096;

/// A later ICE generation's agent feeds the link through this, so the
/// link knows the path each datagram came on. The agent holds it until it
/// is closed; it holds the link weakly, as the agent does.
class path_sink final : public datagram_sink {
public:
  path_sink(const std::shared_ptr<quic_link>& link, quic_path_id path)
    : link_(link), path_(path) {}
  void on_datagram(const uint8_t* data, size_t size) override {
    if (auto l = link_.lock())
      l->on_path_datagram(data, size, path_);
  }
  void on_datagrams_done() override {
    if (auto l = link_.lock())
      l->on_datagrams_done();
  }
  void on_wakeup() override {
    if (auto l = link_.lock())
      l->on_wakeup();
  }

private:
  std::weak_ptr<quic_link> link_;
  quic_path_id path_;
};

} // namespace

quic_link::quic_link(caf::actor_addr owner) : owner_(std::move(owner)) {}

bool quic_link::attach_to(const std::shared_ptr<ice_agent>& agent) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    agent_ = agent;
    paths_.emplace_back(0, agent);
  }
  io_driven_ = agent->attach(shared_from_this());
  return io_driven_;
}

void quic_link::listen_to(const std::shared_ptr<ice_agent>& agent,
                          quic_path_id path) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    paths_.emplace_back(path, agent);
  }
  if (io_driven_)
    agent->attach(std::make_shared<path_sink>(shared_from_this(), path));
}

void quic_link::forget(quic_path_id path) {
  std::lock_guard<std::mutex> guard{mtx_};
  paths_.erase(std::remove_if(paths_.begin(), paths_.end(),
                              [path](auto& p) { return p.first == path; }),
               paths_.end());
}

std::shared_ptr<ice_agent>
quic_link::agent_for_locked(quic_path_id path) const {
  for (auto& [id, agent] : paths_)
    if (id == path)
      if (auto a = agent.lock())
        return a;
  return agent_.lock();
}

bool quic_link::migrate(quic_path_id path, quic_time now) {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ && quic_->migrate(path, monotonic_locked(now));
}

quic_path_id quic_link::quic_path() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->current_path() : 0;
}

void quic_link::switch_agent(const std::shared_ptr<ice_agent>& agent) {
  std::shared_ptr<ice_agent> old;
  quic_time armed = UINT64_MAX;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    old = agent_.lock();
    agent_ = agent;
    armed = armed_;
  }
  // Outside the link's lock: the old agent's wake-up may be running and
  // waiting for it.
  if (!io_driven_)
    return;
  if (old)
    old->wake_at(UINT64_MAX);
  agent->wake_at(armed == UINT64_MAX ? steady_clock_ns() : armed);
}

quic_link::silence_facts quic_link::silence() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!quic_)
    return {};
  return {quic_->last_heard(), quic_->bytes_in_flight()};
}

quic_time quic_link::monotonic_locked(quic_time now) {
  // The session's thread and the ICE thread each read the clock before
  // they get the lock; ngtcp2 needs the times it is given never to go back.
  last_now_ = std::max(last_now_, now);
  return last_now_;
}

bool quic_link::start(const factory& make, quic_time now) {
  std::lock_guard<std::mutex> guard{mtx_};
  now = monotonic_locked(now);
  quic_ = make(*this, now);
  if (!quic_)
    return false;
  auto early = std::move(early_);
  early_.clear();
  for (auto& [d, path] : early)
    if (quic_)
      receive_locked(reinterpret_cast<const uint8_t*>(d.data()), d.size(), now,
                     path);
  return true;
}

bool quic_link::started() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ != nullptr;
}

bool quic_link::open() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ != nullptr && !quic_->closed();
}

void quic_link::drop() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_) {
    last_stats_ = quic_->stats();
    last_dstats_ = quic_->datagram_stats();
    quic_.reset();
  }
  early_.clear();
  dropped_ = true;
}

void quic_link::receive(std::vector<std::string>& datagrams, quic_time now,
                        quic_path_id path) {
  std::lock_guard<std::mutex> guard{mtx_};
  now = monotonic_locked(now);
  for (auto& d : datagrams)
    receive_locked(reinterpret_cast<const uint8_t*>(d.data()), d.size(), now,
                   path);
}

void quic_link::receive_locked(const uint8_t* data, size_t size, quic_time now,
                               quic_path_id path) {
  if (!quic_) {
    if (!dropped_ && early_.size() < max_early_datagrams)
      early_.emplace_back(
        std::string(reinterpret_cast<const char*>(data), size), path);
    return;
  }
  ++datagrams_in_;
  quic_->receive(data, size, now, path);
}

bool quic_link::transmit(quic_time now) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!quic_)
    return false;
  now = monotonic_locked(now);
  auto more = transmit_locked(now);
  rearm_locked(false, now, more);
  return more;
}

bool quic_link::transmit_locked(quic_time now) {
  for (int i = 0; i < max_batches; ++i) {
    out_.clear();
    quic_->write(now, out_, max_batch);
    if (out_.empty())
      return false; // pacing, congestion, or nothing to send
    datagrams_out_ += out_.size();
    if (auto agent = agent_for_locked(quic_->write_path()))
      agent->send(std::move(out_));
    out_ = {};
  }
  return true;
}

void quic_link::rearm_locked(bool on_io_thread, quic_time now, bool more) {
  if (!io_driven_ || !quic_)
    return;
  auto at = more ? now : std::min(quic_->expiry(), hold_until_);
  // Off the ICE thread only ever earlier: a later time is found when the
  // armed one fires (handling an expiry that is not due is harmless).
  if (on_io_thread ? at == armed_ : at >= armed_)
    return;
  armed_ = at;
  if (auto agent = agent_.lock())
    agent->wake_at(at);
}

void quic_link::notify_locked(quic_time now) {
  if (events_.empty() || notified_)
    return;
  if (io_driven_ && !urgent_ && data_bytes_ < coalesce_bytes
      && now - last_notify_ < streaming_ns) {
    if (hold_until_ == UINT64_MAX)
      hold_until_ = now + coalesce_ns;
    if (now < hold_until_)
      return; // rearm_locked wakes the ICE thread then
  }
  notified_ = true;
  hold_until_ = UINT64_MAX;
  last_notify_ = now;
  if (auto owner = caf::actor_cast<caf::actor>(owner_))
    caf::anon_send(owner, quic_link_atom::value);
}

void quic_link::on_expiry(quic_time now) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    quic_->on_expiry(monotonic_locked(now));
}

quic_time quic_link::expiry() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->expiry() : UINT64_MAX;
}

// --- the ICE thread -------------------------------------------------------

void quic_link::on_datagram(const uint8_t* data, size_t size) {
  on_path_datagram(data, size, 0);
}

void quic_link::on_path_datagram(const uint8_t* data, size_t size,
                                 quic_path_id path) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto now = monotonic_locked(steady_clock_ns());
  receive_locked(data, size, now, path);
  if (quic_ && ++since_turn_ >= turn_every)
    io_turn_locked(now);
}

void quic_link::on_datagrams_done() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    io_turn_locked(monotonic_locked(steady_clock_ns()));
}

void quic_link::on_wakeup() {
  std::lock_guard<std::mutex> guard{mtx_};
  armed_ = UINT64_MAX;
  if (!quic_)
    return;
  auto now = monotonic_locked(steady_clock_ns());
  if (now >= quic_->expiry())
    quic_->on_expiry(now);
  io_turn_locked(now);
}

void quic_link::io_turn_locked(quic_time now) {
  since_turn_ = 0;
  auto more = transmit_locked(now);
  notify_locked(now);
  rearm_locked(true, now, more);
}

// --- the connection's stream calls ----------------------------------------

int64_t quic_link::open_stream() {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->open_stream() : -1;
}

size_t quic_link::write_stream(int64_t id, const uint8_t* data, size_t size,
                               bool fin) {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->write_stream(id, data, size, fin) : 0;
}

void quic_link::consume(int64_t id, size_t size) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    quic_->consume(id, size);
}

void quic_link::reset_stream(int64_t id, uint64_t app_error) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    quic_->reset_stream(id, app_error);
}

void quic_link::stop_sending(int64_t id, uint64_t app_error) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    quic_->stop_sending(id, app_error);
}

void quic_link::close(const std::string& reason) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    quic_->close(reason);
}

size_t quic_link::unacked(int64_t id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->unacked(id) : 0;
}

std::optional<quic_stats> quic_link::stats() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (quic_)
    return quic_->stats();
  return last_stats_;
}

uint64_t quic_link::datagrams_in() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return datagrams_in_;
}

uint64_t quic_link::datagrams_out() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return datagrams_out_;
}

std::vector<quic_event> quic_link::take_events() {
  std::lock_guard<std::mutex> guard{mtx_};
  notified_ = false;
  urgent_ = false;
  data_bytes_ = 0;
  hold_until_ = UINT64_MAX;
  datagrams_waiting_ = 0;
  return std::exchange(events_, {});
}

// --- quic_events: record only (mtx_ is held by the call they run in) -------

void quic_link::on_handshake_done() {
  urgent_ = true;
  events_.push_back({quic_event::handshake});
}

void quic_link::on_stream_open(int64_t id) {
  urgent_ = true;
  events_.push_back({quic_event::open, id});
}

void quic_link::on_stream_data(int64_t id, const uint8_t* data, size_t size,
                               bool fin) {
  quic_event ev{quic_event::data, id};
  ev.bytes.assign(reinterpret_cast<const char*>(data), size);
  ev.fin = fin;
  data_bytes_ += size;
  urgent_ = urgent_ || fin;
  events_.push_back(std::move(ev));
}

void quic_link::on_stream_reset(int64_t id, uint64_t app_error) {
  quic_event ev{quic_event::reset, id};
  ev.code = app_error;
  urgent_ = true;
  events_.push_back(std::move(ev));
}

void quic_link::on_stream_closed(int64_t id) {
  urgent_ = true;
  events_.push_back({quic_event::closed_stream, id});
}

void quic_link::on_stream_writable(int64_t id) {
  urgent_ = true;
  events_.push_back({quic_event::writable, id});
}

void quic_link::on_closed(const std::string& reason) {
  quic_event ev{quic_event::closed};
  ev.bytes = reason;
  urgent_ = true;
  events_.push_back(std::move(ev));
}

// --- QUIC DATAGRAM ---------------------------------------------------------

datagram_result quic_link::send_datagram(uint64_t flow, const uint8_t* data,
                                         size_t size, quic_time now) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!quic_)
    return datagram_result::unavailable;
  return quic_->send_datagram(flow, data, size, monotonic_locked(now));
}

size_t quic_link::max_datagram_payload(uint64_t flow) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return quic_ ? quic_->max_datagram_payload(flow) : 0;
}

std::optional<quic_datagram_stats> quic_link::datagram_stats() const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto st = quic_ ? std::optional{quic_->datagram_stats()} : last_dstats_;
  if (st)
    st->dropped_backlog = datagram_backlog_;
  return st;
}

// Live media: told at once (urgent), batched only by what arrives before
// the owner takes the events.
void quic_link::on_datagram(uint64_t flow, const uint8_t* data, size_t size) {
  if (datagrams_waiting_ >= max_waiting_datagrams) {
    ++datagram_backlog_;
    return;
  }
  ++datagrams_waiting_;
  quic_event ev{quic_event::datagram, static_cast<int64_t>(flow)};
  ev.bytes.assign(reinterpret_cast<const char*>(data), size);
  urgent_ = true;
  events_.push_back(std::move(ev));
}

} // namespace p2proxy
