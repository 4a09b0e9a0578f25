#include "actors/peer/peer_session.hpp"

#include <cassert>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

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
    s.set_rtt_ms(q.smoothed_rtt.count() / 1000.0);
    s.set_bytes_sent(q.bytes_sent);
    s.set_bytes_received(q.bytes_received);
    s.set_packets_sent(q.packets_sent);
    s.set_packets_received(q.packets_received);
    s.set_min_rtt_ms(q.min_rtt.count() / 1000.0);
    s.set_cwnd_bytes(q.cwnd);
    s.set_lost_packets(q.lost_packets);
  }
  s.set_open_streams(static_cast<uint32_t>(st.streams.size()));
  if (st.state == session_state::lingering)
    s.set_linger_deadline(rfc3339(st.linger_deadline));
  s.set_close_reason(st.close_reason);
  return s;
}

namespace {

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

void finish(peer_session_actor* self);
void flush(peer_session_actor* self);

/// Sends to a stream's owner, or holds it while the stream is being handed
/// to a new owner (see session_stream::held).
template <class... Ts>
void tell_owner(peer_session_actor* self, session_stream& s, Ts... xs) {
  if (!s.owner)
    return;
  if (s.handing_over_from) {
    s.held.emplace_back([self, to = s.owner, xs...]() mutable {
      self->send(to, std::move(xs)...);
    });
    return;
  }
  self->send(s.owner, std::move(xs)...);
}

void run_all(std::vector<std::function<void()>>& held) {
  auto xs = std::move(held);
  held.clear();
  for (auto& f : xs)
    f();
}

/// The old owner has forwarded what reached it: what waited goes out.
void release_held(session_stream& s) {
  s.handing_over_from = nullptr;
  run_all(s.held);
}

/// The same for streams that ended meanwhile, waiting for `old`.
void release_orphans(peer_session_actor* self, const caf::actor_addr& old) {
  auto i = self->state.orphans.find(old);
  if (i == self->state.orphans.end())
    return;
  auto held = std::move(i->second);
  self->state.orphans.erase(i);
  run_all(held);
}
bool process_events(peer_session_actor* self);

/// The session is over: tell owners, close QUIC politely if it exists, end
/// ICE, quit. Idempotent.
void close_session(peer_session_actor* self, const std::string& reason,
                   bool tell_peer) {
  auto& st = self->state;
  if (st.state == session_state::closing || st.state == session_state::closed)
    return;
  st.close_reason = reason;
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

void finish(peer_session_actor* self) {
  auto& st = self->state;
  for (auto& [id, s] : st.streams) {
    release_held(s);
    if (s.owner)
      self->send(s.owner, session_down_atom::value, st.close_reason);
  }
  while (!st.orphans.empty())
    release_orphans(self, st.orphans.begin()->first);
  st.streams.clear();
  if (st.agent) {
    st.agent->close();
    st.agent.reset();
  }
  st.link->drop();
  self->send(st.args.manager, failed_atom::value, st.args.session_id,
             st.close_reason, session_status(st).SerializeAsString());
  self->quit(caf::exit_reason::normal);
}

/// Both ends linger, but the controlling end decides: the controlled end
/// waits this much longer, so a stream the controlling end opens in the last
/// moment of its linger is not met by the controlled end closing at once.
constexpr auto linger_grace = std::chrono::seconds(5);

void start_linger(peer_session_actor* self) {
  auto& st = self->state;
  transition_to(self, session_state::lingering);
  ++st.linger_gen;
  auto linger = st.args.settings.idle_linger;
  if (!st.args.controlling)
    linger += linger_grace;
  st.linger_deadline = std::chrono::system_clock::now() + linger;
  log::debug(subject, "{} lingers for {} ms", st.args.peer, linger.count());
  self->delayed_send(self, linger, linger_atom::value, st.linger_gen);
}

void stream_gone(peer_session_actor* self, int64_t id) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end())
    return;
  auto& s = i->second;
  tell_owner(self, s, stream_closed_atom::value, id);
  if (s.handing_over_from) {
    auto& waiting = st.orphans[s.handing_over_from];
    for (auto& f : s.held)
      waiting.push_back(std::move(f));
  }
  st.streams.erase(i);
  if (st.streams.empty() && st.state == session_state::ready)
    start_linger(self);
}

void grant_credit(peer_session_actor* self, int64_t id, session_stream& s) {
  auto window = self->state.args.settings.owner_credit;
  auto outstanding = s.granted + s.unsent();
  if (s.owner && !s.pending_fin && outstanding <= window / 2) {
    auto more = window - outstanding;
    s.granted += more;
    tell_owner(self, s, stream_credit_atom::value, id, more);
  }
}

