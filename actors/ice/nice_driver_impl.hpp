// The libnice driver's shared part, private to actors/ice: the per-agent
// state (agent_core) and the driver with its GLib thread. The driver's
// members live in two files along one seam: agent management on the GLib
// thread (nice_driver.cpp) and the send path with UDP GSO on a direct pair
// (nice_send.cpp). Only actors/ice includes this header: libnice and GLib
// stay out of every other folder.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include <glib.h>
#include <nice/agent.h>

#include "actors/common/log.hpp"
#include "actors/ice/nice_driver.hpp"

namespace p2proxy::ice_detail {

inline constexpr std::string_view subject = "ice";

/// Datagrams handed to the owner in one message at most; more arriving in
/// one main-loop iteration go out in several.
inline constexpr size_t max_batch = 256;

/// How long shutdown() waits for libnice to release closed agents (TURN
/// allocations are deleted with a round trip) before it stops anyway.
inline constexpr guint close_grace_ms = 2000;

/// `n` characters of [a-zA-Z0-9] from the OS random source.
std::string random_ice_chars(size_t n);

/// libnice's debug output is process-wide: on at trace level, else off.
void configure_libnice_debug();

/// One agent. The const part and `emit` are used from any thread; the rest
/// only on the GLib thread.
struct agent_core {
  agent_core(uint64_t tag, bool controlling, caf::actor_addr owner)
    : tag(tag), controlling(controlling), owner(std::move(owner)),
      ufrag(random_ice_chars(8)), pwd(random_ice_chars(24)) {}

  ~agent_core() {
    if (direct_fd >= 0)
      ::close(direct_fd);
  }

  agent_core(const agent_core&) = delete;
  agent_core& operator=(const agent_core&) = delete;

  const uint64_t tag;
  const bool controlling;
  /// Gathers relayed candidates from the TURN servers (create_agent).
  bool relay = true;
  // Weak: the owner holds this agent; a strong handle back would keep an
  // owner that forgot to close() alive forever.
  const caf::actor_addr owner;
  const std::string ufrag;
  const std::string pwd;

  /// Posts an event unless the agent is closed. close() flips the flag under
  /// the same lock, so once it returns nothing more gets through.
  template <class... Ts>
  void emit(Ts&&... xs) {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed)
      return;
    if (auto hdl = caf::actor_cast<caf::actor>(owner))
      caf::anon_send(hdl, std::forward<Ts>(xs)...);
  }

  /// True when this call closed the agent.
  bool mark_closed() {
    std::lock_guard<std::mutex> guard{mtx};
    if (closed)
      return false;
    closed = true;
    closed_hint.store(true, std::memory_order_relaxed);
    return true;
  }

  std::mutex mtx;
  bool closed = false;                  // guarded by mtx
  std::string selected_base;            // guarded by mtx (selected_base())
  std::atomic<bool> closed_hint{false}; // lock-free early-out for senders

  /// Sends go straight to libnice from the owner's thread (libnice's calls
  /// are thread-safe): handing every batch of datagrams to the GLib thread
  /// cost a thread wake-up per batch. The agent is published here once
  /// open and withdrawn by close(), both on the GLib thread; lock order is
  /// send_mtx, then libnice's agent lock.
  std::mutex send_mtx;
  NiceAgent* send_agent = nullptr; // a reference of its own; guarded
                                   // (`stream` is set before it is published)
  uint64_t send_drops = 0;         // guarded by send_mtx
  /// wake_at()'s timer: a source whose prepare/check read `wake_ns`, so
  /// the ICE thread re-arms it by a store (g_source_set_ready_time would
  /// signal the context's wakeup fd on every call, tens of thousands of
  /// times a second at QUIC's pace). GLib polls in whole milliseconds, so
  /// QUIC's pacing sends in bursts of up to a millisecond. Exact timers (a
  /// timerfd) measured 30 % less throughput at 40 % more CPU per GB on two
  /// cores: the wake-ups cost more than the smoother pacing gives.
  GSource* wake = nullptr;                   // guarded by send_mtx
  std::atomic<uint64_t> wake_ns{UINT64_MAX}; // steady clock; MAX: none
  /// The selected pair's own UDP socket (a dup of libnice's) and the remote
  /// address, while that pair is neither relayed nor TCP: runs of equal
  /// datagrams then go out in one sendmsg with UDP GSO, where libnice makes
  /// one system call per datagram. -1: through libnice. Guarded.
  int direct_fd = -1;
  sockaddr_storage direct_to{};
  socklen_t direct_to_len = 0;
  bool gso_failed = false; // the kernel refused GSO once: libnice from then
  /// direct_fd's send buffer (as the kernel counts it) less the room kept
  /// for libnice's own datagrams (STUN checks and their answers): data
  /// waits, or is dropped like UDP, once the queue reaches it. Guarded.
  int direct_data_limit = 0;

  // --- GLib thread only ---
  NiceAgent* agent = nullptr;
  guint stream = 0;
  std::vector<gulong> handlers;
  std::shared_ptr<agent_core>* recv_ref = nullptr; // attach_recv's user data
  std::vector<std::string> inbox;                  // datagrams not yet posted
  std::shared_ptr<datagram_sink> sink;             // takes them instead
  GSource* flush_source = nullptr;
  std::string pair;       // "host 1.2.3.4:5 -> srflx 6.7.8.9:10"
  bool torn_down = false; // closed on the GLib thread
};

