// The PEER SESSION's side of a stream the peer opened, until the stream has
// an owner: the session reads the StreamOpen preamble itself (one bounded
// preamble_reader per stream, its bytes consumed at once), then calls the
// handler factory once with the parsed StreamOpen and the bytes after it.
// Whatever goes wrong before that is answered here with a StreamOpenResult
// error and a FIN, as the owner would have.
#include <chrono>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/peer/peer_session_parts.hpp"

namespace p2proxy::peer_session_parts {

namespace {

constexpr const char* subject = "peer_session";

using open_code = tunnel::StreamOpenResult::Code;

open_code open_code_of(const caf::error& err) {
  if (is_error(err, ec::unknown_resource))
    return tunnel::StreamOpenResult::UNKNOWN_RESOURCE;
  if (is_error(err, ec::denied))
    return tunnel::StreamOpenResult::DENIED;
  if (is_error(err, ec::target_refused))
    return tunnel::StreamOpenResult::TARGET_REFUSED;
  if (is_error(err, ec::target_unreachable))
    return tunnel::StreamOpenResult::TARGET_UNREACHABLE;
  return tunnel::StreamOpenResult::BAD_REQUEST;
}

/// Answers the stream with `code` and a FIN, as its owner would have; it
/// gets no owner, so what the peer still sends on it is consumed
/// (deliver()) until the stream closes.
void refuse(peer_session_actor* self, int64_t id, session_stream& s,
            open_code code, const std::string& text) {
  auto& st = self->state;
  s.opening.reset();
  log::info(subject, "refuses a stream from {}: {} (stream {}, {})",
            st.args.peer, text, id, tunnel::StreamOpenResult::Code_Name(code));
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  if (s.pending.empty())
    st.send_order.push_back(id);
  s.pending += encode_frame(res.SerializeAsString());
  s.pending_fin = true;
  schedule_flush(self); // (called from inside process_events)
}

void refuse(peer_session_actor* self, int64_t id, session_stream& s,
            const std::string& text) {
  refuse(self, id, s, tunnel::StreamOpenResult::BAD_REQUEST, text);
}

} // namespace

void on_peer_stream(peer_session_actor* self, int64_t id) {
  auto& st = self->state;
  if (!st.args.handler) {
    st.link->reset_stream(id, 1);
    return;
  }
  auto& s = st.streams[id];
  s.opening.emplace(st.args.settings.max_preamble);
  self->delayed_send(self, st.args.settings.preamble_timeout,
                     preamble_timer_atom::value, id);
  linger_stream_opened(self);
}

void read_preamble(peer_session_actor* self, int64_t id, session_stream& s,
                   std::string& bytes, bool fin) {
  auto& st = self->state;
  auto& reader = *s.opening;
  auto status = reader.feed(bytes);
  // The preamble is bounded: its credit goes back at once.
  if (reader.taken() > 0)
    st.link->consume(id, reader.taken());
  switch (status) {
    case preamble_reader::status::need_more:
      if (fin)
        refuse(self, id, s,
               reader.buffered() < 4 ? "stream ended before its StreamOpen"
                                     : "stream ended inside its StreamOpen");
      return;
    case preamble_reader::status::oversize:
      refuse(self, id, s,
             fmt::format("StreamOpen of {} bytes exceeds the {}-byte limit",
                         reader.announced(), st.args.settings.max_preamble));
      return;
    case preamble_reader::status::complete:
      break;
  }
  peer_stream_open open;
  if (!open.open.ParseFromString(reader.payload())) {
    refuse(self, id, s, "malformed StreamOpen");
    return;
  }
  open.stream_id = id;
  open.peer = st.args.peer;
  open.first_bytes = std::move(reader.rest());
  open.peer_fin = fin;
  s.opening.reset();
  auto owner = st.args.handler(self, std::move(open));
  if (!owner) {
    refuse(self, id, s, open_code_of(owner.error()), error_text(owner.error()));
    return;
  }
  s.owner = std::move(*owner);
  if (s.owner)
    self->monitor(s.owner);
  grant_credit(self, id, s);
}

void on_opening_reset(peer_session_actor* self, int64_t id, session_stream& s) {
  // Nobody will open anything on it: end our direction too.
  auto& st = self->state;
  s.opening.reset();
  log::debug(subject, "{} reset stream {} before its StreamOpen", st.args.peer,
             id);
  if (st.link->open()) {
    st.link->reset_stream(id, 0);
    schedule_flush(self); // (called from inside process_events)
  }
}

void on_preamble_timeout(peer_session_actor* self, int64_t id) {
  auto& st = self->state;
  auto i = st.streams.find(id);
  if (i == st.streams.end() || !i->second.opening)
    return; // it has its owner, or it is gone
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
    st.args.settings.preamble_timeout);
  refuse(self, id, i->second,
         fmt::format("no StreamOpen within {} s", secs.count()));
}

} // namespace p2proxy::peer_session_parts
