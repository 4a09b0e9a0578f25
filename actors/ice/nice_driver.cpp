#include "actors/ice/nice_driver_impl.hpp"

#include <cstring>
#include <random>

#include <fmt/ranges.h>
#include <nice/debug.h>

#include "actors/actors.hpp"
#include "actors/ice/provided_servers.hpp"

namespace p2proxy::ice_detail {

namespace {

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

} // namespace

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

namespace {

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

  std::string selected_base() const override {
    std::lock_guard<std::mutex> guard{core_->mtx};
    return core_->selected_base;
  }

  bool attach(const std::shared_ptr<datagram_sink>& sink) override {
    post([s = sink](nice_driver& d, agent_core& c) { d.attach(c, s); });
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

} // namespace

std::shared_ptr<ice_agent>
nice_driver::create_agent(bool controlling, caf::actor owner, uint64_t tag) {
  auto c = std::make_shared<agent_core>(tag, controlling, owner.address());
  post([c](nice_driver& d) { d.open(c); });
  return std::make_shared<nice_agent_handle>(shared_from_this(), std::move(c));
}

std::shared_ptr<ice_agent> nice_driver::create_direct_agent(bool controlling,
                                                            caf::actor owner,
                                                            uint64_t tag) {
  auto c = std::make_shared<agent_core>(tag, controlling, owner.address());
  c->relay = false;
  post([c](nice_driver& d) { d.open(c); });
  return std::make_shared<nice_agent_handle>(shared_from_this(), std::move(c));
}

// --- on the GLib thread ---

void nice_driver::open(const core_ptr& c) {
  if (c->closed_hint.load() || quitting_)
    return; // closed before it ever opened
  // Not libnice's consent-freshness option: in libnice 0.1.21 it ends a
  // pair after a fixed 10 s without an answer (two or three lost checks
  // under load, or any pause of the peer longer than that). Its keepalive
  // checks instead are the same STUN binding requests every 4-6 s, answered
  // by the peer, but a pair fails only after 50 s without an answer; the
  // session's own silence limit (QUIC's idle timeout, session.idle_timeout)
  // decides first (docs/sessions.md, "Stalls").
  auto flags = static_cast<NiceAgentOption>(NICE_AGENT_OPTION_ICE_TRICKLE);
  c->agent = nice_agent_new_full(ctx_, NICE_COMPATIBILITY_RFC5245, flags);
  // ice-tcp off: QUIC over an ICE-TCP pair would stack two congestion
  // controllers; TURN over TCP still works with it off.
  g_object_set(c->agent, "controlling-mode", gboolean{c->controlling},
               "ice-tcp", FALSE, "upnp", gboolean{settings_.upnp},
               "keepalive-conncheck", gboolean{settings_.consent_checks},
               nullptr);
  if (settings_.idle_timeout_ms > 0)
    g_object_set(c->agent, "idle-timeout", guint{settings_.idle_timeout_ms},
                 nullptr);
  if (settings_.stun_initial_timeout_ms > 0)
    g_object_set(c->agent, "stun-initial-timeout",
                 guint{settings_.stun_initial_timeout_ms}, nullptr);
  if (settings_.stun_max_retransmissions > 0)
    g_object_set(c->agent, "stun-max-retransmissions",
                 guint{settings_.stun_max_retransmissions}, nullptr);
  // The node's own [ice] servers, else the signaling server's.
  auto servers = effective_servers(settings_);
  if (!servers.stun.empty()) {
    // libnice resolves a host name itself, asynchronously, on this thread.
    auto& stun = servers.stun.front();
    g_object_set(c->agent, "stun-server", stun.host.c_str(), "stun-server-port",
                 guint{stun.port}, nullptr);
  }
  auto local = settings_.local_addresses;
  if (local.empty()) {
    // The rules are applied to the interfaces there are now: one that came
    // or went since the last agent is judged like the others.
    auto chosen = choose_interfaces(list_interfaces(), settings_.interfaces,
                                    settings_.exclude);
    for (auto& a : chosen.used)
      local.push_back(a.ip);
    if (local.empty()) {
      log::info(subject,
                "agent {}: no interface passes [ice] interfaces/exclude ({} "
                "skipped); uses loopback",
                c->tag, chosen.skipped.size());
      local = {"127.0.0.1", "::1"};
    }
  }
  for (auto& ip : local) {
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
  for (auto& turn : c->relay ? servers.turn : std::vector<ice_turn_server>{})
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
         log::debug(subject, "agent {} gathers {}", c.tag, text);
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
         {
           char base[NICE_ADDRESS_STRING_LEN] = {};
           if (nice_address_is_valid(&l->base_addr))
             nice_address_to_string(&l->base_addr, base);
           std::lock_guard<std::mutex> guard{c.mtx};
           c.selected_base = base;
         }
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

} // namespace p2proxy::ice_detail

namespace p2proxy {

std::shared_ptr<ice_driver> make_nice_driver(const ice_settings& settings) {
  if (settings.local_addresses.empty()) {
    // What [ice] interfaces/exclude give on this machine now (each agent
    // looks again when it opens).
    auto chosen = choose_interfaces(list_interfaces(), settings.interfaces,
                                    settings.exclude);
    std::string skipped;
    for (auto& [a, why] : chosen.skipped)
      skipped += fmt::format("{}{} {} ({})", skipped.empty() ? "" : ", ",
                             a.name, a.ip, why);
    log::info(
      ice_detail::subject,
      "gathers on interfaces: {}; skips: {}; rules: interfaces [{}], "
      "exclude [{}]",
      describe_interfaces(chosen.used), skipped.empty() ? "none" : skipped,
      fmt::join(settings.interfaces, ", "), fmt::join(settings.exclude, ", "));
  }
  return std::make_shared<ice_detail::nice_driver>(settings);
}

} // namespace p2proxy