/// Moves owners' pending bytes into QUIC, round-robin, then writes packets.
void flush(peer_session_actor* self) {
  auto& st = self->state;
  if (!st.agent || !st.link->started())
    return;
  auto now = now_ns(self);
  // Feed streams fairly: each stream with pending data gets one turn. One
  // that QUIC took less from (its send buffer is full) is fed again on its
  // writable event.
  size_t turns = st.send_order.size();
  for (size_t t = 0; t < turns && !st.send_order.empty(); ++t) {
    auto id = st.send_order.front();
    st.send_order.pop_front();
    auto i = st.streams.find(id);
    if (i == st.streams.end())
      continue;
    auto& s = i->second;
    if (s.pending.empty() && !(s.pending_fin && !s.fin_queued))
      continue;
    auto fin = s.pending_fin;
    auto taken = st.link->write_stream(
      id, reinterpret_cast<const uint8_t*>(s.pending.data()) + s.pending_off,
      s.unsent(), fin);
    s.pending_off += taken;
    if (s.pending_off == s.pending.size()) {
      s.pending.clear();
      s.pending_off = 0;
    } else if (s.pending_off >= 256 * 1024
               && s.pending_off * 2 >= s.pending.size()) {
      s.pending.erase(0, s.pending_off); // at most once per half a buffer
      s.pending_off = 0;
    }
    if (s.pending.empty() && fin)
      s.fin_queued = true;
    grant_credit(self, id, s);
  }
  auto more = st.link->transmit(now);
  // A stream that can take more again (its writable event may have been
  // recorded on the ICE thread, which tells nobody else) is fed on the next
  // turn, as is the rest of a batch-limited write.
  if (process_events(self))
    more = true;
  if (more && !st.flush_scheduled && st.agent) {
    // Continue after other messages had their turn.
    st.flush_scheduled = true;
    self->send(self, quic_timer_atom::value, uint64_t{0});
  }
  if (!st.link->started() || st.link->io_driven())
    return; // the ICE thread runs QUIC's timers
  auto expiry = st.link->expiry();
  if (expiry != UINT64_MAX && expiry < st.armed_expiry) {
    st.armed_expiry = expiry;
    auto delay = expiry > now ? expiry - now : 0;
    self->delayed_send(self, std::chrono::nanoseconds(delay),
                       quic_timer_atom::value, ++st.timer_gen);
  }
}

void on_ready(peer_session_actor* self) {
  auto& st = self->state;
  auto& rt = st.remote_type;
  log::info(subject, "{} (session {}) is ready via {} {} -> {} {}",
            st.args.peer, st.args.session_id, st.local_type, st.local_addr, rt,
            st.remote_addr);
  self->send(st.args.manager, ready_atom::value, st.args.session_id);
  if (st.streams.empty()) {
    transition_to(self, session_state::ready);
    start_linger(self);
  } else {
    transition_to(self, session_state::ready);
  }
}

/// Hands received bytes to their owners: one message per stream per batch
/// of events, not one per QUIC packet, so the owner's mailbox and the
/// consumed-credit replies scale with batches, not packets.
struct data_batch {
  std::vector<int64_t> order;
  std::map<int64_t, std::pair<std::string, bool>> by_stream;

  void add(int64_t id, std::string&& bytes, bool fin) {
    auto [i, fresh] = by_stream.try_emplace(id);
    if (fresh) {
      order.push_back(id);
      i->second.first = std::move(bytes);
    } else {
      i->second.first += bytes;
    }
    i->second.second = i->second.second || fin;
  }
};

void deliver(peer_session_actor* self, data_batch& batch) {
  auto& st = self->state;
  for (auto id : batch.order) {
    auto& [bytes, fin] = batch.by_stream[id];
    auto i = st.streams.find(id);
    if (i != st.streams.end() && fin)
      i->second.peer_fin = true;
    if (i != st.streams.end() && i->second.owner)
      tell_owner(self, i->second, stream_data_atom::value, id, std::move(bytes),
                 fin);
    else if (!bytes.empty())
      st.link->consume(id, bytes.size()); // nobody reads it: don't stall
  }
  batch.order.clear();
  batch.by_stream.clear();
}

