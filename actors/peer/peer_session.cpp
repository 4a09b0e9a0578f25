#include "actors/peer/peer_session.hpp"

#include <cassert>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/peer/peer_session_parts.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

using namespace peer_session_parts;

namespace {

constexpr const char* subject = "peer_session";

} // namespace

const char* to_string(session_state s) {
  switch (s) {
    case session_state::connecting_ice:
      return "connecting-ice";
    case session_state::handshaking:
      return "handshaking";
    case session_state::ready:
      return "ready";
    case session_state::lingering:
      return "lingering";
    case session_state::closing:
      return "closing";
    case session_state::closed:
      return "closed";
  }
  return "?";
}

bool session_transition_allowed(session_state from, session_state to) {
  using s = session_state;
  switch (from) {
    case s::connecting_ice:
      return to == s::handshaking || to == s::closed;
    case s::handshaking:
      return to == s::ready || to == s::lingering || to == s::closing;
    case s::ready:
      return to == s::lingering || to == s::closing;
    case s::lingering:
      return to == s::ready || to == s::closing;
    case s::closing:
      return to == s::closed;
    case s::closed:
      return false;
  }
  return false;
}

std::string candidate_pair::text() const {
  return fmt::format("{} {} -> {} {}", local_type, local_addr, remote_type,
                     remote_addr);
}

namespace {

/// "198.18.0.3:6000" -> "198.18.0.3", "[2001:db8::1]:5" -> "[2001:db8::1]".
std::string host_of(const std::string& addr) {
  auto colon = addr.rfind(':');
  return colon == std::string::npos ? addr : addr.substr(0, colon);
}

} // namespace

std::string path_change_reason(const candidate_pair& from,
                               const candidate_pair& to) {
  if (from.empty())
    return "initial";
  if (from.relayed() && !to.relayed())
    return "upgrade";
  if (!from.relayed() && to.relayed())
    return "fallback";
  bool same_hosts = host_of(from.local_addr) == host_of(to.local_addr)
                    && host_of(from.remote_addr) == host_of(to.remote_addr);
  if (same_hosts && !(from == to))
    return "rebinding";
  return "switch";
}

admin::SessionStatus session_status(const peer_session_state& st) {
  admin::SessionStatus s;
  s.set_peer(st.args.peer);
  s.set_session_id(st.args.session_id);
  s.set_state(to_string(st.state));
  s.set_controlling(st.args.controlling);
  s.set_local_candidate_type(st.local_type);
  s.set_local_address(st.local_addr);
  s.set_remote_candidate_type(st.remote_type);
  s.set_remote_address(st.remote_addr);
  if (auto stats = st.link ? st.link->stats() : std::nullopt) {
    auto& q = *stats;
    s.set_rtt_ms(static_cast<double>(q.smoothed_rtt.count()) / 1000.0);
    s.set_bytes_sent(q.bytes_sent);
    s.set_bytes_received(q.bytes_received);
    s.set_packets_sent(q.packets_sent);
    s.set_packets_received(q.packets_received);
    s.set_min_rtt_ms(static_cast<double>(q.min_rtt.count()) / 1000.0);
    s.set_cwnd_bytes(q.cwnd);
    s.set_lost_packets(q.lost_packets);
  }
  if (auto d = st.link ? st.link->datagram_stats() : std::nullopt) {
    auto* g = s.mutable_datagrams();
    g->set_sent(d->sent);
    g->set_received(d->received);
    g->set_bytes_sent(d->bytes_sent);
    g->set_bytes_received(d->bytes_received);
    g->set_dropped_oversize(d->dropped_oversize);
    g->set_dropped_congestion(d->dropped_congestion);
    g->set_dropped_expired(d->dropped_expired);
    g->set_dropped_unavailable(d->dropped_unavailable);
    g->set_dropped_malformed(d->dropped_malformed);
    g->set_lost(d->lost);
    g->set_dropped_backlog(d->dropped_backlog);
  }
  if (st.datagrams_unknown_flow > 0)
    s.mutable_datagrams()->set_dropped_unknown_flow(st.datagrams_unknown_flow);
  s.set_open_streams(static_cast<uint32_t>(st.streams.size()));
  if (st.state == session_state::lingering)
    s.set_linger_deadline(rfc3339(st.linger_deadline));
  s.set_close_reason(st.close_reason);
  s.set_network_changes(st.paths.network_changes);
  for (auto& c : st.path_history) {
    auto* row = s.add_path_history();
    row->set_time(rfc3339(c.time));
    row->set_from(c.from);
    row->set_to(c.to);
    row->set_reason(c.reason);
    row->set_migrated(c.migrated);
  }
  s.set_quic_path(static_cast<uint32_t>(st.paths.quic_path));
  s.set_migrations(st.paths.migrations);
  return s;
}

