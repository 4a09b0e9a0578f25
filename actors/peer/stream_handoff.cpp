#include "actors/peer/stream_handoff.hpp"

#include <caf/all.hpp>

#include "actors/actors.hpp"

namespace p2proxy::peer_session_parts {

namespace {

void run_all(std::vector<std::function<void()>>& held) {
  auto xs = std::move(held);
  held.clear();
  for (auto& f : xs)
    f();
}

/// The held messages of streams that ended meanwhile, waiting for `old`.
void release_orphans(peer_session_actor* self, const caf::actor_addr& old) {
  auto i = self->state.orphans.find(old);
  if (i == self->state.orphans.end())
    return;
  auto held = std::move(i->second);
  self->state.orphans.erase(i);
  run_all(held);
}

} // namespace

void release_held(session_stream& s) {
  s.handing_over_from = nullptr;
  run_all(s.held);
}

void keep_orphans(peer_session_state& st, session_stream& s) {
  if (!s.handing_over_from)
    return;
  auto& waiting = st.orphans[s.handing_over_from];
  for (auto& f : s.held)
    waiting.push_back(std::move(f));
}

void release_all(peer_session_actor* self) {
  auto& st = self->state;
  for (auto& [id, s] : st.streams)
    release_held(s);
  while (!st.orphans.empty())
    release_orphans(self, st.orphans.begin()->first);
}

void on_handoff_down(peer_session_actor* self, const caf::actor_addr& who) {
  for (auto& [id, s] : self->state.streams)
    if (s.handing_over_from == who)
      release_held(s);
  release_orphans(self, who);
}

caf::message_handler handoff_handlers(peer_session_actor* self) {
  return {
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
  };
}

} // namespace p2proxy::peer_session_parts
