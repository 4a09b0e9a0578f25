// The owners of the streams a peer opens. The PEER SESSION reads a stream's
// StreamOpen and calls make_stream_handler's factory once; it spawns the
// stream's only owner by the resource name:
// - an export's name: an export CHANNEL (actors/channel/channel.hpp), which
//   checks the allow list, connects the target and answers StreamOpenResult;
// - "echo", "discard", "source" with test resources enabled: the TEST
//   RESOURCES (actors/debug/test_resources.hpp);
// - anything else: refused, UNKNOWN_RESOURCE.
#pragma once

#include <chrono>
#include <vector>

#include <caf/actor_addr.hpp>

#include "actors/channel/channel.hpp"
#include "actors/peer/peer_session.hpp"

namespace p2proxy {

struct stream_owner_config {
  std::vector<export_entry> exports;
  std::chrono::milliseconds connect_timeout{10000}; // to an export's target
  bool test_resources = false;
  /// The node supervisor, for the export channels' status (weak: the
  /// handler lives in the sessions, which the supervisor outlives).
  caf::actor_addr node;
};

/// The handler factory a PEER SESSION uses for peer-opened streams.
stream_handler_factory make_stream_handler(stream_owner_config cfg);

} // namespace p2proxy