namespace peer_session_parts {

quic_time now_ns(peer_session_actor* self) {
  return static_cast<quic_time>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(
      self->clock().now().time_since_epoch())
      .count());
}

void transition_to(peer_session_actor* self, session_state to) {
  auto& st = self->state;
  if (!session_transition_allowed(st.state, to)) {
    log::error(subject, "{} refuses transition {} -> {}", st.args.peer,
               to_string(st.state), to_string(to));
    assert(false && "illegal peer_session transition");
    return;
  }
  log::debug(subject, "{} moves {} -> {}", st.args.peer, to_string(st.state),
             to_string(to));
  st.state = to;
}

} // namespace peer_session_parts

namespace peer_session_parts {

void send_signal(peer_session_actor* self, signal::Signal sig) {
  auto& st = self->state;
  sig.set_to(st.args.peer);
  sig.set_session_id(st.args.session_id);
  auto peer = st.args.peer;
  self
    ->request(st.args.link, std::chrono::seconds(10), signal_atom::value,
              sig.SerializeAsString())
    .then([] {},
          [peer](caf::error& err) {
            log::debug(subject, "could not signal {}: {}", peer,
                       error_text(err));
          });
}

} // namespace peer_session_parts

namespace {

void finish(peer_session_actor* self) {
  auto& st = self->state;
  end_streams(self);
  close_paths(self);
  if (st.agent) {
    st.agent->close();
    st.agent.reset();
  }
  st.link->drop();
  self->send(st.args.manager, failed_atom::value, st.args.session_id,
             st.close_error, session_status(st).SerializeAsString());
  end_close_handshake(self); // after the manager heard: they open anew
  self->quit(caf::exit_reason::normal);
}

void start_quic(peer_session_actor* self) {
  auto& st = self->state;
  transition_to(self, session_state::handshaking);
  auto& a = st.args;
  auto started = st.link->start(
    [&a](quic_events& events, quic_time now) {
      return a.controlling
               ? quic_connection::make_client(*a.me, a.peer, a.settings.quic,
                                              events, now)
               : quic_connection::make_server(*a.me, a.peer, a.settings.quic,
                                              events, now);
    },
    now_ns(self));
  if (!started) {
    close_session(
      self, make_error(ec::unspecified, "could not create the QUIC connection"),
      true);
    return;
  }
  flush(self);
}

/// The current agent selected a pair: the status shows it, the path
/// history records the change. QUIC needs no word of it: the agent sends on
/// whatever pair is selected, and QUIC's own path stays.
void on_selected_pair(peer_session_actor* self, const candidate_pair& to) {
  auto& st = self->state;
  candidate_pair from{st.local_type, st.local_addr, st.remote_type,
                      st.remote_addr};
  if (from == to)
    return;
  record_path(self, to, path_change_reason(from, to));
  if (st.paths.checking)
    on_current_pair(self);
}

/// The ICE agent's state: a path starts QUIC, a failure ends the session.
void on_ice_state(peer_session_actor* self, const std::string& state) {
  auto& st = self->state;
  if (state == "ready" || state == "connected") {
    if (st.state == session_state::connecting_ice)
      start_quic(self);
    else
      on_current_state(self, state);
  } else if (state == "failed" || state == "disconnected") {
    if (st.state != session_state::connecting_ice)
      // Past the setup the session moves to a new path (an ICE restart,
      // session_path.cpp); QUIC's idle timeout ends it if none comes.
      on_current_state(self, state);
    else if (state == "failed")
      close_session(
        self,
        make_error(ec::ice_failed,
                   fmt::format("ICE failed: no candidate pair worked "
                               "({} local, {} remote candidates)",
                               st.local_candidates, st.remote_candidates)),
        true);
  }
}

/// The connect timer: ICE or the handshake took too long.
void on_connect_timeout(peer_session_actor* self) {
  auto& st = self->state;
  auto ms = st.args.settings.connect_timeout.count();
  std::string text;
  if (st.state == session_state::connecting_ice)
    text = fmt::format("timeout: ICE found no path within {} ms", ms);
  else if (st.state == session_state::handshaking)
    text = fmt::format("timeout: no QUIC handshake within {} ms", ms);
  else
    return;
  close_session(self, make_error(ec::timeout, std::move(text)), true);
}

} // namespace

