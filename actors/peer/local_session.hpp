// LOCAL SESSION: the stand-in for a PEER SESSION when a node's own listener
// asks for a resource the node exports itself. A node never opens a session
// to itself; its client CHANNEL gets this actor instead and talks to it
// exactly as to a session (session_streams_actor). The local session reads
// the StreamOpen preamble the channel writes, spawns the stream's owner with
// the same handler factory the peer sessions use (so the export CHANNEL
// connects the target as for a remote peer), and joins the two owners: one
// owner's writes are the other's data, consumed bytes come back as credit,
// a reset or an owner that ends early resets the other end, and when both
// ends have sent their FIN both hear (stream_closed_atom). A UDP flow's
// datagrams (flow_attach_atom, flow_send_atom) pass the same way, in
// process.
//
// The NODE SUPERVISOR spawns one at start, monitors it, answers (open_atom,
// this node's id) with it (delegated as (get_atom) -> caf::actor), and stops
// it with
// (stop_atom, reason): every owner then hears (session_down_atom) and the
// actor quits.
#pragma once

#include <caf/fwd.hpp>

#include "actors/peer/peer_session.hpp"

namespace p2proxy {

struct local_session_config {
  std::string node_id;            // this node: the "peer" the owners see
  stream_handler_factory handler; // spawns the export's owner
  uint64_t owner_credit = 1024 * 1024;
  size_t max_preamble = p2proxy::max_preamble;
};

caf::actor spawn_local_session(caf::local_actor* parent,
                               local_session_config cfg);

} // namespace p2proxy
