// Handing a peer-opened stream from its first owner (the STREAM SERVICE) to
// a CHANNEL (stream_owner_atom). The old owner hears the ack, forwards what
// reached it before, then says so; until then what the session has for the
// new owner is held (session_stream::held), and held messages of a stream
// that ended meanwhile wait in peer_session_state::orphans for the old
// owner's word. All of it lives here so it can go as one piece.
#pragma once

#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/message_handler.hpp>

#include "actors/peer/peer_session.hpp"

namespace p2proxy::peer_session_parts {

/// Sends to a stream's owner, or holds it while the stream is being handed
/// to a new owner.
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

/// The old owner has forwarded what reached it: what waited goes out.
void release_held(session_stream& s);

/// Stream `s` ends during its handoff: its held messages wait for the old
/// owner as orphans.
void keep_orphans(peer_session_state& st, session_stream& s);

/// The session ends: everything held goes out now.
void release_all(peer_session_actor* self);

/// `who` ended, perhaps an old owner before it said it forwarded everything.
void on_handoff_down(peer_session_actor* self, const caf::actor_addr& who);

/// (stream_owner_atom, id, new_owner) and (stream_owner_atom, id).
caf::message_handler handoff_handlers(peer_session_actor* self);

} // namespace p2proxy::peer_session_parts
