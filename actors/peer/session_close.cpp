// The PEER SESSION's linger and close handshake (session_close.hpp).
#include "actors/peer/session_close.hpp"

#include <algorithm>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/peer/peer_session_parts.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

const char* to_string(close_handshake::phase p) {
  switch (p) {
    case close_handshake::phase::none:
      return "none";
    case close_handshake::phase::proposing:
      return "proposing";
    case close_handshake::phase::accepted:
      return "accepted";
    case close_handshake::phase::closing:
      return "closing";
  }
  return "?";
}

namespace peer_session_parts {

namespace {

constexpr const char* subject = "peer_session";

/// A linger longer than a day is a misreading, not a setting.
constexpr auto max_linger = std::chrono::hours(24);

using phase = close_handshake::phase;

void send_control(peer_session_actor* self, const tunnel::SessionControl& m) {
  auto& hs = self->state.close;
  if (hs.control_id < 0)
    return;
  encode_frame(m.SerializeAsString(), hs.out);
  schedule_flush(self); // often called from inside process_events()
}

bool idle(const peer_session_state& st) {
  return st.state == session_state::lingering && st.streams.empty()
         && st.close.held.empty();
}

/// Arms the linger timer for what is left of the period that started at
/// close.linger_start (the timer of an earlier arming is ignored).
void arm_linger_rest(peer_session_actor* self) {
  auto& st = self->state;
  ++st.linger_gen;
  auto now = self->clock().now();
  auto end = st.close.linger_start + st.close.linger;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    end > now ? end - now : caf::timespan{0});
  st.linger_deadline = std::chrono::system_clock::now() + left;
  log::debug(subject, "{} lingers for {} ms", st.args.peer, left.count());
  self->delayed_send(self, end > now ? end - now : caf::timespan{0},
                     linger_atom::value, st.linger_gen);
}

/// Starts a fresh linger period.
void arm_linger(peer_session_actor* self) {
  self->state.close.linger_start = self->clock().now();
  arm_linger_rest(self);
}

/// The handshake is off without a stream: linger again if still idle.
void linger_again(peer_session_actor* self) {
  if (idle(self->state))
    arm_linger(self);
}

/// Opens what waited for the handshake, in order.
void release_held(peer_session_actor* self) {
  auto held = std::move(self->state.close.held);
  self->state.close.held.clear();
  for (auto& h : held) {
    auto id = open_owned_stream(self, h.owner);
    if (id)
      h.rp.deliver(*id);
    else
      h.rp.deliver(id.error());
  }
}

void on_proposal(peer_session_actor* self, uint64_t seq) {
  auto& st = self->state;
  auto& hs = st.close;
  if (hs.ph == phase::proposing) {
    if (st.args.controlling) {
      // Crossing proposals: ours stands, the peer answers it.
      tunnel::SessionControl m;
      auto* a = m.mutable_close_answer();
      a->set_seq(seq);
      a->set_text("crossing proposals: the opener's stands");
      send_control(self, m);
      return;
    }
    log::debug(subject, "{} drops its close proposal {} for the opener's",
               st.args.peer, hs.my_seq);
    hs.ph = phase::none;
  }
  tunnel::SessionControl m;
  auto* a = m.mutable_close_answer();
  a->set_seq(seq);
  if (idle(st)) {
    hs.ph = phase::accepted;
    hs.peer_seq = seq;
    ++hs.accepts;
    a->set_accept(true);
    log::debug(subject, "{} accepts close proposal {}", st.args.peer, seq);
  } else {
    ++hs.refusals;
    a->set_text(fmt::format("{} streams open, {} waiting", st.streams.size(),
                            hs.held.size()));
    log::debug(subject, "{} rejects close proposal {}: {}", st.args.peer, seq,
               a->text());
  }
  send_control(self, m);
  if (hs.ph == phase::accepted && !a->accept()) {
    // A newer proposal replaced the one we accepted: that one is off, and
    // this one is refused, so what we held opens here.
    hs.ph = phase::none;
    release_held(self);
  }
}

void on_answer(peer_session_actor* self, const tunnel::CloseAnswer& a) {
  auto& st = self->state;
  auto& hs = st.close;
  if (hs.ph != phase::proposing || a.seq() != hs.my_seq) {
    if (a.accept()) {
      // Called off by a stream meanwhile: the peer holds its opens for it.
      tunnel::SessionControl m;
      m.set_close_cancel(a.seq());
      send_control(self, m);
    }
    return;
  }
  hs.ph = phase::none;
  if (!a.accept()) {
    ++hs.rejects;
    log::debug(subject, "{} rejected close proposal {}: {}", st.args.peer,
               a.seq(), a.text());
    linger_again(self);
    return;
  }
  // Closed after the events at hand (close_session must not run inside
  // process_events()); opens meanwhile are held and fail with the session.
  hs.ph = phase::closing;
  self->send(self, stop_atom::value, error_text(agreed_close_error(st)));
}

void on_cancel(peer_session_actor* self, uint64_t seq) {
  auto& hs = self->state.close;
  if (hs.ph != phase::accepted || seq != hs.peer_seq)
    return;
  ++hs.cancels;
  hs.ph = phase::none;
  release_held(self);
  linger_again(self);
}

void on_hello(peer_session_actor* self, const tunnel::SessionHello& h) {
  auto& st = self->state;
  if (st.args.controlling)
    return; // the opener's settings are its own
  auto ms = std::chrono::milliseconds(std::min<uint64_t>(
    h.linger_ms(),
    static_cast<uint64_t>(std::chrono::milliseconds(max_linger).count())));
  st.close.linger = ms;
  st.close.hello_seen = true;
  log::debug(subject, "{} uses the opener's linger of {} ms", st.args.peer,
             ms.count());
  if (st.state == session_state::lingering && st.close.ph == phase::none)
    arm_linger_rest(self); // the period started with our own value
}

void on_control(peer_session_actor* self, const std::string& frame) {
  tunnel::SessionControl m;
  if (!m.ParseFromString(frame)) {
    log::warn(subject, "{} sent a malformed SessionControl (ignored)",
              self->state.args.peer);
    return;
  }
  switch (m.msg_case()) {
    case tunnel::SessionControl::kHello:
      on_hello(self, m.hello());
      break;
    case tunnel::SessionControl::kClosePropose:
      on_proposal(self, m.close_propose().seq());
      break;
    case tunnel::SessionControl::kCloseAnswer:
      on_answer(self, m.close_answer());
      break;
    case tunnel::SessionControl::kCloseCancel:
      on_cancel(self, m.close_cancel());
      break;
    default:
      break; // goodbye and later messages: nothing to do here
  }
}

} // namespace