namespace peer_session_parts {

void close_session(peer_session_actor* self, const caf::error& why,
                   bool tell_peer) {
  auto& st = self->state;
  if (st.state == session_state::closing || st.state == session_state::closed)
    return;
  st.close_error = why;
  st.close_reason = error_text(why);
  auto& reason = st.close_reason;
  log::info(subject, "{} (session {}) closes: {}", st.args.peer,
            st.args.session_id, reason);
  if (st.state == session_state::connecting_ice) {
    if (tell_peer) {
      signal::Signal bye;
      bye.set_bye(reason);
      send_signal(self, std::move(bye));
    }
    transition_to(self, session_state::closed);
    finish(self);
    return;
  }
  transition_to(self, session_state::closing);
  if (st.link->open()) {
    st.link->close(reason);
    flush(self);
  } else if (tell_peer) {
    signal::Signal bye;
    bye.set_bye(reason);
    send_signal(self, std::move(bye));
  }
  transition_to(self, session_state::closed);
  finish(self);
}

ec code_of_text_reason(const std::string& reason) {
  auto has = [&](const char* x) { return reason.find(x) != std::string::npos; };
  if (has("ICE failed"))
    return ec::ice_failed;
  if (has("presented node id")) // our TLS refused the peer's key
    return ec::identity_mismatch;
  if (has("timeout"))
    return ec::timeout;
  if (has("offline"))
    return ec::peer_offline;
  if (has("handshake") || has("TLS"))
    return ec::handshake_failed;
  return ec::session_lost;
}

void on_ready(peer_session_actor* self) {
  auto& st = self->state;
  auto& rt = st.remote_type;
  log::info(subject, "{} (session {}) is ready via {} {} -> {} {}",
            st.args.peer, st.args.session_id, st.local_type, st.local_addr, rt,
            st.remote_addr);
  open_control_stream(self);
  self->send(st.args.manager, ready_atom::value, st.args.session_id);
  start_path_checks(self);
  if (st.streams.empty()) {
    transition_to(self, session_state::ready);
    start_linger(self);
  } else {
    transition_to(self, session_state::ready);
  }
}

} // namespace peer_session_parts

