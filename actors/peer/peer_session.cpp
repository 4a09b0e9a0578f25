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
/// Datagrams written per flush before yielding to other messages.
constexpr size_t max_datagrams_per_flush = 256;

} // namespace

const char* to_string(session_state s) {
  switch (s) {
    case session_state::connecting_ice: return "connecting-ice";
    case session_state::handshaking: return "handshaking";
    case session_state::ready: return "ready";
    case session_state::lingering: return "lingering";
    case session_state::closing: return "closing";
    case session_state::closed: return "closed";
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

// --- quic_events: record only ---------------------------------------------------

void peer_session_state::on_handshake_done() {
  events.push_back({event::handshake});
}
void peer_session_state::on_stream_open(int64_t id) {
  events.push_back({event::open, id});
}
void peer_session_state::on_stream_data(int64_t id, const uint8_t* data,
                                        size_t size, bool fin) {
  event ev{event::data, id};
  ev.bytes.assign(reinterpret_cast<const char*>(data), size);
  ev.fin = fin;
  events.push_back(std::move(ev));
}
void peer_session_state::on_stream_reset(int64_t id, uint64_t app_error) {
  event ev{event::reset, id};
  ev.code = app_error;
  events.push_back(std::move(ev));
}
void peer_session_state::on_stream_closed(int64_t id) {
  events.push_back({event::closed_stream, id});
}
void peer_session_state::on_stream_writable(int64_t id) {
  events.push_back({event::writable, id});
}
void peer_session_state::on_closed(const std::string& reason) {
  event ev{event::closed};
  ev.bytes = reason;
  events.push_back(std::move(ev));
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
  if (st.quic || st.last_stats) {
    auto q = st.quic ? st.quic->stats() : *st.last_stats;
    s.set_rtt_ms(q.smoothed_rtt.count() / 1000.0);
    s.set_bytes_sent(q.bytes_sent);
    s.set_bytes_received(q.bytes_received);
    s.set_packets_sent(q.packets_sent);
    s.set_packets_received(q.packets_received);
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
  self->request(st.args.link, std::chrono::seconds(10), signal_atom::value,
                sig.SerializeAsString())
    .then([] {},
          [peer](caf::error& err) {
            log::debug(subject, "could not signal {}: {}", peer,
                       error_text(err));
          });
}

void finish(peer_session_actor* self);
void flush(peer_session_actor* self);
void process_events(peer_session_actor* self);

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
  if (st.quic && !st.quic->closed()) {
    st.quic->close(reason);
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
  for (auto& [id, s] : st.streams)
    if (s.owner)
      self->send(s.owner, session_down_atom::value, st.close_reason);
  st.streams.clear();
  if (st.agent) {
    st.agent->close();
    st.agent.reset();
  }
  self->send(st.args.manager, failed_atom::value, st.args.session_id,
             st.close_reason, session_status(st).SerializeAsString());
  self->quit(caf::exit_reason::normal);
}

/// Both ends linger, but the controlling end decides: the controlled end
/// waits this much longer, so a stream the controlling end opens in the last
/// moment of its linger is not met by the controlled end closing at once.
constexpr auto linger_grace = std::chrono::seconds(5);
/// QUIC datagrams kept while this side's ICE has not reported the path yet.
constexpr size_t max_early_datagrams = 16;

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
  if (i->second.owner)
    self->send(i->second.owner, stream_closed_atom::value, id);
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
    self->send(s.owner, stream_credit_atom::value, id, more);
  }
}

/// Moves owners' pending bytes into QUIC, round-robin, then writes packets.
void flush(peer_session_actor* self) {
  auto& st = self->state;
  if (!st.quic || !st.agent)
    return;
  auto now = now_ns(self);
  // Feed streams fairly: each stream with pending data gets one turn.
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
    auto taken = st.quic->write_stream(
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
    else if (!s.pending.empty())
      st.send_order.push_back(id); // more next time
    grant_credit(self, id, s);
  }
  std::vector<std::string> out;
  st.quic->write(now, out, max_datagrams_per_flush);
  if (!out.empty()) {
    st.datagrams_out += out.size();
    st.agent->send(std::move(out));
    // More may be ready: continue after other messages had their turn.
    if (!st.flush_scheduled) {
      st.flush_scheduled = true;
      self->send(self, quic_timer_atom::value, uint64_t{0});
    }
  }
  process_events(self);
  if (!st.quic)
    return;
  auto expiry = st.quic->expiry();
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
            st.args.peer, st.args.session_id, st.local_type, st.local_addr,
            rt, st.remote_addr);
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
      self->send(i->second.owner, stream_data_atom::value, id,
                 std::move(bytes), fin);
    else if (st.quic && !bytes.empty())
      st.quic->consume(id, bytes.size()); // nobody reads it: don't stall
  }
  batch.order.clear();
  batch.by_stream.clear();
}

