// UDP EXPORT FLOW: the exporting node's end of one UDP flow, the owner of
// the stream a peer opened with StreamOpen{protocol "udp"} for a udp export.
//
// It checks the export's allow list against the peer's proven node id, opens
// a UDP socket *connected* to the export's target (so it sends only there and
// hears only from there: a peer cannot aim it anywhere else, and nobody else
// can inject into the flow), attaches to the stream's flow and answers
// StreamOpenResult OK. Then datagrams go both ways; the stream carries no
// bytes. It ends when the stream ends (the listener's side closed the flow),
// the session goes, or no datagram went either way for the export's
// udp_idle; the stream is then reset.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/actor_addr.hpp>
#include <caf/actor_system.hpp>

#include "actors/actors.hpp"
#include "actors/channel/channel.hpp"

namespace p2proxy {

struct udp_export_args {
  session_streams_actor session;
  int64_t stream_id = -1;
  std::string peer; // the node that opened the stream
  export_entry ex;
  std::string client_address; // the listener side's client, for the log
  /// Stream bytes after the StreamOpen (a UDP flow sends none): consumed.
  std::string first_bytes;
  bool peer_fin = false;
  /// Opened by this node's own listener (LOCAL SESSION): the allow list,
  /// which names remote nodes, does not apply.
  bool local = false;
};

stream_owner_actor spawn_udp_export_flow(caf::actor_system& sys,
                                         udp_export_args args);

} // namespace p2proxy
