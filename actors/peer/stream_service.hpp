// The owners of the streams a peer opens. The PEER SESSION reads a stream's
// StreamOpen and calls make_stream_handler's factory once; it picks the
// owner by the resource name:
// - an export's name: a STREAM SERVICE (below);
// - "echo", "discard", "source" with test resources enabled: the TEST
//   RESOURCES (actors/debug/test_resources.hpp);
// - anything else: refused, UNKNOWN_RESOURCE.
//
// STREAM SERVICE: the export's first owner. It answers DENIED unless the
// export's allow list names the peer (or "*"); otherwise it connects the
// target (off the actor threads, within connect_timeout) and hands the
// stream to an export CHANNEL (spawn_export_channel + the stream_owner_atom
// handoff), or answers TARGET_REFUSED / TARGET_UNREACHABLE (by the
// connect's code). Nothing reaches a target before the ACL check passed.
// Back-pressure: the bytes after the StreamOpen wait, unconsumed, until the
// channel writes them to the target, so a slow side never grows a buffer.
// (It goes once the export CHANNEL can start without a socket.)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

#include "actors/common/endpoint.hpp"
#include "actors/peer/peer_session.hpp"

namespace p2proxy {

/// One [[export]]: a resource name this node serves, where it lives, and
/// which nodes may use it ("*" for every node of the network).
struct export_entry {
  std::string name;
  endpoint target;
  std::string protocol;
  std::vector<std::string> allow;
};

struct stream_service_config {
  std::vector<export_entry> exports;
  std::chrono::milliseconds connect_timeout{10000}; // to an export's target
  bool test_resources = false;
  /// The node supervisor, for the export channels' status (weak: the
  /// handler lives in the sessions, which the supervisor outlives).
  caf::actor_addr node;
};

/// The handler factory a PEER SESSION uses for peer-opened streams.
stream_handler_factory make_stream_handler(stream_service_config cfg);

} // namespace p2proxy