void process_events(peer_session_actor* self) {
  auto& st = self->state;
  data_batch batch;
  while (!st.events.empty()) {
    auto evs = std::move(st.events);
    st.events.clear();
    for (auto& ev : evs) {
      using E = peer_session_state::event;
      if (ev.k != E::data)
        deliver(self, batch); // keep data before the event it precedes
      switch (ev.k) {
        case E::handshake:
          if (st.state == session_state::handshaking)
            on_ready(self);
          break;
        case E::open: {
          if (!st.args.handler) {
            st.quic->reset_stream(ev.id, 1);
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
            self->send(i->second.owner, stream_reset_atom::value, ev.id,
                       ev.code);
          break;
        }
        case E::closed_stream:
          stream_gone(self, ev.id);
          break;
        case E::writable:
          if (st.streams.count(ev.id))
            st.send_order.push_back(ev.id);
          break;
        case E::closed:
          if (st.state != session_state::closing
              && st.state != session_state::closed) {
            auto reason = ev.bytes;
            st.last_stats = st.quic->stats();
            st.quic.reset(); // nothing more to write
            close_session(self, reason, false);
            return;
          }
          break;
      }
    }
  }
  deliver(self, batch);
}

void start_quic(peer_session_actor* self) {
  auto& st = self->state;
  transition_to(self, session_state::handshaking);
  auto now = now_ns(self);
  if (st.args.controlling)
    st.quic = quic_connection::make_client(*st.args.me, st.args.peer,
                                           st.args.settings.quic, st, now);
  else
    st.quic = quic_connection::make_server(*st.args.me, st.args.peer,
                                           st.args.settings.quic, st, now);
  if (!st.quic) {
    close_session(self, "could not create the QUIC connection", true);
    return;
  }
  auto early = std::move(st.early);
  st.early.clear();
  for (auto& d : early) {
    ++st.datagrams_in;
    st.quic->receive(reinterpret_cast<const uint8_t*>(d.data()), d.size(),
                     now);
    if (!st.quic)
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
  self->set_down_handler([=](const caf::down_msg& dm) {
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
          if (!s.peer_fin && st.quic && !st.quic->closed()) {
            st.quic->stop_sending(id, 3);
            flush(self);
          }
          break;
        }
        if (st.quic && !st.quic->closed()) {
          st.quic->reset_stream(id, 2);
          flush(self);
        }
        break;
      }
  });
  {
    signal::Signal sig;
    auto desc = st.args.controlling ? sig.mutable_offer()
                                    : sig.mutable_answer();
    desc->set_ufrag(st.agent->local_ufrag());
    desc->set_pwd(st.agent->local_pwd());
    send_signal(self, std::move(sig));
  }
  if (!st.args.controlling)
    st.agent->set_remote_credentials(st.args.remote_ufrag, st.args.remote_pwd);
  st.agent->gather();
  self->delayed_send(self, st.args.settings.connect_timeout, timeout_atom::value,
                     ++st.connect_gen);
  log::debug(subject, "{} (session {}) starts as {}", st.args.peer,
             st.args.session_id,
             st.args.controlling ? "controlling" : "controlled");

  return {
    // --- signaling from the peer, through the PEER MANAGER ----------------------
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
    // --- ICE events -------------------------------------------------------------
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
      auto& st = self->state;
      if (!st.quic) {
        // The peer's ICE may report the path a moment before ours, so its
        // first QUIC packets can come before QUIC starts here: keep a few
        // for start_quic() (dropping them cost a 1 s retransmission).
        if (st.state == session_state::connecting_ice)
          for (auto& d : datagrams)
            if (st.early.size() < max_early_datagrams)
              st.early.push_back(std::move(d));
        return;
      }
      st.datagrams_in += datagrams.size();
      auto now = now_ns(self);
      for (auto& d : datagrams) {
        st.quic->receive(reinterpret_cast<const uint8_t*>(d.data()), d.size(),
                         now);
        if (!st.quic)
          return;
      }
      flush(self);
    },
    // --- timers ---------------------------------------------------------------------
    [=](quic_timer_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == 0) { // a continuation of flush, not a timer
        st.flush_scheduled = false;
        flush(self);
        return;
      }
      if (gen != st.timer_gen || !st.quic)
        return;
      st.armed_expiry = UINT64_MAX;
      st.quic->on_expiry(now_ns(self));
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
    // --- streams ----------------------------------------------------------------------
    [=](stream_open_atom, caf::actor owner) -> caf::result<int64_t> {
      auto& st = self->state;
      if (st.state != session_state::ready
          && st.state != session_state::lingering)
        return make_error(ec::unspecified,
                          fmt::format("session to {} is {}", st.args.peer,
                                      to_string(st.state)));
      auto id = st.quic->open_stream();
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
      // A STREAM SERVICE hands its stream to a CHANNEL: from now on the
      // channel gets the stream's messages; the old owner hears the ack and
      // forwards what reached it before.
      auto& st = self->state;
      auto i = st.streams.find(id);
      auto old = caf::actor_cast<caf::actor>(self->current_sender());
      if (i == st.streams.end()) {
        self->send(new_owner, stream_closed_atom::value, id);
        if (old)
          self->send(old, stream_owner_atom::value, id);
        return;
      }
      if (i->second.owner)
        self->demonitor(i->second.owner);
      i->second.owner = new_owner;
      self->monitor(new_owner);
      if (old)
        self->send(old, stream_owner_atom::value, id);
    },
    [=](stream_consumed_atom, int64_t id, uint64_t n) {
      auto& st = self->state;
      if (st.quic && !st.quic->closed()) {
        st.quic->consume(id, n);
        flush(self);
      }
    },
    [=](stream_reset_atom, int64_t id, uint64_t code) {
      auto& st = self->state;
      if (st.quic && !st.quic->closed() && st.streams.count(id)) {
        st.streams[id].owner = nullptr; // it asked: nothing more to tell it
        st.quic->reset_stream(id, code);
        flush(self);
      }
    },
    // --- status and close ----------------------------------------------------------------
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
          "pending={} granted={} fin={} unacked={}", s.unsent(),
          s.granted, s.pending_fin, self->state.quic ? self->state.quic->unacked(id) : 0);
      (*as.mutable_fields())["send_order"]
        = std::to_string(self->state.send_order.size());
      if (self->state.quic)
        (*as.mutable_fields())["expiry_in_ms"] = std::to_string(
          (static_cast<int64_t>(self->state.quic->expiry())
           - static_cast<int64_t>(now_ns(self))) / 1000000);
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      close_session(self, reason, true);
    },
  };
}

} // namespace p2proxy
