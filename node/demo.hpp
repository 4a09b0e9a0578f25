// `p2proxy demo`: a signaling server and two nodes in one process on
// loopback, one exporting its own status page and the other carrying it
// through a peer-to-peer session to a local port.
#pragma once

#include <cstdint>
#include <string>

namespace p2proxy {

/// Runs the demo until a stop signal; node keys live in `dir` (a private
/// temporary directory when empty); five loopback ports from `base_port`.
/// Returns the process exit code.
int run_demo(const std::string& dir, uint16_t base_port);

} // namespace p2proxy