void start_linger(peer_session_actor* self) {
  transition_to(self, session_state::lingering);
  arm_linger(self);
}

void open_control_stream(peer_session_actor* self) {
  auto& st = self->state;
  if (!st.close.hello_seen)
    st.close.linger = st.args.settings.idle_linger;
  if (!st.args.controlling || st.close.control_id >= 0)
    return;
  auto id = st.link->open_stream();
  if (id < 0) {
    log::warn(subject,
              "{} has no control stream: its linger closes "
              "without a handshake",
              st.args.peer);
    return;
  }
  st.close.control_id = id;
  tunnel::SessionControl m;
  m.mutable_hello()->set_linger_ms(
    static_cast<uint64_t>(st.close.linger.count()));
  send_control(self, m);
}

bool on_control_open(peer_session_actor* self, int64_t id) {
  auto& st = self->state;
  // The opener's first stream (client-initiated bidirectional, id 0).
  if (st.args.controlling || id != 0 || st.close.control_id >= 0)
    return false;
  st.close.control_id = id;
  return true;
}

bool on_control_data(peer_session_actor* self, int64_t id,
                     const std::string& bytes) {
  auto& st = self->state;
  if (id != st.close.control_id || id < 0)
    return false;
  if (!bytes.empty() && st.link->open())
    st.link->consume(id, bytes.size());
  std::vector<std::string> frames;
  if (st.close.in.feed(bytes.data(), bytes.size(), frames)
      == frame_decoder::status::too_large) {
    self->send(self, stop_atom::value,
               std::string{"the peer's control stream is malformed"});
    return true;
  }
  for (auto& f : frames) {
    if (st.close.ph == phase::closing)
      break;
    on_control(self, f);
  }
  return true;
}

void write_control(peer_session_actor* self) {
  auto& hs = self->state.close;
  if (hs.out.empty() || hs.control_id < 0)
    return;
  auto taken = self->state.link->write_stream(
    hs.control_id, reinterpret_cast<const uint8_t*>(hs.out.data()),
    hs.out.size(), false);
  hs.out.erase(0, taken);
}

void on_linger_timer(peer_session_actor* self, uint64_t gen) {
  auto& st = self->state;
  if (gen != st.linger_gen || st.state != session_state::lingering)
    return; // a stream opened meanwhile: stale
  auto& hs = st.close;
  if (hs.ph != phase::none)
    return; // a handshake is on; its end lingers again if need be
  if (hs.control_id < 0) {
    auto text
      = fmt::format("idle for {} ms after its last stream", hs.linger.count());
    close_session(self, make_error(ec::unspecified, std::move(text)), true);
    return;
  }
  hs.ph = phase::proposing;
  hs.my_seq = ++hs.next_seq;
  ++hs.proposals;
  log::debug(subject, "{} proposes to close (proposal {})", st.args.peer,
             hs.my_seq);
  tunnel::SessionControl m;
  m.mutable_close_propose()->set_seq(hs.my_seq);
  send_control(self, m);
}

void linger_stream_opened(peer_session_actor* self) {
  auto& st = self->state;
  if (st.state == session_state::lingering) {
    ++st.linger_gen; // atomic cancel of the pending linger timer
    transition_to(self, session_state::ready);
  }
  auto& hs = st.close;
  if (hs.ph == phase::proposing) {
    log::debug(subject, "{}: a stream calls close proposal {} off",
               st.args.peer, hs.my_seq);
    hs.ph = phase::none;
  } else if (hs.ph == phase::accepted) {
    // Only the proposer's stream gets here (ours are held): it called its
    // proposal off.
    hs.ph = phase::none;
    release_held(self);
  }
}

bool holds_opens(const peer_session_state& st) {
  return st.close.ph == phase::accepted || st.close.ph == phase::closing;
}

caf::typed_response_promise<int64_t> hold_open(peer_session_actor* self,
                                               const caf::actor& owner) {
  auto rp = self->make_response_promise<int64_t>();
  self->state.close.held.push_back({rp, owner});
  log::debug(subject, "{} holds a stream open until the close handshake ends",
             self->state.args.peer);
  return rp;
}

void end_close_handshake(peer_session_actor* self) {
  auto& st = self->state;
  auto held = std::move(st.close.held);
  st.close.held.clear();
  for (auto& h : held)
    h.rp.deliver(
      make_error(ec::session_lost, fmt::format("the session to {} closed ({}); "
                                               "open a new one",
                                               st.args.peer, st.close_reason)));
}

bool close_agreed(const peer_session_state& st) {
  return st.close.ph == phase::accepted || st.close.ph == phase::closing;
}

caf::error agreed_close_error(const peer_session_state& st) {
  return make_error(
    ec::unspecified,
    fmt::format("idle for {} ms after its last stream (both ends agreed)",
                st.close.linger.count()));
}

} // namespace peer_session_parts

} // namespace p2proxy
