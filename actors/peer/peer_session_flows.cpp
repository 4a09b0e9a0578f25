// The PEER SESSION's flows: QUIC DATAGRAMs between a stream's owner and the
// peer. The flow id on the wire is the stream id, so a flow lives exactly as
// long as its stream, was authorized as the stream's open was (the export's
// allow list, the peer's proven node id), and only the stream's owner can
// attach to it. A datagram for any other id is counted and dropped.
#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/peer/peer_session_parts.hpp"

namespace p2proxy::peer_session_parts {

void route_datagram(peer_session_actor* self, int64_t flow, std::string&& bytes,
                    datagram_batch& batch) {
  auto& st = self->state;
  auto i = st.streams.find(flow);
  if (i == st.streams.end() || !i->second.flow) {
    ++st.datagrams_unknown_flow;
    return;
  }
  batch.by_flow[flow].push_back(std::move(bytes));
}

void deliver_datagrams(peer_session_actor* self, datagram_batch& batch) {
  auto& st = self->state;
  for (auto& [flow, datagrams] : batch.by_flow) {
    auto i = st.streams.find(flow);
    if (i == st.streams.end() || !i->second.flow) {
      st.datagrams_unknown_flow += datagrams.size(); // gone meanwhile
      continue;
    }
    self->send(i->second.flow, flow_data_atom::value, flow,
               std::move(datagrams));
  }
  batch.by_flow.clear();
}

caf::message_handler flow_handlers(peer_session_actor* self) {
  return {
    [=](flow_attach_atom, int64_t id, const caf::actor& owner) {
      auto& st = self->state;
      auto i = st.streams.find(id);
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (i == st.streams.end() || !i->second.owner || !owner
          || i->second.owner.address() != owner.address()
          || sender != owner.address())
        return; // not its stream: nothing to attach
      i->second.flow = caf::actor_cast<flow_owner_actor>(owner);
    },
    [=](flow_send_atom, int64_t id, std::vector<std::string>& datagrams) {
      auto& st = self->state;
      auto i = st.streams.find(id);
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (i == st.streams.end() || !i->second.flow
          || sender != i->second.flow.address())
        return;
      auto now = now_ns(self);
      uint64_t too_big = 0, unavailable = 0;
      for (auto& d : datagrams) {
        auto r = st.link->send_datagram(
          static_cast<uint64_t>(id), reinterpret_cast<const uint8_t*>(d.data()),
          d.size(), now);
        if (r == datagram_result::too_big)
          ++too_big;
        else if (r == datagram_result::unavailable)
          ++unavailable;
      }
      if (too_big + unavailable > 0)
        self->send(i->second.flow, flow_drop_atom::value, id, too_big,
                   unavailable);
      flush(self);
    },
  };
}

} // namespace p2proxy::peer_session_parts
