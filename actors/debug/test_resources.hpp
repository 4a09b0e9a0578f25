// TEST RESOURCES: the built-in resources the session tests, the benchmark
// and the admin port's debug pump open on a peer (off unless the config
// sets [debug] test_resources = true). The PEER SESSION has read the
// stream's StreamOpen; the resource answers StreamOpenResult OK and serves:
//   echo     every byte back, FIN after the peer's FIN
//   discard  reads everything, FIN after the peer's FIN
//   source   sends StreamOpen.source_bytes bytes of a fixed pattern, then FIN
// Back-pressure: bytes are consumed (credit returned to the peer) only once
// they have been passed on, so a slow side never grows a buffer.
// This folder depends on the session's messages (actors.hpp) only, never on
// actors/peer/: the session's handler factory calls in here.
#pragma once

#include <cstdint>
#include <string>

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include "actors/actors.hpp"

namespace p2proxy {

/// A stream the peer opened to a test resource, as the session read it.
struct test_resource_args {
  session_streams_actor session;
  int64_t stream_id = -1;
  std::string peer;
  std::string resource;      // "echo", "discard" or "source"
  uint64_t source_bytes = 0; // StreamOpen.source_bytes
  std::string first_bytes;   // after the StreamOpen, not yet consumed
  bool peer_fin = false;     // the stream's FIN came with them
};

/// True for the names spawn_test_resource serves.
bool is_test_resource(const std::string& name);

/// Spawns the stream's owner (by `parent`, the session, which monitors it).
caf::actor spawn_test_resource(caf::local_actor* parent,
                               test_resource_args args);

/// The byte at offset `i` of the "source" pattern (cheap to check).
inline char source_pattern(uint64_t i) {
  return static_cast<char>('a' + (i * 7 + i / 4096) % 26);
}

} // namespace p2proxy
