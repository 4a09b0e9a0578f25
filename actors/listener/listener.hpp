// LISTENER (seed: ProxySocketServerFactory): one listening socket of a
// [[listen]] entry. It accepts local clients and forks a CHANNEL for each,
// counting what it accepted and what its channels had to refuse.
// Protocols "tcp" (a fixed resource), "http" and "socks5" (the client CHANNEL
// sniffs the resource; `resource` is the HTTP default). RTSP is not wired in
// yet; the node refuses such a listener at start (docs/listeners.md).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"

namespace p2proxy {

struct listener_config {
  endpoint bind;
  std::string protocol = "tcp";
  std::string resource;
  std::string peer;
  /// protocol "udp" (actors/udp/udp_listener.hpp): a flow with no datagram
  /// either way this long ends; at most max_flows flows at once.
  std::chrono::milliseconds udp_idle{60000};
  size_t max_flows = 256;
};

/// Binds `cfg.bind` (the bound port is stored in `bound_port`) and serves
/// until (stop_atom, reason). `supervisor` answers look-ups and session
/// opens for its channels. Answers (status_atom).
caf::expected<listener_actor> start_listener(caf::actor_system& sys,
                                             const listener_config& cfg,
                                             const caf::actor& supervisor,
                                             uint16_t& bound_port);

} // namespace p2proxy