caf::behavior peer_session(peer_session_actor* self, session_args args) {
  auto& st = self->state;
  st.args = std::move(args);
  // Agents are tagged with their ICE generation: 0 for the setup's.
  st.agent
    = st.args.ice->create_agent(st.args.controlling, caf::actor{self}, 0);
  st.link = std::make_shared<quic_link>(self->address());
  st.link->attach_to(st.agent);
  self->set_down_handler(
    [=](const caf::down_msg& dm) { on_owner_down(self, dm.source); });
  {
    signal::Signal sig;
    auto desc
      = st.args.controlling ? sig.mutable_offer() : sig.mutable_answer();
    desc->set_ufrag(st.agent->local_ufrag());
    desc->set_pwd(st.agent->local_pwd());
    send_signal(self, std::move(sig));
  }
  if (!st.args.controlling)
    st.agent->set_remote_credentials(st.args.remote_ufrag, st.args.remote_pwd);
  st.agent->gather();
  self->delayed_send(self, st.args.settings.connect_timeout,
                     timeout_atom::value, ++st.connect_gen);
  log::debug(subject, "{} (session {}) starts as {}", st.args.peer,
             st.args.session_id,
             st.args.controlling ? "controlling" : "controlled");

  caf::message_handler life{
    // --- signaling from the peer, through the PEER MANAGER
    // ----------------------
    [=](signal_atom, const std::string& serialized) {
      auto& st = self->state;
      signal::Signal sig;
      if (!sig.ParseFromString(serialized) || !st.agent)
        return;
      switch (sig.payload_case()) {
        case signal::Signal::kAnswer:
          if (sig.generation() > 0)
            on_restart_answer(self, sig);
          else if (st.args.controlling)
            st.agent->set_remote_credentials(sig.answer().ufrag(),
                                             sig.answer().pwd());
          break;
        case signal::Signal::kRestart:
          on_restart_signal(self, sig);
          break;
        case signal::Signal::kCandidate:
          if (auto* agent = agent_for_signal(self, sig)) {
            ++st.remote_candidates;
            agent->add_remote_candidate(sig.candidate());
          }
          break;
        case signal::Signal::kEndOfCandidates:
          if (auto* agent = agent_for_signal(self, sig))
            agent->remote_gathering_done();
          break;
        case signal::Signal::kBye:
          // The peer's reason arrives as text (code_of_text_reason).
          close_session(self,
                        make_error(code_of_text_reason(sig.bye()),
                                   "the peer closed the session: " + sig.bye()),
                        false);
          break;
        default:
          break;
      }
    },
    // --- ICE events
    // -------------------------------------------------------------
    // Each tagged with its agent's generation: the current one's drive the
    // session, a restart's go to session_path.cpp, a retired one's are
    // dropped.
    [=](ice_cand_atom, uint64_t tag, const std::string& cand) {
      ++self->state.local_candidates;
      if (is_pending(self->state, tag)) {
        pending_candidate(self, cand);
        return;
      }
      if (tag != self->state.paths.gen)
        return;
      signal::Signal sig;
      sig.set_candidate(cand);
      sig.set_generation(static_cast<uint32_t>(tag));
      send_signal(self, std::move(sig));
    },
    [=](ice_gathered_atom, uint64_t tag) {
      if (is_pending(self->state, tag)) {
        pending_gathered(self);
        return;
      }
      if (tag != self->state.paths.gen)
        return;
      signal::Signal sig;
      sig.set_end_of_candidates(true);
      sig.set_generation(static_cast<uint32_t>(tag));
      send_signal(self, std::move(sig));
    },
    [=](ice_pair_atom, uint64_t tag, const std::string& ltype,
        const std::string& laddr, const std::string& rtype,
        const std::string& raddr) {
      candidate_pair pair{ltype, laddr, rtype, raddr};
      if (is_pending(self->state, tag))
        pending_pair(self, std::move(pair));
      else if (tag == self->state.paths.gen)
        on_selected_pair(self, pair);
    },
    [=](ice_state_atom, uint64_t tag, const std::string& state) {
      if (is_pending(self->state, tag))
        pending_state(self, state);
      else if (tag == self->state.paths.gen)
        on_ice_state(self, state);
    },
    [=](ice_data_atom, uint64_t gen, std::vector<std::string>& datagrams) {
      // Only from an agent that cannot drive the link itself; its
      // generation is its QUIC path.
      auto& st = self->state;
      st.link->receive(datagrams, now_ns(self), static_cast<quic_path_id>(gen));
      flush(self);
    },
    [=](quic_link_atom) {
      process_events(self);
      flush(self);
    },
    // --- timers
    // ---------------------------------------------------------------------
    [=](quic_timer_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == 0) { // a continuation of flush, not a timer
        st.flush_scheduled = false;
        flush(self);
        return;
      }
      if (gen != st.timer_gen || !st.link->started())
        return;
      st.armed_expiry = UINT64_MAX;
      st.link->on_expiry(now_ns(self));
      flush(self);
    },
    [=](linger_atom, uint64_t gen) { on_linger_timer(self, gen); },
    [=](path_check_atom) { on_path_check(self); },
    [=](net_change_atom, const std::vector<std::string>& added,
        const std::vector<std::string>& removed) {
      on_network_change(self, added, removed);
    },
    [=](online_atom) { on_link_online(self); },
    [=](timeout_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == st.connect_gen)
        on_connect_timeout(self);
    },
    [=](preamble_timer_atom, int64_t id) { on_preamble_timeout(self, id); },
    // --- status and close
    // ----------------------------------------------------------------
    [=](get_atom) { return session_status(self->state).SerializeAsString(); },
    [=](status_atom) {
      admin::ActorStatus as;
      as.set_name(peer_session_state::name);
      as.set_state(to_string(self->state.state));
      (*as.mutable_fields())["peer"] = self->state.args.peer;
      (*as.mutable_fields())["streams"]
        = std::to_string(self->state.streams.size());
      for (auto& [id, s] : self->state.streams)
        (*as.mutable_fields())["stream_" + std::to_string(id)] = fmt::format(
          "pending={} granted={} fin={} unacked={}", s.unsent(), s.granted,
          s.pending_fin, self->state.link->unacked(id));
      (*as.mutable_fields())["send_order"]
        = std::to_string(self->state.send_order.size());
      if (auto expiry = self->state.link->expiry(); expiry != UINT64_MAX)
        (*as.mutable_fields())["expiry_in_ms"] = std::to_string(
          (static_cast<int64_t>(expiry) - static_cast<int64_t>(now_ns(self)))
          / 1000000);
      (*as.mutable_fields())["io_driven"]
        = self->state.link->io_driven() ? "yes" : "no";
      auto& paths = self->state.paths;
      (*as.mutable_fields())["paths"] = fmt::format(
        "gen={} quic_path={} pending={} retiring={} restarts={} failed={} "
        "glare={} upgrades={} migrations={} network_changes={}",
        paths.gen, paths.quic_path,
        paths.pending ? std::to_string(paths.pending->gen) : "-",
        paths.retiring ? "yes" : "no", paths.restarts, paths.restarts_failed,
        paths.glare, paths.upgrades, paths.migrations, paths.network_changes);
      (*as.mutable_fields())["close_handshake"] = fmt::format(
        "{} linger_ms={} proposals={} accepts={} refusals={} rejects={} "
        "cancels={} held={}",
        to_string(self->state.close.ph), self->state.close.linger.count(),
        self->state.close.proposals, self->state.close.accepts,
        self->state.close.refusals, self->state.close.rejects,
        self->state.close.cancels, self->state.close.held.size());
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      close_session(self, make_error(ec::unspecified, reason), true);
    },
  };
  // (CAF 0.17's or_else() takes a behavior, not a bare message_handler.)
  const caf::message_handler streams = stream_handlers(self);
  const caf::message_handler flows = flow_handlers(self);
  return life.or_else(caf::behavior{streams.or_else(caf::behavior{flows})});
}

} // namespace p2proxy
