// The PEER SESSION's linger and its close handshake (docs/sessions.md):
// both ends linger for the session's linger (the opener's, carried in the
// SessionHello on the control stream), and the session closes only when
// both agree that it has no stream.
//
// - The control stream is the first stream the opener (QUIC client) opens,
//   id 0, right after the handshake; it carries length-prefixed
//   tunnel::SessionControl messages and is not counted as a stream.
// - The linger expires with no stream: the side whose timer fired proposes
//   (CloseProposal, seq) and waits (phase proposing).
// - A side that gets a proposal accepts (CloseAnswer accept) only when it is
//   lingering with no stream and no local open waiting; it then holds every
//   local open (phase accepted) until the proposer closes the session (the
//   held opens fail with ec::session_lost, and their owners open a new
//   session) or calls its proposal off (they open here). Otherwise it
//   rejects, and the proposer lingers again.
// - A stream opened by either side while proposing or accepted calls the
//   handshake off: the proposer ignores a later accept (and answers it with
//   close_cancel), the acceptor that sees the proposer's stream stops
//   holding its opens.
// - The proposer closes (CONNECTION_CLOSE) only on an accept of its current
//   proposal: by then neither side has a stream and neither can open one on
//   this session, so no stream is lost to the close.
// - Crossing proposals (both timers fired at once): the opener's proposal
//   stands; the opener rejects the peer's, the peer drops its own and
//   answers the opener's.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_clock.hpp>
#include <caf/error.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/common/frame_codec.hpp"

namespace p2proxy {

/// The close handshake's part of the session state.
struct close_handshake {
  /// closing: both agreed, the close runs next (opens are held).
  enum class phase { none, proposing, accepted, closing };
  phase ph = phase::none;
  int64_t control_id = -1; // the control stream, once open
  frame_decoder in{4096};  // its received messages
  std::string out;         // control bytes QUIC has not taken yet
  std::chrono::milliseconds linger{30000};   // the session's (the opener's)
  caf::actor_clock::time_point linger_start; // of the current period
  bool hello_seen = false; // the opener's SessionHello arrived
  uint64_t next_seq = 0;
  uint64_t my_seq = 0;   // proposing: our proposal
  uint64_t peer_seq = 0; // accepted: the peer's proposal we accepted
  struct held_open {
    caf::typed_response_promise<int64_t> rp;
    caf::actor owner;
  };
  std::vector<held_open> held; // local opens while accepted
  // For the status and the tests.
  // proposals made, accepts and refusals given, rejects and cancels heard.
  uint64_t proposals = 0, accepts = 0, refusals = 0, rejects = 0, cancels = 0;
};

const char* to_string(close_handshake::phase p);

} // namespace p2proxy
