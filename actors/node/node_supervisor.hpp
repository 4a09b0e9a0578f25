// NODE SUPERVISOR (seed: "User Control"): owns the node's settings and
// creates, monitors and ends every top-level actor of a node: the CONNECTOR,
// the SIGNAL LINK, the PEER MANAGER and the ADMIN SERVER, and owns the ICE
// driver (shut down after every actor that uses it has ended) and the
// NETWORK WATCH (stopped as the node stops). It is the source of the admin
// port's documents.
//
//   running ──(stop_atom)──▶ stopping ──(all children down)──▶ (quits)
//      │
//      └──(a child ends unexpectedly)──▶ stopping, then quits with that error
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <vector>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/ice/ice_driver.hpp"
#include "actors/ice/network_watch.hpp"
#include "actors/identity/identity.hpp"
#include "actors/node/node_settings.hpp"

namespace p2proxy {

struct node_supervisor_state {
  static inline const char* name = "node_supervisor";

  node_settings cfg;
  std::shared_ptr<const identity> id;
  std::chrono::system_clock::time_point started;
  caf::actor connector;
  caf::actor link;
  caf::actor manager; // PEER MANAGER
  caf::actor local;   // LOCAL SESSION: this node's own exports
  caf::actor admin;
  std::vector<listener_actor> listeners;
  std::shared_ptr<ice_driver> ice;
  /// Tells the PEER MANAGER when the addresses ICE gathers on change; null
  /// where netlink is unavailable or [ice] names fixed addresses. Stopped
  /// when the node stops.
  std::unique_ptr<network_watch> watch;
  uint16_t admin_port = 0;
  bool stopping = false;
  caf::error exit_reason;
  std::set<caf::actor_addr> children;
  uint64_t signals_unowned = 0;
  std::set<caf::actor> channels; // open CHANNELs (monitored)
  uint64_t channels_opened = 0;  // ended channels that reached their target
  uint64_t channels_failed = 0;  // ended channels that did not
  uint64_t channel_bytes_in = 0; // of ended channels
  uint64_t channel_bytes_out = 0;
};

using node_supervisor_actor = caf::stateful_actor<node_supervisor_state>;

/// Answers (get_atom) -> JSON of admin::NodeStatus, (metrics_atom) ->
/// Prometheus text, (lookup_atom, name) and (probe_atom, node id) through the
/// SIGNAL LINK, (open_atom, node id) through the PEER MANAGER (this node's
/// own id: the LOCAL SESSION), (pump_atom,
/// ...) with [debug] test_resources, (stop_atom, reason). Quits with an error
/// when the admin port cannot be bound.
caf::behavior node_supervisor(node_supervisor_actor* self, node_settings cfg,
                              std::shared_ptr<const identity> id);

} // namespace p2proxy
