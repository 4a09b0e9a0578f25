#include "actors/ice/nice_driver.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include <glib.h>
#include <nice/agent.h>
#include <nice/debug.h>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"

namespace p2proxy {
namespace {

constexpr std::string_view subject = "ice";

/// Datagrams handed to the owner in one message at most; more arriving in
/// one main-loop iteration go out in several.
constexpr size_t max_batch = 256;

/// How long shutdown() waits for libnice to release closed agents (TURN
/// allocations are deleted with a round trip) before it stops anyway.
constexpr guint close_grace_ms = 2000;

std::string random_ice_chars(size_t n) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz"
                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd; // the OS source: ICE passwords must not be guessable
  std::uniform_int_distribution<size_t> pick(0, sizeof(alphabet) - 2);
  std::string out(n, ' ');
  for (auto& ch : out)
    ch = alphabet[pick(rd)];
  return out;
}

const char* type_name(NiceCandidateType t) {
  switch (t) {
    case NICE_CANDIDATE_TYPE_HOST:
      return "host";
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE:
      return "srflx";
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE:
      return "prflx";
    case NICE_CANDIDATE_TYPE_RELAYED:
      return "relay";
  }
  return "unknown";
}

/// The owner's name for a component state; nullptr for states it does not
/// hear about (gathering is reported by candidates and ice_gathered_atom).
const char* state_name(guint s) {
  switch (s) {
    case NICE_COMPONENT_STATE_DISCONNECTED:
      return "disconnected";
    case NICE_COMPONENT_STATE_CONNECTING:
      return "checking";
    case NICE_COMPONENT_STATE_CONNECTED:
      return "connected";
    case NICE_COMPONENT_STATE_READY:
      return "ready";
    case NICE_COMPONENT_STATE_FAILED:
      return "failed";
    default:
      return nullptr;
  }
}

std::string address_text(const NiceAddress& addr) {
  char ip[NICE_ADDRESS_STRING_LEN];
  nice_address_to_string(&addr, ip);
  auto port = nice_address_get_port(&addr);
  if (nice_address_ip_version(&addr) == 6)
    return fmt::format("[{}]:{}", ip, port);
  return fmt::format("{}:{}", ip, port);
}

void route_libnice_debug(const gchar* domain, GLogLevelFlags, const gchar* msg,
                         gpointer) {
  log::emit(log::level::trace, domain ? domain : "libnice", "{}", msg);
}

/// libnice's debug output is process-wide: on at trace level, else off.
void configure_libnice_debug() {
  if (log::current() == log::level::trace) {
    static std::once_flag routed;
    std::call_once(routed, [] {
      for (auto domain : {"libnice", "libnice-stun"})
        g_log_set_handler(domain, G_LOG_LEVEL_DEBUG, route_libnice_debug,
                          nullptr);
    });
    nice_debug_enable(TRUE);
  } else {
    nice_debug_disable(TRUE);
  }
}

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

/// What the owner holds; closing it (or dropping it) ends the agent.
class nice_agent_handle final : public ice_agent {
public:
  nice_agent_handle(std::shared_ptr<nice_driver> driver, core_ptr core)
    : driver_(std::move(driver)), core_(std::move(core)) {}

  ~nice_agent_handle() override {
    close();
  }

  std::string local_ufrag() const override {
    return core_->ufrag;
  }

  std::string local_pwd() const override {
    return core_->pwd;
  }

  void gather() override {
    post([](nice_driver& d, agent_core& c) { d.gather(c); });
  }

  void set_remote_credentials(std::string ufrag, std::string pwd) override {
    post([u = std::move(ufrag), p = std::move(pwd)](nice_driver& d,
                                                    agent_core& c) {
      d.set_remote_credentials(c, u, p);
    });
  }

  void add_remote_candidate(std::string candidate) override {
    post([s = std::move(candidate)](nice_driver& d, agent_core& c) {
      d.add_remote_candidate(c, s);
    });
  }

