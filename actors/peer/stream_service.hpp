// STREAM SERVICE: serves a stream the peer opened. It reads the StreamOpen
// preamble (4-byte big-endian length + tunnel::StreamOpen, at most 16 KiB,
// within 10 s), answers StreamOpenResult, and then serves the resource.
// Built in, off unless the config enables them, are the test resources the
// session tests and the benchmark use:
//   echo     every byte back, FIN after the peer's FIN
//   discard  reads everything, FIN after the peer's FIN
//   source   sends StreamOpen.source_bytes bytes of a fixed pattern, then FIN
// An export's name: DENIED unless the export's allow list names the peer
// (or "*"); otherwise the target is connected (off the actor threads, within
// connect_timeout) and the stream is handed to a CHANNEL (stream_owner_atom
// handoff), or answered TARGET_REFUSED / TARGET_UNREACHABLE. Anything else
// is answered UNKNOWN_RESOURCE. Nothing reaches a target before the ACL
// check passed. Back-pressure: bytes are consumed (credit returned to the peer)
// only once they have been passed on, so a slow side never grows a buffer.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/event_based_actor.hpp>

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
  std::chrono::milliseconds preamble_timeout{10000};
  size_t max_preamble = 16 * 1024;
  /// The node supervisor, for the export channels' status (weak: the
  /// handler lives in the sessions, which the supervisor outlives).
  caf::actor_addr node;
};

/// The handler factory a PEER SESSION uses for peer-opened streams.
stream_handler_factory make_stream_handler(stream_service_config cfg);

/// The byte at offset `i` of the "source" pattern (cheap to check).
inline char source_pattern(uint64_t i) {
  return static_cast<char>('a' + (i * 7 + i / 4096) % 26);
}

} // namespace p2proxy
