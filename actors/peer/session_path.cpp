// The PEER SESSION's path: ICE restarts (a new agent per generation,
// make-before-break), the watch that finds a dead path, and the relayed
// session's probe for a direct pair. docs/sessions.md, "Path changes".
//
// A generation's agent is created, closed and forgotten here only: the
// current one (st.agent), the restart in flight (st.paths.pending) and the
// replaced one that still receives for a moment (st.paths.retiring).
// finish() closes all three through close_paths().
#include <algorithm>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"
#include "actors/peer/peer_session_parts.hpp"
#include "proto/signal.pb.h"

namespace p2proxy::peer_session_parts {

namespace {

constexpr const char* subject = "peer_session";

quic_time ns(std::chrono::milliseconds d) {
  return static_cast<quic_time>(d.count()) * 1000000;
}

bool past_setup(const peer_session_state& st) {
  return st.state == session_state::ready
         || st.state == session_state::lingering;
}

/// The next restart waits restart_backoff × 2^failures, at most 8 times.
void back_off(peer_session_actor* self, quic_time now) {
  auto& st = self->state;
  auto& p = st.paths;
  auto shift = std::min(p.failures, 3u);
  p.next_restart = now + (ns(st.args.settings.paths.restart_backoff) << shift);
}

void close_pending(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (p.pending && p.pending->agent) {
    p.pending->agent->close();
    st.link->forget(static_cast<quic_path_id>(p.pending->gen));
  }
  p.pending.reset();
}

void close_retiring(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (!p.retiring)
    return;
  p.retiring->close();
  p.retiring.reset();
  st.link->forget(static_cast<quic_path_id>(p.retiring_gen));
}

/// The QUIC client moves to the current generation's pair (the server
/// follows when the client's packets come on it). Again at each check
/// until QUIC is there: a move needs a spare connection id from the peer.
void migrate(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (!st.args.controlling)
    return;
  if (st.link->quic_path() == p.gen)
    return;
  if (st.link->migrate(static_cast<quic_path_id>(p.gen), now_ns(self)))
    log::debug(subject, "{} (session {}) moves QUIC to ICE generation {}",
               st.args.peer, st.args.session_id, p.gen);
}

/// The pending generation found its pair: QUIC sends on it from now on,
/// the replaced agent retires after a grace.
void promote(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  auto g = std::move(*p.pending);
  p.pending.reset();
  auto now = now_ns(self);
  close_retiring(self);
  p.retiring = std::move(st.agent);
  p.retiring_gen = p.gen;
  p.retire_at = now + ns(st.args.settings.paths.retire_after);
  st.agent = g.agent;
  p.gen = g.gen;
  p.current_failed = false;
  p.switched_at = now;
  p.failures = 0;
  p.next_restart = 0;
  st.link->switch_agent(st.agent);
  candidate_pair from{st.local_type, st.local_addr, st.remote_type,
                      st.remote_addr};
  auto reason = from.relayed() && !g.pair.relayed() ? "upgrade" : "restart";
  if (std::string{reason} == "upgrade")
    ++p.upgrades;
  log::info(subject, "{} (session {}) ICE generation {} ({}) carries it now",
            st.args.peer, st.args.session_id, g.gen, g.reason);
  record_path(self, g.pair, reason);
  migrate(self);
  if (g.pair.relayed()) {
    if (p.next_upgrade == 0)
      p.next_upgrade = now + ns(st.args.settings.paths.upgrade_first);
  } else {
    p.next_upgrade = 0;
    p.upgrade_tries = 0;
  }
  flush(self);
}

/// The pending generation failed or ran out of time.
void abandon(peer_session_actor* self, const char* why) {
  auto& st = self->state;
  auto& p = st.paths;
  auto& g = *p.pending;
  log::info(subject, "{} (session {}) drops ICE generation {} ({}): {}",
            st.args.peer, st.args.session_id, g.gen, g.reason, why);
  bool probe = g.direct_only;
  close_pending(self);
  if (probe)
    return; // the upgrade's own schedule says when to try again
  ++p.restarts_failed;
  ++p.failures;
  back_off(self, now_ns(self));
}

void send_description(peer_session_actor* self, bool restart,
                      const ice_generation& g) {
  signal::Signal sig;
  auto* d = restart ? sig.mutable_restart() : sig.mutable_answer();
  d->set_ufrag(g.agent->local_ufrag());
  d->set_pwd(g.agent->local_pwd());
  d->set_direct_only(g.direct_only);
  sig.set_generation(static_cast<uint32_t>(g.gen));
  send_signal(self, std::move(sig));
}

std::shared_ptr<ice_agent> new_agent(peer_session_actor* self, uint64_t gen,
                                     bool direct_only) {
  auto& st = self->state;
  auto& a = st.args;
  auto agent
    = direct_only
        ? a.ice->create_direct_agent(a.controlling, caf::actor{self}, gen)
        : a.ice->create_agent(a.controlling, caf::actor{self}, gen);
  st.link->listen_to(agent, static_cast<quic_path_id>(gen));
  return agent;
}

/// Is the current path dead? Bytes have waited for an ACK for
/// silence_limit with nothing heard meanwhile, or the agent said so.
bool path_dead(peer_session_actor* self, quic_time now) {
  auto& st = self->state;
  if (st.paths.current_failed)
    return true;
  auto facts = st.link->silence();
  // After a switch QUIC's next probe may wait a backed-off PTO (about as
  // long as the silence before it): the new path gets restart_deadline.
  if (st.paths.switched_at > 0
      && now
           < st.paths.switched_at + ns(st.args.settings.paths.restart_deadline))
    return false;
  if (facts.bytes_in_flight == 0) {
    st.paths.nothing_waiting_at = now;
    return false;
  }
  // The wait began after the last packet heard and after the last look
  // that found nothing in flight: an idle session's keepalive PING, sent
  // long after the last packet heard, is not a silence of that length.
  auto waiting_since = std::max(facts.last_heard, st.paths.nothing_waiting_at);
  return facts.last_heard > 0
         && now > waiting_since + ns(st.args.settings.paths.silence_limit);
}

void schedule_check(peer_session_actor* self) {
  auto& st = self->state;
  self->delayed_send(self, st.args.settings.paths.check_every,
                     path_check_atom::value);
}

} // namespace

void record_path(peer_session_actor* self, candidate_pair to,
                 std::string reason) {
  auto& st = self->state;
  candidate_pair from{st.local_type, st.local_addr, st.remote_type,
                      st.remote_addr};
  if (!from.empty())
    log::info(subject, "{} (session {}) moves to {} ({}; was {})", st.args.peer,
              st.args.session_id, to.text(), reason, from.text());
  st.path_history.push_back(
    path_change{std::chrono::system_clock::now(),
                from.empty() ? "" : from.text(), to.text(), std::move(reason),
                st.paths.gen, st.paths.quic_path == st.paths.gen});
  while (st.path_history.size() > max_path_history)
    st.path_history.pop_front();
  st.local_type = std::move(to.local_type);
  st.local_addr = std::move(to.local_addr);
  st.remote_type = std::move(to.remote_type);
  st.remote_addr = std::move(to.remote_addr);
}

void watch_quic_path(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (p.gen == p.quic_path && !p.pending)
    return;
  auto now_on = st.link->quic_path();
  if (now_on == p.quic_path)
    return;
  p.quic_path = now_on;
  ++p.migrations;
  log::info(subject, "{} (session {}) QUIC migrated to ICE generation {}",
            st.args.peer, st.args.session_id, now_on);
  for (auto& c : st.path_history)
    if (c.gen == now_on)
      c.migrated = true;
}

void start_restart(peer_session_actor* self, std::string reason,
                   bool direct_only) {
  auto& st = self->state;
  auto& p = st.paths;
  if (p.pending || !past_setup(st))
    return;
  ice_generation g;
  g.gen = ++p.highest;
  g.mine = true;
  g.direct_only = direct_only;
  g.reason = std::move(reason);
  g.deadline = now_ns(self) + ns(st.args.settings.paths.restart_deadline);
  g.agent = new_agent(self, g.gen, direct_only);
  ++p.restarts;
  log::info(subject, "{} (session {}) starts ICE generation {}: {}",
            st.args.peer, st.args.session_id, g.gen, g.reason);
  p.pending = std::move(g);
  send_description(self, true, *p.pending);
  p.pending->agent->gather();
}

void on_restart_signal(peer_session_actor* self, const signal::Signal& sig) {
  auto& st = self->state;
  auto& p = st.paths;
  uint64_t g = sig.generation();
  if (g == 0 || g <= p.gen || !past_setup(st))
    return; // stale, or a session not yet up (its setup decides)
  p.highest = std::max(p.highest, g);
  if (p.pending) {
    if (p.pending->gen > g)
      return; // the peer will answer ours
    if (p.pending->gen == g) {
      if (!p.pending->mine)
        return; // a duplicate
      // Glare: both sides restarted at once. The controlling side's
      // restart wins, as the opener's session wins session glare; the
      // other side answers it.
      ++p.glare;
      if (st.args.controlling)
        return;
      log::debug(subject, "{} (session {}) yields ICE generation {} (glare)",
                 st.args.peer, st.args.session_id, g);
    }
    close_pending(self);
  }
  ice_generation gen;
  gen.gen = g;
  gen.answered = true;
  gen.direct_only = sig.restart().direct_only();
  gen.reason = "the peer's restart";
  gen.deadline = now_ns(self) + ns(st.args.settings.paths.restart_deadline);
  gen.agent = new_agent(self, g, gen.direct_only);
  gen.agent->set_remote_credentials(sig.restart().ufrag(), sig.restart().pwd());
  log::info(subject, "{} (session {}) answers ICE generation {}", st.args.peer,
            st.args.session_id, g);
  p.pending = std::move(gen);
  send_description(self, false, *p.pending);
  p.pending->agent->gather();
}

ice_agent* agent_for_signal(peer_session_actor* self,
                            const signal::Signal& sig) {
  auto& st = self->state;
  auto& p = st.paths;
  if (sig.generation() == p.gen)
    return st.agent.get();
  if (p.pending && sig.generation() == p.pending->gen)
    return p.pending->agent.get();
  return nullptr;
}

void on_restart_answer(peer_session_actor* self, const signal::Signal& sig) {
  auto& p = self->state.paths;
  if (!p.pending || !p.pending->mine || p.pending->answered
      || p.pending->gen != sig.generation())
    return;
  p.pending->answered = true;
  p.pending->agent->set_remote_credentials(sig.answer().ufrag(),
                                           sig.answer().pwd());
}

bool is_pending(const peer_session_state& st, uint64_t tag) {
  auto& p = st.paths;
  return p.pending && tag == p.pending->gen && tag != p.gen;
}

void pending_candidate(peer_session_actor* self, const std::string& cand) {
  signal::Signal sig;
  sig.set_candidate(cand);
  sig.set_generation(static_cast<uint32_t>(self->state.paths.pending->gen));
  send_signal(self, std::move(sig));
}

void pending_gathered(peer_session_actor* self) {
  signal::Signal sig;
  sig.set_end_of_candidates(true);
  sig.set_generation(static_cast<uint32_t>(self->state.paths.pending->gen));
  send_signal(self, std::move(sig));
}

void pending_pair(peer_session_actor* self, candidate_pair pair) {
  auto& g = *self->state.paths.pending;
  g.pair = std::move(pair);
  if (g.connected)
    promote(self);
}

void pending_state(peer_session_actor* self, const std::string& state) {
  auto& g = *self->state.paths.pending;
  if (state == "ready" || state == "connected") {
    g.connected = true;
    if (!g.pair.empty())
      promote(self);
  } else if (state == "failed") {
    abandon(self, "no candidate pair worked");
  }
}

void on_current_state(peer_session_actor* self, const std::string& state) {
  auto& st = self->state;
  if (!past_setup(st))
    return;
  bool failed = state == "failed" || state == "disconnected";
  if (failed && !st.paths.current_failed)
    log::info(subject, "{} (session {}) ICE says the path is {}", st.args.peer,
              st.args.session_id, state);
  st.paths.current_failed = failed;
  if (failed)
    check_path(self);
}

void on_current_pair(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  candidate_pair now{st.local_type, st.local_addr, st.remote_type,
                     st.remote_addr};
  if (!now.relayed()) {
    p.next_upgrade = 0;
    p.upgrade_tries = 0;
  } else if (p.next_upgrade == 0) {
    p.next_upgrade = now_ns(self) + ns(st.args.settings.paths.upgrade_first);
  }
}

void start_path_checks(peer_session_actor* self) {
  auto& p = self->state.paths;
  if (p.checking)
    return;
  p.checking = true;
  on_current_pair(self);
  schedule_check(self);
}

void check_path(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (!past_setup(st))
    return;
  auto now = now_ns(self);
  watch_quic_path(self);
  migrate(self);
  // The replaced agent goes once QUIC has left it (or after a longer wait,
  // should QUIC never get away: what it still writes for that path then
  // goes on the current agent).
  if (p.retiring
      && ((now >= p.retire_at && p.quic_path != p.retiring_gen)
          || now >= p.retire_at + ns(st.args.settings.paths.restart_deadline)))
    close_retiring(self);
  if (p.pending && now >= p.pending->deadline)
    abandon(self, p.pending->answered ? "no pair in time" : "no answer");
  if (path_dead(self, now)) {
    if (p.pending && p.pending->direct_only && p.pending->mine) {
      // A probe without TURN cannot save a dead path: a full restart can.
      close_pending(self);
    }
    if (!p.pending && now >= p.next_restart)
      start_restart(
        self,
        p.current_failed
          ? "ICE reports the pair failed"
          : fmt::format("no packet for {} ms with data in "
                        "flight",
                        st.args.settings.paths.silence_limit.count()),
        false);
    return;
  }
  if (!p.pending && p.next_upgrade != 0 && now >= p.next_upgrade) {
    auto shift = std::min(++p.upgrade_tries, 4u);
    p.next_upgrade
      = now
        + std::min(ns(st.args.settings.paths.upgrade_first) << shift,
                   ns(st.args.settings.paths.upgrade_max));
    start_restart(self, "looks for a direct pair", true);
  }
}

void on_path_check(peer_session_actor* self) {
  auto& st = self->state;
  if (st.state == session_state::closing || st.state == session_state::closed)
    return;
  check_path(self);
  schedule_check(self);
}

void close_paths(peer_session_actor* self) {
  close_pending(self);
  close_retiring(self);
}

void on_network_change(peer_session_actor* self,
                       const std::vector<std::string>& added,
                       const std::vector<std::string>& removed) {
  auto& st = self->state;
  auto& p = st.paths;
  if (!past_setup(st))
    return; // the setup's own checks decide
  ++p.network_changes;
  candidate_pair current{st.local_type, st.local_addr, st.remote_type,
                         st.remote_addr};
  auto base = st.agent ? st.agent->selected_base() : std::string{};
  if (base.empty() && current.local_type == "host")
    base = ip_of_address(current.local_addr);
  auto reaction = react_to_network_change(current, base, removed);
  log::debug(subject,
             "{} (session {}) hears of a network change (+{} -{}) on {} "
             "(base {})",
             st.args.peer, st.args.session_id, added.size(), removed.size(),
             current.text(), base.empty() ? "unknown" : base);
  // What a generation in flight gathered, it gathered on the old
  // addresses: a restart or probe of ours starts over.
  auto drop_own_pending = [&] {
    if (p.pending && p.pending->mine)
      close_pending(self);
  };
  switch (reaction) {
    case network_reaction::restart:
      // The path is gone with its address: no backoff from earlier
      // failures, and a generation in flight (ours or the peer's) gathered
      // on it. Ours replaces it (a higher generation: the peer drops its
      // own and answers).
      p.failures = 0;
      p.next_restart = 0;
      close_pending(self);
      start_restart(self, fmt::format("local address {} went away", base),
                    false);
      break;
    case network_reaction::probe:
      if (p.pending && !(p.pending->mine && p.pending->direct_only))
        break; // a full restart is under way; it gathers anew too
      drop_own_pending();
      // The schedule starts over: the network changed.
      p.upgrade_tries = 0;
      p.next_upgrade = now_ns(self) + ns(st.args.settings.paths.upgrade_first);
      start_restart(self, "network change: looks for a direct pair", true);
      break;
    case network_reaction::none:
      break;
  }
}

void on_link_online(peer_session_actor* self) {
  auto& st = self->state;
  auto& p = st.paths;
  if (!past_setup(st) || !p.pending || !p.pending->mine || p.pending->answered)
    return;
  // Its Signal.restart and candidates went out while the link was down (a
  // network change ends the link's connection too): nobody will answer
  // them. The same restart again, as a new generation.
  auto reason = p.pending->reason;
  bool direct_only = p.pending->direct_only;
  log::info(subject,
            "{} (session {}) repeats ICE generation {}: the signaling link "
            "was down",
            st.args.peer, st.args.session_id, p.pending->gen);
  close_pending(self);
  start_restart(self, std::move(reason), direct_only);
}

} // namespace p2proxy::peer_session_parts

namespace p2proxy {

std::string ip_of_address(const std::string& addr) {
  auto colon = addr.rfind(':');
  auto host = colon == std::string::npos ? addr : addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host;
}

network_reaction
react_to_network_change(const candidate_pair& current, const std::string& base,
                        const std::vector<std::string>& removed) {
  if (current.empty())
    return network_reaction::none;
  if (!base.empty()
      && std::find(removed.begin(), removed.end(), base) != removed.end())
    return network_reaction::restart;
  if (current.relayed())
    return network_reaction::probe;
  return network_reaction::none;
}

} // namespace p2proxy