  void remote_gathering_done() override {
    post([](nice_driver& d, agent_core& c) { d.remote_gathering_done(c); });
  }

  void send(std::vector<std::string> datagrams) override {
    if (datagrams.empty() || core_->closed_hint.load(std::memory_order_relaxed))
      return;
    nice_driver::send(*core_, datagrams);
  }

  void close() override {
    if (!core_->mark_closed())
      return;
    driver_->post([c = core_](nice_driver& d) { d.close(*c); });
  }

  bool attach(std::shared_ptr<datagram_sink> sink) override {
    post(
      [s = std::move(sink)](nice_driver& d, agent_core& c) { d.attach(c, s); });
    return true;
  }

  void wake_at(uint64_t steady_ns) override {
    std::lock_guard<std::mutex> guard{core_->send_mtx};
    if (core_->wake == nullptr)
      return;
    auto before = core_->wake_ns.exchange(steady_ns);
    // The ICE thread reads the time before it next polls; another thread
    // must wake it if the time came earlier.
    if (steady_ns < before
        && !g_main_context_is_owner(g_source_get_context(core_->wake)))
      g_main_context_wakeup(g_source_get_context(core_->wake));
  }

private:
  template <class F>
  void post(F f) {
    if (core_->closed_hint.load(std::memory_order_relaxed))
      return;
    driver_->post([c = core_, f = std::move(f)](nice_driver& d) {
      if (c->agent != nullptr && !c->torn_down)
        f(d, *c);
    });
  }

