// The PEER SESSION's stream table: owners' bytes into QUIC (fairly, within
// the credit each owner was granted), QUIC's events out to the owners.
#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/peer/peer_session_parts.hpp"

namespace p2proxy::peer_session_parts {

namespace {

/// Sends to a stream's owner, if it still has one.
template <class... Ts>
void tell_owner(peer_session_actor* self, session_stream& s, Ts&&... xs) {
  if (s.owner)
    self->send(s.owner, std::forward<Ts>(xs)...);
}

void stream_gone(peer_session_actor* self, int64_t id) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end())
    return;
  auto& s = i->second;
  tell_owner(self, s, stream_closed_atom::value, id);
  st.streams.erase(i);
  if (st.streams.empty() && st.state == session_state::ready)
    start_linger(self);
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
    if (on_control_data(self, id, bytes))
      continue;
    if (i != st.streams.end() && fin)
      i->second.peer_fin = true;
    if (i != st.streams.end() && i->second.opening)
      read_preamble(self, id, i->second, bytes, fin);
    else if (i != st.streams.end() && i->second.owner)
      tell_owner(self, i->second, stream_data_atom::value, id, std::move(bytes),
                 fin);
    else if (!bytes.empty())
      st.link->consume(id, bytes.size()); // nobody reads it: don't stall
  }
  batch.order.clear();
  batch.by_stream.clear();
}

} // namespace

void grant_credit(peer_session_actor* self, int64_t id, session_stream& s) {
  auto window = self->state.args.settings.owner_credit;
  auto outstanding = s.granted + s.unsent();
  if (s.owner && !s.pending_fin && outstanding <= window / 2) {
    auto more = window - outstanding;
    s.granted += more;
    tell_owner(self, s, stream_credit_atom::value, id, more);
  }
}

void schedule_flush(peer_session_actor* self) {
  auto& st = self->state;
  if (st.flush_scheduled || !st.agent)
    return;
  st.flush_scheduled = true;
  self->send(self, quic_timer_atom::value, uint64_t{0});
}

void flush(peer_session_actor* self) {
  auto& st = self->state;
  if (!st.agent || !st.link->started())
    return;
  auto now = now_ns(self);
  // Feed streams fairly: each stream with pending data gets one turn. One
  // that QUIC took less from (its send buffer is full) is fed again on its
  // writable event.
  write_control(self);
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
  watch_quic_path(self);
  if (more)
    schedule_flush(self); // continue after other messages had their turn
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

bool process_events(peer_session_actor* self) {
  auto& st = self->state;
  bool writable = false;
  data_batch batch;
  datagram_batch datagrams;
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
        case E::open:
          if (!on_control_open(self, ev.id))
            on_peer_stream(self, ev.id);
          break;
        case E::data:
          batch.add(ev.id, std::move(ev.bytes), ev.fin);
          break;
        case E::reset: {
          auto i = st.streams.find(ev.id);
          if (i != st.streams.end() && i->second.opening)
            on_opening_reset(self, ev.id, i->second);
          else if (i != st.streams.end() && i->second.owner)
            tell_owner(self, i->second, stream_reset_atom::value, ev.id,
                       ev.code);
          break;
        }
        case E::closed_stream:
          stream_gone(self, ev.id);
          break;
        case E::writable:
          if (st.streams.count(ev.id) || ev.id == st.close.control_id) {
            st.send_order.push_back(ev.id);
            writable = true;
          }
          break;
        case E::datagram:
          route_datagram(self, ev.id, std::move(ev.bytes), datagrams);
          break;
        case E::closed:
          if (st.state != session_state::closing
              && st.state != session_state::closed) {
            auto why = close_agreed(st)
                         ? agreed_close_error(st)
                         : make_error(code_of_text_reason(ev.bytes), ev.bytes);
            st.link->drop(); // nothing more to write
            close_session(self, why, false);
            return false;
          }
          break;
      }
    }
  }
  deliver(self, batch);
  deliver_datagrams(self, datagrams);
  return writable;
}

void end_streams(peer_session_actor* self) {
  auto& st = self->state;
  for (auto& [id, s] : st.streams)
    if (s.owner)
      self->send(s.owner, session_down_atom::value, st.close_error);
  st.streams.clear();
}

void on_owner_down(peer_session_actor* self, const caf::actor_addr& who) {
  // A stream owner ended without closing its stream: reset it. One that
  // sent its FIN first ended normally (a channel whose both directions
  // are done): its last bytes and the FIN still go out, and what the peer
  // still sends is consumed (deliver()).
  auto& st = self->state;
  for (auto& [id, s] : st.streams)
    if (s.owner && s.owner.address() == who) {
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
}

caf::expected<int64_t> open_owned_stream(peer_session_actor* self,
                                         const caf::actor& owner) {
  auto& st = self->state;
  if (st.state != session_state::ready && st.state != session_state::lingering)
    return make_error(
      ec::session_lost,
      fmt::format("session to {} is {}", st.args.peer, to_string(st.state)));
  auto id = st.link->open_stream();
  if (id < 0)
    return make_error(ec::unspecified,
                      "the peer allows no more streams right now");
  linger_stream_opened(self);
  auto& s = st.streams[id];
  s.owner = caf::actor_cast<stream_owner_actor>(owner);
  self->monitor(owner);
  grant_credit(self, id, s);
  return id;
}

caf::message_handler stream_handlers(peer_session_actor* self) {
  return {
    [=](stream_open_atom, const caf::actor& owner) -> caf::result<int64_t> {
      if (holds_opens(self->state))
        return hold_open(self, owner); // this side accepted a close
      return open_owned_stream(self, owner);
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
  };
}

} // namespace p2proxy::peer_session_parts
