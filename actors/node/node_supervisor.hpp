// NODE SUPERVISOR (seed: "User Control"): owns the node's configuration and
// creates, monitors and ends every top-level actor of a node: the CONNECTOR,
// the SIGNAL LINK and the ADMIN SERVER. It is the source of the admin port's
// documents and, until sessions exist, the sink of incoming Signals.
//
//   running ──(stop_atom)──▶ stopping ──(all children down)──▶ (quits)
//      │
//      └──(a child ends unexpectedly)──▶ stopping, then quits with that error
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/identity/identity.hpp"
#include "node/config.hpp"

namespace p2proxy {

struct node_supervisor_state {
  static inline const char* name = "node_supervisor";

  node_config cfg;
  std::shared_ptr<const identity> id;
  std::chrono::system_clock::time_point started;
  caf::actor connector;
  caf::actor link;
  caf::actor admin;
  uint16_t admin_port = 0;
  bool stopping = false;
  caf::error exit_reason;
  std::set<caf::actor_addr> children;
  uint64_t signals_unowned = 0;
};

using node_supervisor_actor = caf::stateful_actor<node_supervisor_state>;

/// Answers (get_atom) -> JSON of admin::NodeStatus, (metrics_atom) ->
/// Prometheus text, (lookup_atom, name) and (probe_atom, node id) through the
/// SIGNAL LINK, (stop_atom, reason). Quits with an error when the admin port
/// cannot be bound.
caf::behavior node_supervisor(node_supervisor_actor* self, node_config cfg,
                              std::shared_ptr<const identity> id);

} // namespace p2proxy