using core_ptr = std::shared_ptr<agent_core>;

class nice_driver;

/// Work queued for the GLib thread.
using task = std::function<void(nice_driver&)>;

class nice_driver final : public ice_driver,
                          public std::enable_shared_from_this<nice_driver> {
public:
  explicit nice_driver(ice_settings settings)
    : settings_(std::move(settings)), ctx_(g_main_context_new()),
      loop_(g_main_loop_new(ctx_, FALSE)) {
    configure_libnice_debug();
    // The thread cannot outlive *this: shutdown() joins it, and the
    // destructor calls shutdown().
    thread_ = std::thread([this] { run(); });
  }

  ~nice_driver() override {
    shutdown();
  }

  std::shared_ptr<ice_agent> create_agent(bool controlling, caf::actor owner,
                                          uint64_t tag) override;
  std::shared_ptr<ice_agent> create_direct_agent(bool controlling,
                                                 caf::actor owner,
                                                 uint64_t tag) override;

  void shutdown() override {
    {
      std::lock_guard<std::mutex> guard{queue_mtx_};
      if (shutdown_called_)
        return;
      shutdown_called_ = true;
      queue_.emplace_back([](nice_driver& d) { d.begin_quit(); });
      wake_locked();
      stopped_ = true;
    }
    if (thread_.get_id() == std::this_thread::get_id()) {
      // Only reachable if the last reference died on the GLib thread, which
      // nothing in this file allows; leak rather than deadlock.
      log::error(subject, "driver is destroyed on its own thread");
      thread_.detach();
      return;
    }
    thread_.join();
    g_main_loop_unref(loop_);
    g_main_context_unref(ctx_);
    log::debug(subject, "driver stops");
  }

  /// Queues `t` for the GLib thread; dropped once shutdown() has begun.
  void post(task t) {
    std::lock_guard<std::mutex> guard{queue_mtx_};
    if (stopped_)
      return;
    queue_.push_back(std::move(t));
    wake_locked();
  }

  // --- GLib thread only ---
  void open(const core_ptr& c);
  void gather(agent_core& c);
  void set_remote_credentials(agent_core& c, const std::string& ufrag,
                              const std::string& pwd);
  void add_remote_candidate(agent_core& c, const std::string& sdp);
  void remote_gathering_done(agent_core& c);
  /// Any thread.
  static void send(agent_core& c, const std::vector<std::string>& datagrams);
  /// GLib thread: sends go to the new selected pair's socket, or libnice.
  static void select_direct(agent_core& c, const NiceCandidate& remote);
  void attach(agent_core& c, const std::shared_ptr<datagram_sink>& sink);
  void close(agent_core& c);

private:
  void run() {
    pthread_setname_np(pthread_self(), "p2p-ice");
    g_main_context_push_thread_default(ctx_);
    g_main_loop_run(loop_);
    for (auto* a : closing_) {
      log::warn(subject, "driver gives up waiting for an agent to close");
      g_object_unref(a);
    }
    closing_.clear();
    g_main_context_pop_thread_default(ctx_);
  }

  void wake_locked() {
    if (wake_pending_)
      return;
    wake_pending_ = true;
    auto* src = g_idle_source_new();
    g_source_set_priority(src, G_PRIORITY_DEFAULT);
    g_source_set_callback(src, &nice_driver::drain, this, nullptr);
    g_source_attach(src, ctx_);
    g_source_unref(src);
  }

  static gboolean drain(gpointer self) {
    auto& d = *static_cast<nice_driver*>(self);
    std::vector<task> batch;
    {
      std::lock_guard<std::mutex> guard{d.queue_mtx_};
      batch.swap(d.queue_);
      d.wake_pending_ = false;
    }
    for (auto& t : batch)
      t(d);
    return G_SOURCE_REMOVE;
  }

  void begin_quit() {
    quitting_ = true;
    auto left = std::move(agents_);
    for (auto& [ptr, c] : left) {
      c->mark_closed();
      close(*c);
    }
    if (closing_.empty()) {
      g_main_loop_quit(loop_);
      return;
    }
    auto* src = g_timeout_source_new(close_grace_ms);
    g_source_set_callback(
      src,
      [](gpointer loop) -> gboolean {
        g_main_loop_quit(static_cast<GMainLoop*>(loop));
        return G_SOURCE_REMOVE;
      },
      loop_, nullptr);
    g_source_attach(src, ctx_);
    g_source_unref(src);
  }

  static void on_closed(GObject* source, GAsyncResult*, gpointer self) {
    auto& d = *static_cast<nice_driver*>(self);
    auto* a = NICE_AGENT(source);
    if (d.closing_.erase(a) > 0)
      g_object_unref(a);
    if (d.quitting_ && d.closing_.empty())
      g_main_loop_quit(d.loop_);
  }

  static void schedule_flush(const core_ptr& c);
  void connect_signals(const core_ptr& c);

  const ice_settings settings_;
  GMainContext* ctx_;
  GMainLoop* loop_;
  std::thread thread_;

  std::mutex queue_mtx_;
  std::vector<task> queue_; // guarded by queue_mtx_
  bool wake_pending_ = false;
  bool stopped_ = false;
  bool shutdown_called_ = false;

  // --- GLib thread only ---
  std::map<agent_core*, core_ptr> agents_; // open agents, for shutdown
  std::set<NiceAgent*> closing_;           // closed, not yet released
  bool quitting_ = false;
};

} // namespace p2proxy::ice_detail
