// UDP LISTENER: a [[listen]] entry with protocol "udp". One UDP socket; each
// client address:port that sends to it gets its own flow: a stream to the
// node exporting `resource` (opened, authorized and answered exactly like a
// TCP channel's: StreamOpen{protocol "udp"}, the export's allow list, a
// StreamOpenResult), whose QUIC DATAGRAM flow then carries the client's
// datagrams both ways.
//
// Flow states:
//
//   (first datagram) ──▶ opening ──StreamOpenResult OK──▶ open
//                          │                               │
//                          │ refused, look-up or           │ idle for udp_idle,
//                          │ session failed                │ stream or session
//                          ▼                               │ ended, stop
//                        refused ──idle for udp_idle──▶ (gone) ◀┘
//
// - opening: the client's datagrams wait (at most 32, 64 KiB; more are
//   dropped, counted early_overflow) and go out once the flow is open.
// - refused: kept until idle so a client that keeps sending does not make
//   the node open stream after stream; its datagrams are counted, dropped.
// - At most max_flows flows; a datagram from a new client beyond that is
//   dropped (flows_full).
// The listener is the stream and flow owner of all its flows; it answers
// listener_actor's messages like the TCP LISTENER does.
#pragma once

#include <cstdint>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/listener/listener.hpp"

namespace p2proxy {

caf::expected<listener_actor> start_udp_listener(caf::actor_system& sys,
                                                 const listener_config& cfg,
                                                 const caf::actor& supervisor,
                                                 uint16_t& bound_port);

} // namespace p2proxy