/// Handles what QUIC reported; true if a stream can take more data again.
bool process_events(peer_session_actor* self) {
  auto& st = self->state;
  bool writable = false;
  data_batch batch;
  for (;;) {
    auto evs = st.link->take_events();
    if (evs.empty())
      break;
    for (auto& ev : evs) {
      using E = quic_event;
      if (ev.k != E::data)
        deliver(self, batch); // keep data before the event it precedes
      switch (ev.k) {
        case E::handshake:
          if (st.state == session_state::handshaking)
            on_ready(self);
          break;
        case E::open: {
          if (!st.args.handler) {
            st.link->reset_stream(ev.id, 1);
            break;
          }
          auto h = st.args.handler(self, ev.id, st.args.peer);
          auto& s = st.streams[ev.id];
          s.owner = h;
          if (h)
            self->monitor(h);
          if (st.state == session_state::lingering) {
            ++st.linger_gen; // cancels the pending linger timer
            transition_to(self, session_state::ready);
          }
          grant_credit(self, ev.id, s);
          break;
        }
        case E::data:
          batch.add(ev.id, std::move(ev.bytes), ev.fin);
          break;
        case E::reset: {
          auto i = st.streams.find(ev.id);
          if (i != st.streams.end() && i->second.owner)
            tell_owner(self, i->second, stream_reset_atom::value, ev.id,
                       ev.code);
          break;
        }
        case E::closed_stream:
          stream_gone(self, ev.id);
          break;
        case E::writable:
          if (st.streams.count(ev.id)) {
            st.send_order.push_back(ev.id);
            writable = true;
          }
          break;
        case E::closed:
          if (st.state != session_state::closing
              && st.state != session_state::closed) {
            auto reason = ev.bytes;
            st.link->drop(); // nothing more to write
            close_session(self, reason, false);
            return false;
          }
          break;
      }
    }
  }
  deliver(self, batch);
  return writable;
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
    close_session(self, "could not create the QUIC connection", true);
    return;
  }
  flush(self);
}

} // namespace

