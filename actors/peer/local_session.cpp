#include "actors/peer/local_session.hpp"

#include <map>
#include <optional>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"

namespace p2proxy {

namespace {

constexpr const char* subject = "local_session";

/// One end of a stream: the client CHANNEL's (even id) or the export
/// owner's (the next odd id). Each end's writes are its partner's data.
struct local_end {
  stream_owner_actor owner;
  caf::actor_addr owner_addr;
  int64_t partner = -1;
  /// The client end until its StreamOpen is read (no partner yet).
  std::optional<preamble_reader> opening;
  uint64_t granted = 0;   // credit given, not yet written
  uint64_t in_flight = 0; // written to the partner, not yet consumed by it
  bool fin_sent = false;  // this end wrote its FIN
  bool gone = false;      // its owner ended (after its FIN)
  /// The owner, once it attached to the stream's flow (UDP): its partner's
  /// datagrams go to it.
  caf::actor flow;
};

struct local_session_state {
  static inline const char* name = "local_session";
  local_session_config cfg;
  std::map<int64_t, local_end> ends;
  int64_t next_id = 0;
};

using local_session_actor = caf::stateful_actor<local_session_state>;

using open_code = tunnel::StreamOpenResult::Code;

open_code open_code_of(const caf::error& err) {
  if (is_error(err, ec::unknown_resource))
    return tunnel::StreamOpenResult::UNKNOWN_RESOURCE;
  if (is_error(err, ec::denied))
    return tunnel::StreamOpenResult::DENIED;
  return tunnel::StreamOpenResult::BAD_REQUEST;
}

void grant_credit(local_session_actor* self, int64_t id, local_end& e) {
  auto window = self->state.cfg.owner_credit;
  auto outstanding = e.granted + e.in_flight;
  if (e.owner && !e.gone && !e.fin_sent && outstanding <= window / 2) {
    auto more = window - outstanding;
    e.granted += more;
    self->send(e.owner, stream_credit_atom::value, id, more);
  }
}

/// Forgets both ends of a stream (its owners are no longer watched).
void drop_pair(local_session_actor* self, int64_t id) {
  auto& st = self->state;
  auto i = st.ends.find(id);
  if (i == st.ends.end())
    return;
  auto partner = i->second.partner;
  if (i->second.owner)
    self->demonitor(i->second.owner_addr);
  st.ends.erase(i);
  auto p = st.ends.find(partner);
  if (p != st.ends.end()) {
    if (p->second.owner)
      self->demonitor(p->second.owner_addr);
    st.ends.erase(p);
  }
}

/// Both FINs went through: the stream is over both ways.
void close_if_done(local_session_actor* self, int64_t id) {
  auto& st = self->state;
  auto i = st.ends.find(id);
  if (i == st.ends.end())
    return;
  auto p = st.ends.find(i->second.partner);
  if (p == st.ends.end() || !i->second.fin_sent
      || !(p->second.fin_sent || p->second.gone))
    return;
  for (auto* e : {&i->second, &p->second})
    if (e->owner && !e->gone)
      self->send(e->owner, stream_closed_atom::value,
                 e == &i->second ? id : i->second.partner);
  drop_pair(self, id);
}

/// Answers the client end as the exporting side would have: a
/// StreamOpenResult error and a FIN. The client channel refuses its client
/// and ends; nothing more of the stream is kept.
void refuse(local_session_actor* self, int64_t id, local_end& e, open_code code,
            const std::string& text) {
  log::info(subject, "refuses a local stream: {} ({})", text,
            tunnel::StreamOpenResult::Code_Name(code));
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  self->send(e.owner, stream_data_atom::value, id,
             encode_frame(res.SerializeAsString()), true);
  drop_pair(self, id);
}

/// The client end's first bytes: its StreamOpen, then the stream's own.
void read_preamble(local_session_actor* self, int64_t id, local_end& e,
                   std::string& bytes, bool fin) {
  auto& st = self->state;
  auto& reader = *e.opening;
  auto status = reader.feed(bytes);
  switch (status) {
    case preamble_reader::status::need_more:
      if (fin)
        refuse(self, id, e, tunnel::StreamOpenResult::BAD_REQUEST,
               "stream ended before its StreamOpen");
      else
        grant_credit(self, id, e); // the preamble's bytes are taken
      return;
    case preamble_reader::status::oversize:
      refuse(self, id, e, tunnel::StreamOpenResult::BAD_REQUEST,
             fmt::format("StreamOpen of {} bytes exceeds the {}-byte limit",
                         reader.announced(), st.cfg.max_preamble));
      return;
    case preamble_reader::status::complete:
      break;
  }
  peer_stream_open open;
  if (!open.open.ParseFromString(reader.payload())) {
    refuse(self, id, e, tunnel::StreamOpenResult::BAD_REQUEST,
           "malformed StreamOpen");
    return;
  }
  auto partner = id + 1;
  open.stream_id = partner;
  open.peer = st.cfg.node_id;
  open.local = true;
  open.first_bytes = std::move(reader.rest());
  open.peer_fin = fin;
  auto first = open.first_bytes.size();
  e.opening.reset();
  auto owner = st.cfg.handler(self, std::move(open));
  if (!owner) {
    refuse(self, id, e, open_code_of(owner.error()), error_text(owner.error()));
    return;
  }
  e.partner = partner;
  e.in_flight += first; // the export's owner reports them consumed
  e.fin_sent = fin;
  auto& p = st.ends[partner];
  p.owner = std::move(*owner);
  p.owner_addr = p.owner.address();
  p.partner = id;
  self->monitor(p.owner);
  grant_credit(self, partner, p);
  grant_credit(self, id, st.ends[id]);
}

void on_write(local_session_actor* self, int64_t id, std::string& bytes,
              bool fin) {
  auto& st = self->state;
  auto i = st.ends.find(id);
  if (i == st.ends.end() || i->second.fin_sent || i->second.gone)
    return;
  auto& e = i->second;
  e.granted -= std::min<uint64_t>(e.granted, bytes.size());
  if (e.opening) {
    read_preamble(self, id, e, bytes, fin);
    return;
  }
  auto p = st.ends.find(e.partner);
  if (p != st.ends.end() && p->second.owner && !p->second.gone) {
    e.in_flight += bytes.size();
    self->send(p->second.owner, stream_data_atom::value, e.partner,
               std::move(bytes), fin);
  } // else: its partner read everything it wanted; the bytes are dropped
  if (fin) {
    e.fin_sent = true;
    close_if_done(self, id);
    return;
  }
  grant_credit(self, id, e);
}

void on_owner_down(local_session_actor* self, const caf::actor_addr& who) {
  auto& st = self->state;
  for (auto& [id, e] : st.ends) {
    if (e.owner_addr != who)
      continue;
    auto self_id = id;
    auto partner = e.partner;
    if (e.fin_sent && !e.opening) {
      // It ended normally after its FIN: what its partner still sends goes
      // nowhere; the stream ends at the partner's FIN.
      e.gone = true;
      close_if_done(self, partner);
      return;
    }
    // Ended without its FIN: the other end is reset.
    auto p = st.ends.find(partner);
    if (p != st.ends.end() && p->second.owner && !p->second.gone)
      self->send(p->second.owner, stream_reset_atom::value, partner,
                 uint64_t{2});
    drop_pair(self, self_id);
    return;
  }
}

caf::behavior local_session(local_session_actor* self,
                            local_session_config cfg) {
  self->state.cfg = std::move(cfg);
  self->set_down_handler(
    [=](const caf::down_msg& dm) { on_owner_down(self, dm.source); });
  return {
    // The NODE SUPERVISOR's answer to (open_atom, this node): this actor.
    [=](get_atom) { return caf::actor{self}; },
    [=](stream_open_atom, const caf::actor& owner) -> int64_t {
      auto& st = self->state;
      auto id = st.next_id;
      st.next_id += 2;
      auto& e = st.ends[id];
      e.owner = caf::actor_cast<stream_owner_actor>(owner);
      e.owner_addr = owner.address();
      e.opening.emplace(st.cfg.max_preamble);
      self->monitor(owner);
      grant_credit(self, id, e);
      return id;
    },
    [=](stream_write_atom, int64_t id, std::string& bytes, bool fin) {
      on_write(self, id, bytes, fin);
    },
    [=](stream_consumed_atom, int64_t id, uint64_t n) {
      // `id`'s owner passed on n bytes its partner wrote.
      auto& st = self->state;
      auto i = st.ends.find(id);
      if (i == st.ends.end())
        return;
      auto p = st.ends.find(i->second.partner);
      if (p == st.ends.end())
        return;
      p->second.in_flight -= std::min(p->second.in_flight, n);
      grant_credit(self, p->first, p->second);
    },
    // --- flows (UDP): one end's datagrams are its partner's, in process
    [=](flow_attach_atom, int64_t id, const caf::actor& owner) {
      auto& st = self->state;
      auto i = st.ends.find(id);
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (i == st.ends.end() || !owner || i->second.owner_addr != sender
          || owner.address() != sender)
        return; // not its stream: nothing to attach
      i->second.flow = owner;
    },
    [=](flow_send_atom, int64_t id, std::vector<std::string>& datagrams) {
      auto& st = self->state;
      auto i = st.ends.find(id);
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (i == st.ends.end() || !i->second.flow
          || i->second.flow.address() != sender)
        return;
      auto p = st.ends.find(i->second.partner);
      if (p != st.ends.end() && p->second.flow)
        self->send(p->second.flow, flow_data_atom::value, p->first,
                   std::move(datagrams));
      else // its partner takes no datagrams (yet): dropped, reported
        self->send(i->second.flow, flow_drop_atom::value, id, uint64_t{0},
                   static_cast<uint64_t>(datagrams.size()));
    },
    [=](stream_reset_atom, int64_t id, uint64_t code) {
      auto& st = self->state;
      auto i = st.ends.find(id);
      if (i == st.ends.end())
        return;
      auto p = st.ends.find(i->second.partner);
      if (p != st.ends.end() && p->second.owner && !p->second.gone)
        self->send(p->second.owner, stream_reset_atom::value, p->first, code);
      drop_pair(self, id);
    },
    [=](stop_atom, const std::string& why) {
      auto& st = self->state;
      auto err = make_error(ec::session_lost, why);
      for (auto& [id, e] : st.ends)
        if (e.owner && !e.gone)
          self->send(e.owner, session_down_atom::value, err);
      st.ends.clear();
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_local_session(caf::local_actor* parent,
                               local_session_config cfg) {
  return parent->spawn(local_session, std::move(cfg));
}

} // namespace p2proxy
