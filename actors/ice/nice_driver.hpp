// The real ICE driver: libnice agents (RFC 5245, trickle, non-reliable, one
// stream with one component) on one GLib thread with a private GMainContext
// shared by every agent of the driver (ARCHITECTURE §3, §4).
//
// - Every nice_agent_* call runs on that thread except sending: the
//   ice_agent methods queue work for it, so they never block and libnice's
//   signals fire there; send() calls libnice's thread-safe non-blocking send
//   from the caller's thread (docs/design.md). On a selected pair that is
//   neither relayed nor TCP, send() writes runs of equal datagrams with UDP
//   GSO on a dup of that pair's socket instead, and the socket gets 4 MiB
//   buffers; libnice still reads it.
// - An attached datagram_sink (a session's QUIC link) gets the datagrams and
//   the wake_at() timer on that thread instead of the owner getting
//   ice_data_atom.
// - Signal handlers only anon_send events (ice_driver.hpp) to the agent's
//   owner; they reach the agent through shared_ptr closures.
// - close() sets the agent's closed flag under the lock every event is posted
//   under, so nothing is posted after it returns; the GLib thread then
//   detaches the receive callback, disconnects the signals and closes the
//   NiceAgent (TURN allocations are released asynchronously).
// - The local ufrag/pwd are drawn from the OS random source when the agent is
//   created and handed to libnice, so create_agent() does not wait for the
//   GLib thread.
// - shutdown() closes the agents left, waits (bounded) for libnice to release
//   them, quits the loop and joins the thread. It is idempotent and called by
//   the destructor; call it after the actors owning agents are gone.
// - Each agent gathers on the addresses [ice] interfaces/exclude choose
//   among the machine's at that moment (interface_filter.hpp), given to
//   libnice as its local addresses; the driver logs the choice at start.
// - The selected pair's keepalives are answered STUN checks
//   (keepalive-conncheck), not libnice's consent freshness, whose fixed
//   10 s expiry ended sessions in short stalls (docs/sessions.md).
// - libnice's own debug output is on only at log level trace.
#pragma once

#include <memory>

#include "actors/ice/ice_driver.hpp"

namespace p2proxy {

/// Starts the GLib thread; agents take STUN (the first server), TURN (each
/// server over UDP and TCP) and pacing from `settings`.
std::shared_ptr<ice_driver> make_nice_driver(const ice_settings& settings);

} // namespace p2proxy