caf::behavior peer_session(peer_session_actor* self, session_args args) {
  auto& st = self->state;
  st.args = std::move(args);
  st.agent = st.args.ice->create_agent(st.args.controlling, caf::actor{self},
                                       st.args.session_id);
  st.link = std::make_shared<quic_link>(self->address());
  st.link->attach_to(st.agent);
  self->set_down_handler([=](const caf::down_msg& dm) {
    // An old owner that ended before it said it forwarded everything.
    for (auto& [id, s] : self->state.streams)
      if (s.handing_over_from == dm.source)
        release_held(s);
    release_orphans(self, dm.source);
    // A stream owner ended without closing its stream: reset it. One that
    // sent its FIN first ended normally (a channel whose both directions
    // are done): its last bytes and the FIN still go out, and what the peer
    // still sends is consumed (deliver()).
    auto& st = self->state;
    for (auto& [id, s] : st.streams)
      if (s.owner && s.owner.address() == dm.source) {
        s.owner = nullptr;
        if (s.pending_fin) {
          // The peer still sending to nobody (a client that closed while
          // its answer came): ask it to stop; our bytes and FIN still go.
          if (!s.peer_fin && st.link->open()) {
            st.link->stop_sending(id, 3);
            flush(self);
          }
          break;
        }
        if (st.link->open()) {
          st.link->reset_stream(id, 2);
          flush(self);
        }
        break;
      }
  });
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

  return {
    // --- signaling from the peer, through the PEER MANAGER
    // ----------------------
    [=](signal_atom, const std::string& serialized) {
      auto& st = self->state;
      signal::Signal sig;
      if (!sig.ParseFromString(serialized) || !st.agent)
        return;
      switch (sig.payload_case()) {
        case signal::Signal::kAnswer:
          if (st.args.controlling)
            st.agent->set_remote_credentials(sig.answer().ufrag(),
                                             sig.answer().pwd());
          break;
        case signal::Signal::kCandidate:
          ++st.remote_candidates;
          st.agent->add_remote_candidate(sig.candidate());
          break;
        case signal::Signal::kEndOfCandidates:
          st.agent->remote_gathering_done();
          break;
        case signal::Signal::kBye:
          close_session(self, "the peer closed the session: " + sig.bye(),
                        false);
          break;
        default:
          break;
      }
    },
    // --- ICE events
    // -------------------------------------------------------------
    [=](ice_cand_atom, uint64_t, const std::string& cand) {
      ++self->state.local_candidates;
      signal::Signal sig;
      sig.set_candidate(cand);
      send_signal(self, std::move(sig));
    },
    [=](ice_gathered_atom, uint64_t) {
      signal::Signal sig;
      sig.set_end_of_candidates(true);
      send_signal(self, std::move(sig));
    },
    [=](ice_pair_atom, uint64_t, const std::string& ltype,
        const std::string& laddr, const std::string& rtype,
        const std::string& raddr) {
      auto& st = self->state;
      st.local_type = ltype;
      st.local_addr = laddr;
      st.remote_type = rtype;
      st.remote_addr = raddr;
    },
    [=](ice_state_atom, uint64_t, const std::string& state) {
      auto& st = self->state;
      if (state == "ready" || state == "connected") {
        if (st.state == session_state::connecting_ice)
          start_quic(self);
      } else if (state == "failed") {
        if (st.state == session_state::connecting_ice)
          close_session(self,
                        fmt::format("ICE failed: no candidate pair worked "
                                    "({} local, {} remote candidates)",
                                    st.local_candidates, st.remote_candidates),
                        true);
        else
          close_session(self, "ICE consent lost: the peer stopped answering",
                        false);
      }
    },
    [=](ice_data_atom, uint64_t, std::vector<std::string>& datagrams) {
      // Only from an agent that cannot drive the link itself.
      auto& st = self->state;
      st.link->receive(datagrams, now_ns(self));
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
    [=](linger_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.linger_gen || st.state != session_state::lingering)
        return; // a stream opened meanwhile: stale
      close_session(self,
                    fmt::format("idle for {} ms after its last stream",
                                st.args.settings.idle_linger.count()),
                    true);
    },
    [=](timeout_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.connect_gen)
        return;
      if (st.state == session_state::connecting_ice)
        close_session(self,
                      fmt::format("timeout: ICE found no path within {} ms",
                                  st.args.settings.connect_timeout.count()),
                      true);
      else if (st.state == session_state::handshaking)
        close_session(self,
                      fmt::format("timeout: no QUIC handshake within {} ms",
                                  st.args.settings.connect_timeout.count()),
                      true);
    },
    // --- streams
    // ----------------------------------------------------------------------
    [=](stream_open_atom, caf::actor owner) -> caf::result<int64_t> {
      auto& st = self->state;
      if (st.state != session_state::ready
          && st.state != session_state::lingering)
        return make_error(ec::unspecified,
                          fmt::format("session to {} is {}", st.args.peer,
                                      to_string(st.state)));
      auto id = st.link->open_stream();
      if (id < 0)
        return make_error(ec::unspecified,
                          "the peer allows no more streams right now");
      if (st.state == session_state::lingering) {
        ++st.linger_gen; // atomic cancel of the pending linger timer
        transition_to(self, session_state::ready);
      }
      auto& s = st.streams[id];
      s.owner = owner;
      self->monitor(owner);
      grant_credit(self, id, s);
      return id;
    },
    [=](stream_write_atom, int64_t id, std::string& bytes, bool fin) {
      auto& st = self->state;
      auto i = st.streams.find(id);
      if (i == st.streams.end() || i->second.pending_fin)
        return;
      auto& s = i->second;
      s.granted -= std::min<uint64_t>(s.granted, bytes.size());
      if (s.pending.empty())
        st.send_order.push_back(id);
      s.pending += bytes;
      s.pending_fin = fin;
      flush(self);
    },
    [=](stream_owner_atom, int64_t id, caf::actor new_owner) {
      // A STREAM SERVICE hands its stream to a CHANNEL: the old owner
      // hears the ack and forwards what reached it before, then says so;
      // until then what the session has for the channel waits, so a reset
      // or the end cannot overtake the forwarded bytes.
      auto& st = self->state;
      auto i = st.streams.find(id);
      auto old = caf::actor_cast<caf::actor>(self->current_sender());
      if (i == st.streams.end()) {
        self->send(new_owner, stream_closed_atom::value, id);
        if (old)
          self->send(old, stream_owner_atom::value, id);
        return;
      }
      auto& s = i->second;
      if (s.owner && s.owner != old)
        self->demonitor(s.owner); // (the old one stays watched until done)
      s.owner = new_owner;
      self->monitor(new_owner);
      if (old) {
        s.handing_over_from = old.address();
        self->send(old, stream_owner_atom::value, id);
      }
    },
    [=](stream_owner_atom, int64_t id) {
      // The old owner forwarded everything and is gone.
      auto& st = self->state;
      auto i = st.streams.find(id);
      if (i != st.streams.end()
          && i->second.handing_over_from == self->current_sender())
        release_held(i->second);
      release_orphans(self,
                      caf::actor_cast<caf::actor_addr>(self->current_sender()));
    },
    [=](stream_consumed_atom, int64_t id, uint64_t n) {
      auto& st = self->state;
      if (st.link->open()) {
        st.link->consume(id, n);
        flush(self);
      }
    },
    [=](stream_reset_atom, int64_t id, uint64_t code) {
      auto& st = self->state;
      if (st.link->open() && st.streams.count(id)) {
        st.streams[id].owner = nullptr; // it asked: nothing more to tell it
        st.link->reset_stream(id, code);
        flush(self);
      }
    },
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
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      close_session(self, reason, true);
    },
  };
}

} // namespace p2proxy
