// What a NODE SUPERVISOR needs to start a node, in the actors' own settings
// structs. node/ fills it from node.toml (node/wiring.*); the actors never
// see the configuration file's types.
#pragma once

#include <optional>
#include <vector>

#include "actors/common/endpoint.hpp"
#include "actors/ice/ice_driver.hpp"
#include "actors/listener/listener.hpp"
#include "actors/peer/peer_session.hpp"
#include "actors/peer/stream_owners.hpp"
#include "actors/signal/signal_link.hpp"

namespace p2proxy {

struct node_settings {
  /// The SIGNAL LINK's server, token and timers; the supervisor sets its
  /// export names (from `exports`) and its jitter seed.
  signal_link_config signal;
  ice_settings ice;
  /// Every PEER SESSION's timers and QUIC settings.
  session_settings session;
  /// The resources this node serves ([[export]]).
  std::vector<export_entry> exports;
  /// The built-in echo / discard / source resources ([debug]).
  bool test_resources = false;
  /// One LISTENER each ([[listen]]).
  std::vector<listener_config> listeners;
  /// Where the ADMIN SERVER listens; none: no admin port.
  std::optional<endpoint> admin;
  /// The admin port's bearer token; empty: none (loopback only).
  std::string admin_token;
};

} // namespace p2proxy