  std::shared_ptr<nice_driver> driver_;
  core_ptr core_;
};

std::shared_ptr<ice_agent>
nice_driver::create_agent(bool controlling, caf::actor owner, uint64_t tag) {
  auto c = std::make_shared<agent_core>(tag, controlling, owner.address());
  post([c](nice_driver& d) { d.open(c); });
  return std::make_shared<nice_agent_handle>(shared_from_this(), std::move(c));
}

// --- on the GLib thread ---

void nice_driver::open(const core_ptr& c) {
  if (c->closed_hint.load() || quitting_)
    return; // closed before it ever opened
  auto flags = static_cast<NiceAgentOption>(
    NICE_AGENT_OPTION_ICE_TRICKLE
    | (settings_.consent_freshness ? NICE_AGENT_OPTION_CONSENT_FRESHNESS : 0));
  c->agent = nice_agent_new_full(ctx_, NICE_COMPATIBILITY_RFC5245, flags);
  // ice-tcp off: QUIC over an ICE-TCP pair would stack two congestion
  // controllers; TURN over TCP still works with it off.
  g_object_set(c->agent, "controlling-mode", gboolean{c->controlling},
               "ice-tcp", FALSE, "upnp", gboolean{settings_.upnp}, nullptr);
  if (settings_.idle_timeout_ms > 0)
    g_object_set(c->agent, "idle-timeout", guint{settings_.idle_timeout_ms},
                 nullptr);
  if (settings_.stun_initial_timeout_ms > 0)
    g_object_set(c->agent, "stun-initial-timeout",
                 guint{settings_.stun_initial_timeout_ms}, nullptr);
  if (settings_.stun_max_retransmissions > 0)
    g_object_set(c->agent, "stun-max-retransmissions",
                 guint{settings_.stun_max_retransmissions}, nullptr);
  if (!settings_.stun.empty()) {
    // libnice resolves a host name itself, asynchronously, on this thread.
    auto& stun = settings_.stun.front();
    g_object_set(c->agent, "stun-server", stun.host.c_str(), "stun-server-port",
                 guint{stun.port}, nullptr);
  }
  for (auto& ip : settings_.local_addresses) {
    NiceAddress addr;
    nice_address_init(&addr);
    if (nice_address_set_from_string(&addr, ip.c_str()))
      nice_agent_add_local_address(c->agent, &addr);
    else
      log::warn(subject, "agent {} ignores local address {}: not an IP", c->tag,
                ip);
  }
  c->stream = nice_agent_add_stream(c->agent, 1);
  nice_agent_set_local_credentials(c->agent, c->stream, c->ufrag.c_str(),
                                   c->pwd.c_str());
  for (auto& turn : settings_.turn)
    for (auto type : {NICE_RELAY_TYPE_TURN_UDP, NICE_RELAY_TYPE_TURN_TCP})
      if (!nice_agent_set_relay_info(
            c->agent, c->stream, 1, turn.server.host.c_str(), turn.server.port,
            turn.user.c_str(), turn.password.c_str(), type))
        log::warn(subject, "agent {} cannot use TURN server {}", c->tag,
                  turn.server.to_string());
  connect_signals(c);
  agents_.emplace(c.get(), c);
  {
    std::lock_guard<std::mutex> guard{c->send_mtx};
    c->send_agent = NICE_AGENT(g_object_ref(c->agent));
  }
  log::debug(subject, "agent {} opens as {}", c->tag,
             c->controlling ? "controlling" : "controlled");
}

void nice_driver::connect_signals(const core_ptr& c) {
  auto ref = [&c] { return new core_ptr(c); };
  auto unref = [](gpointer p, GClosure*) { delete static_cast<core_ptr*>(p); };
  auto on = [&](const char* name, GCallback cb) {
    c->handlers.push_back(g_signal_connect_data(
      c->agent, name, cb, ref(), unref, static_cast<GConnectFlags>(0)));
  };
  using cand_fn = void (*)(NiceAgent*, NiceCandidate*, gpointer);
  on("new-candidate-full",
     G_CALLBACK(
       static_cast<cand_fn>([](NiceAgent* a, NiceCandidate* cand, gpointer p) {
         auto& c = **static_cast<core_ptr*>(p);
         // Peer-reflexive ones are learned from the peer's checks; the peer
         // knows them already.
         if (cand->type == NICE_CANDIDATE_TYPE_PEER_REFLEXIVE)
           return;
         auto* sdp = nice_agent_generate_local_candidate_sdp(a, cand);
         if (sdp == nullptr)
           return;
         std::string text = sdp;
         g_free(sdp);
         if (text.rfind("a=", 0) == 0)
           text.erase(0, 2);
         log::emit(log::level::trace, subject, "agent {} gathers {}", c.tag,
                   text);
         c.emit(ice_cand_atom::value, c.tag, std::move(text));
       })));
  using done_fn = void (*)(NiceAgent*, guint, gpointer);
  on("candidate-gathering-done",
     G_CALLBACK(static_cast<done_fn>([](NiceAgent*, guint, gpointer p) {
       auto& c = **static_cast<core_ptr*>(p);
       log::debug(subject, "agent {} finishes gathering", c.tag);
       c.emit(ice_gathered_atom::value, c.tag);
     })));
  using state_fn = void (*)(NiceAgent*, guint, guint, guint, gpointer);
  on("component-state-changed",
     G_CALLBACK(static_cast<state_fn>(
       [](NiceAgent*, guint, guint, guint state, gpointer p) {
         auto& c = **static_cast<core_ptr*>(p);
         auto* name = state_name(state);
         if (name == nullptr)
           return;
         if ((state == NICE_COMPONENT_STATE_CONNECTED
              || state == NICE_COMPONENT_STATE_READY)
             && !c.pair.empty())
           log::debug(subject, "agent {} moves to {} via {}", c.tag, name,
                      c.pair);
         else
           log::debug(subject, "agent {} moves to {}", c.tag, name);
         c.emit(ice_state_atom::value, c.tag, std::string{name});
       })));
  using pair_fn = void (*)(NiceAgent*, guint, guint, NiceCandidate*,
                           NiceCandidate*, gpointer);
  on("new-selected-pair-full",
     G_CALLBACK(
       static_cast<pair_fn>([](NiceAgent*, guint, guint, NiceCandidate* l,
                               NiceCandidate* r, gpointer p) {
         auto& c = **static_cast<core_ptr*>(p);
         auto la = address_text(l->addr);
         auto ra = address_text(r->addr);
         c.pair = fmt::format("{} {} -> {} {}", type_name(l->type), la,
                              type_name(r->type), ra);
         log::emit(log::level::trace, subject, "agent {} selects {}", c.tag,
                   c.pair);
         select_direct(c, *r);
         c.emit(ice_pair_atom::value, c.tag, std::string{type_name(l->type)},
                std::move(la), std::string{type_name(r->type)}, std::move(ra));
       })));
  c->recv_ref = new core_ptr(c);
  nice_agent_attach_recv(
    c->agent, c->stream, 1, ctx_,
    [](NiceAgent*, guint, guint, guint len, gchar* buf, gpointer p) {
      auto& cp = *static_cast<core_ptr*>(p);
      if (cp->sink) {
        schedule_flush(cp); // on_datagrams_done() once these are in
        cp->sink->on_datagram(reinterpret_cast<const uint8_t*>(buf), len);
        return;
      }
      if (cp->inbox.empty())
        schedule_flush(cp);
      cp->inbox.emplace_back(buf, len);
      if (cp->inbox.size() >= max_batch)
        cp->emit(ice_data_atom::value, cp->tag, std::exchange(cp->inbox, {}));
    },
    c->recv_ref);
}

/// Posts what arrived during this main-loop iteration in one message: the
/// idle source runs after the socket sources that are ready now.
void nice_driver::schedule_flush(const core_ptr& c) {
  if (c->flush_source != nullptr)
    return;
  auto* src = g_idle_source_new();
  g_source_set_priority(src, G_PRIORITY_DEFAULT);
  g_source_set_callback(
    src,
    [](gpointer p) -> gboolean {
      auto& c = **static_cast<core_ptr*>(p);
      g_source_unref(std::exchange(c.flush_source, nullptr));
      if (c.sink)
        c.sink->on_datagrams_done();
      else if (!c.inbox.empty())
        c.emit(ice_data_atom::value, c.tag, std::exchange(c.inbox, {}));
      return G_SOURCE_REMOVE;
    },
    new core_ptr(c), [](gpointer p) { delete static_cast<core_ptr*>(p); });
  g_source_attach(src, g_main_context_get_thread_default());
  c->flush_source = src; // keeps our reference until it fires or is closed
}

void nice_driver::attach(agent_core& c,
                         const std::shared_ptr<datagram_sink>& sink) {
  c.sink = sink;
  if (c.wake != nullptr)
    return;
  // Ready once the steady clock reaches c.wake_ns (read in prepare and
  // check, so re-arming it on this thread costs no wake-up).
  struct wake_source {
    GSource base;
    agent_core* core; // kept alive by the callback's core_ptr
  };
  static GSourceFuncs funcs
    = {[](GSource* src, gint* timeout) -> gboolean {
         auto at = reinterpret_cast<wake_source*>(src)->core->wake_ns.load();
         *timeout = -1;
         if (at == UINT64_MAX)
           return FALSE;
         auto now = steady_clock_ns();
         if (now >= at) {
           *timeout = 0;
           return TRUE;
         }
         // Rounded up: a wake-up before the time would find nothing due.
         auto ms = (at - now + 999999) / 1000000;
         *timeout = static_cast<gint>(std::min<uint64_t>(ms, 60000));
         return FALSE;
       },
       [](GSource* src) -> gboolean {
         auto at = reinterpret_cast<wake_source*>(src)->core->wake_ns.load();
         return at != UINT64_MAX && steady_clock_ns() >= at;
       },
       [](GSource* src, GSourceFunc cb, gpointer p) -> gboolean {
         reinterpret_cast<wake_source*>(src)->core->wake_ns.store(UINT64_MAX);
         return cb(p); // once per wake_at()
       },
       nullptr,
       nullptr,
       nullptr};
  auto* src = g_source_new(&funcs, sizeof(wake_source));
  reinterpret_cast<wake_source*>(src)->core = &c;
  g_source_set_callback(
    src,
    [](gpointer p) -> gboolean {
      auto& c = **static_cast<core_ptr*>(p);
      if (c.sink)
        c.sink->on_wakeup();
      return G_SOURCE_CONTINUE;
    },
    new core_ptr(agents_.at(&c)),
    [](gpointer p) { delete static_cast<core_ptr*>(p); });
  g_source_attach(src, ctx_);
  std::lock_guard<std::mutex> guard{c.send_mtx};
  c.wake = src;
}

void nice_driver::gather(agent_core& c) {
  if (nice_agent_gather_candidates(c.agent, c.stream))
    return;
  if (settings_.local_addresses.empty()) {
    // libnice skips loopback interfaces and fails when there is nothing
    // else; two nodes on such a machine still reach each other over it.
    log::info(subject, "agent {} finds no interface but loopback, uses it",
              c.tag);
    for (auto ip : {"127.0.0.1", "::1"}) {
      NiceAddress addr;
      nice_address_init(&addr);
      nice_address_set_from_string(&addr, ip);
      nice_agent_add_local_address(c.agent, &addr);
    }
    if (nice_agent_gather_candidates(c.agent, c.stream))
      return;
  }
  log::warn(subject, "agent {} cannot gather: no usable local address", c.tag);
  c.emit(ice_gathered_atom::value, c.tag);
  c.emit(ice_state_atom::value, c.tag, std::string{"failed"});
}

void nice_driver::set_remote_credentials(agent_core& c,
                                         const std::string& ufrag,
                                         const std::string& pwd) {
  if (!nice_agent_set_remote_credentials(c.agent, c.stream, ufrag.c_str(),
                                         pwd.c_str()))
    log::warn(subject, "agent {} rejects the remote credentials", c.tag);
}

void nice_driver::add_remote_candidate(agent_core& c, const std::string& sdp) {
  auto line = sdp.rfind("a=", 0) == 0 ? sdp : "a=" + sdp;
  auto* cand
    = nice_agent_parse_remote_candidate_sdp(c.agent, c.stream, line.c_str());
  if (cand == nullptr) {
    log::warn(subject, "agent {} ignores malformed candidate '{}'", c.tag,
              sdp.substr(0, 120));
    return;
  }
  GSList one{cand, nullptr};
  if (nice_agent_set_remote_candidates(c.agent, c.stream, 1, &one) < 1)
    log::debug(subject, "agent {} cannot use candidate '{}'", c.tag, sdp);
  nice_candidate_free(cand);
}

void nice_driver::remote_gathering_done(agent_core& c) {
  nice_agent_peer_candidate_gathering_done(c.agent, c.stream);
}

namespace {

/// Segments in one GSO send at most, and their bytes (the kernel takes up
/// to 64 segments in one UDP datagram of at most 64 KiB).
constexpr size_t max_gso_segments = 64;
constexpr size_t max_gso_bytes = 65000;

enum class direct_result { sent, dropped, refused };

/// Kernel buffer a direct pair's socket asks for each way. Linux's default
/// (208 KiB) holds about 90 datagrams: at gigabit rates a burst that
/// arrives while the ICE thread is busy overflows it, and QUIC sees the
/// drops as loss (5 % in the lab at 2.3 Gbit/s).
constexpr int socket_buffer_bytes = 4 * 1024 * 1024;

/// Grows the socket's buffers to socket_buffer_bytes: beyond the sysctl
/// limit when the process may (CAP_NET_ADMIN), else up to it. Says so once
/// per agent when the limit holds it lower.
void grow_buffers(int fd, uint64_t tag) {
  struct which {
    int opt, force;
    const char* name;
    const char* sysctl;
  };
  for (auto w :
       {which{SO_RCVBUF, SO_RCVBUFFORCE, "receive", "net.core.rmem_max"},
        which{SO_SNDBUF, SO_SNDBUFFORCE, "send", "net.core.wmem_max"}}) {
    int got = 0;
    socklen_t len = sizeof got;
    // (The kernel reports twice what was set: its bookkeeping overhead.)
    if (::getsockopt(fd, SOL_SOCKET, w.opt, &got, &len) == 0
        && got >= socket_buffer_bytes)
      continue;
    int want = socket_buffer_bytes;
    if (::setsockopt(fd, SOL_SOCKET, w.force, &want, sizeof want) != 0)
      ::setsockopt(fd, SOL_SOCKET, w.opt, &want, sizeof want);
    len = sizeof got;
    if (::getsockopt(fd, SOL_SOCKET, w.opt, &got, &len) == 0
        && got < socket_buffer_bytes)
      log::info(subject,
                "agent {}: the UDP {} buffer is {} KiB, not {} KiB; "
                "at high rates bursts overflow it (raise {})",
                tag, w.name, got / 2048, socket_buffer_bytes / 1024, w.sysctl);
  }
}

/// One sendmsg of xs[i, j): with UDP_SEGMENT when more than one (all as
/// large as the first, the last maybe smaller).
direct_result send_run(agent_core& c, const std::vector<std::string>& xs,
                       size_t i, size_t j) {
  iovec iov[max_gso_segments];
  for (size_t k = i; k < j; ++k)
    iov[k - i] = iovec{const_cast<char*>(xs[k].data()), xs[k].size()};
  msghdr mh{};
  mh.msg_name = &c.direct_to;
  mh.msg_namelen = c.direct_to_len;
  mh.msg_iov = iov;
  mh.msg_iovlen = j - i;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
  if (j - i > 1) {
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    auto* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    auto seg = static_cast<uint16_t>(xs[i].size());
    std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  for (int tries = 0; tries < 2; ++tries) {
    if (::sendmsg(c.direct_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
      return direct_result::sent;
    if (errno != EINTR)
      break;
  }
  switch (errno) {
    case EAGAIN:
    case ENOBUFS:
    case ECONNREFUSED: // an ICMP error of an earlier datagram
    case EHOSTUNREACH:
    case ENETUNREACH:
      return direct_result::dropped; // like UDP: QUIC recovers
    default:
      return j - i > 1 ? direct_result::refused : direct_result::dropped;
  }
}

} // namespace

void nice_driver::select_direct(agent_core& c, const NiceCandidate& remote) {
  int fd = -1;
  if (GSocket* gs = nice_agent_get_selected_socket(c.agent, c.stream, 1)) {
    // Our own descriptor of the same socket: libnice may close its own.
    fd = ::fcntl(g_socket_get_fd(gs), F_DUPFD_CLOEXEC, 0);
    g_object_unref(gs);
    if (fd >= 0)
      grow_buffers(fd, c.tag);
  }
  int old = -1;
  bool direct = false;
  {
    std::lock_guard<std::mutex> guard{c.send_mtx};
    old = std::exchange(c.direct_fd, -1);
    if (fd >= 0 && !c.gso_failed) {
      c.direct_fd = fd;
      c.direct_to = {};
      nice_address_copy_to_sockaddr(&remote.addr,
                                    reinterpret_cast<sockaddr*>(&c.direct_to));
      c.direct_to_len = remote.addr.s.addr.sa_family == AF_INET6
                          ? sizeof(sockaddr_in6)
                          : sizeof(sockaddr_in);
      fd = -1;
      direct = true;
    }
  }
  log::debug(subject, "agent {} sends {}", c.tag,
             direct ? "on the selected pair's socket, with UDP GSO"
                    : "through libnice");
  if (old >= 0)
    ::close(old);
  if (fd >= 0)
    ::close(fd);
}

void nice_driver::send(agent_core& c, const std::vector<std::string>& xs) {
  std::lock_guard<std::mutex> guard{c.send_mtx};
  if (c.send_agent == nullptr)
    return; // not open yet, or closed: dropped like UDP
  size_t i = 0;
  size_t dropped = 0;
  while (c.direct_fd >= 0 && i < xs.size()) {
    // A run: datagrams as large as the first, then maybe one smaller.
    size_t seg = xs[i].size();
    size_t j = i + 1;
    size_t bytes = seg;
    while (j < xs.size() && j - i < max_gso_segments && xs[j].size() <= seg
           && bytes + xs[j].size() <= max_gso_bytes) {
      bytes += xs[j].size();
      if (xs[j++].size() < seg)
        break;
    }
    auto r = send_run(c, xs, i, j);
    if (r == direct_result::refused) {
      // No GSO here (an old kernel, a device without checksum offload):
      // libnice sends from now on.
      log::info(subject,
                "agent {} cannot send with UDP GSO ({}); sends "
                "one datagram at a time",
                c.tag, std::strerror(errno));
      c.gso_failed = true;
      ::close(std::exchange(c.direct_fd, -1));
      break;
    }
    if (r == direct_result::dropped)
      dropped += j - i;
    i = j;
  }
  if (i < xs.size()) {
    auto n = xs.size() - i;
    std::vector<GOutputVector> bufs(n);
    std::vector<NiceOutputMessage> msgs(n);
    for (size_t k = 0; k < n; ++k) {
      bufs[k] = GOutputVector{xs[i + k].data(), xs[i + k].size()};
      msgs[k] = NiceOutputMessage{&bufs[k], 1};
    }
    GError* err = nullptr;
    auto sent = nice_agent_send_messages_nonblocking(
      c.send_agent, c.stream, 1, msgs.data(), n, nullptr, &err);
    if (err != nullptr)
      g_error_free(err);
    dropped += n - (sent < 0 ? size_t{0} : static_cast<size_t>(sent));
  }
  if (dropped > 0) {
    // Like UDP: the caller's protocol (QUIC) recovers.
    c.send_drops += dropped;
    log::emit(log::level::trace, subject, "agent {} drops {} datagrams", c.tag,
              dropped);
  }
}

void nice_driver::close(agent_core& c) {
  if (c.torn_down)
    return;
  c.torn_down = true;
  agents_.erase(&c);
  if (c.agent == nullptr)
    return; // closed before it opened
  NiceAgent* sender = nullptr;
  GSource* wake = nullptr;
  {
    std::lock_guard<std::mutex> guard{c.send_mtx}; // waits for a send
    sender = std::exchange(c.send_agent, nullptr);
    wake = std::exchange(c.wake, nullptr);
    if (c.direct_fd >= 0)
      ::close(std::exchange(c.direct_fd, -1));
  }
  if (sender != nullptr)
    g_object_unref(sender);
  if (wake != nullptr) {
    g_source_destroy(wake);
    g_source_unref(wake);
  }
  c.sink.reset(); // the session's QUIC link
  nice_agent_attach_recv(c.agent, c.stream, 1, ctx_, nullptr, nullptr);
  delete std::exchange(c.recv_ref, nullptr);
  for (auto h : c.handlers)
    g_signal_handler_disconnect(c.agent, h);
  c.handlers.clear();
  if (c.flush_source != nullptr) {
    g_source_destroy(c.flush_source);
    g_source_unref(std::exchange(c.flush_source, nullptr));
  }
  c.inbox.clear();
  auto* agent = std::exchange(c.agent, nullptr);
  closing_.insert(agent);
  nice_agent_close_async(agent, &nice_driver::on_closed, this);
  log::debug(subject, "agent {} closes", c.tag);
}

} // namespace

std::shared_ptr<ice_driver> make_nice_driver(const ice_settings& settings) {
  return std::make_shared<nice_driver>(settings);
}

} // namespace p2proxy
