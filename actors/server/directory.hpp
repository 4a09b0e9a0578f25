// DIRECTORY: the signaling server's view of who is online, who owns and
// exports which name, and where to route a Signal. One per server; SIGNAL
// CLIENTs log in and out of it. Messages: see the DIRECTORY section of
// actors/actors.hpp.
//
// Rules it keeps:
// - one client per node id: a newer login wins, the older client is told
//   (replaced_atom, new address) and ends itself;
// - a logout, a Register or the down_msg of a client that is no longer the
//   current one for its id changes nothing (a replaced client may still be
//   draining its mailbox);
// - names have owners (names_policy.hpp): a name the operator's policy lists
//   may be exported by the listed nodes only; any other name belongs to the
//   first node that registered it, for good (NAME OWNERS, kept across
//   restarts). A Register is answered name by name (a RegisterResult
//   Envelope delivered to the client); a refused name never reaches the
//   index, the node's other names do;
// - a (reload_atom) reads the policy file again; a file that does not parse
//   changes nothing (logged). Every online node with names gets a fresh
//   RegisterResult, since its answers may have changed;
// - lookups answer the online nodes that registered the name and may export
//   it, node ids sorted, so answers are stable.
//
// In a cluster (clustered_directory, --redis) it spawns a CLUSTER
// (actors/cluster/cluster.hpp) and keeps it informed of logins, logouts and
// accepted exports; the name owners then live in Redis (its name_owners
// is a memory-only cache of the owners last seen, used while Redis is
// unreachable), look-ups add the nodes of the other servers, Signals to a
// node not held here go through the CLUSTER, and envelopes or take-overs
// from other servers come back from it:
//   (deliver_atom, std::string to, std::string envelope)
//   (replaced_atom, std::string id, std::string by)
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/cluster/cluster.hpp"
#include "actors/server/name_owners.hpp"
#include "actors/server/names_policy.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

struct directory_state {
  struct entry {
    caf::actor client;
    std::string address;
    std::chrono::system_clock::time_point since;
    std::vector<std::string> requested; // as the last Register listed them
    std::vector<std::string> exports;   // accepted ones: sorted, unique
    std::set<std::string> refused;      // as last answered, to log changes
    uint64_t register_gen = 0; // the Register waiting for Redis's owners
  };

  names_options opts;
  names_policy policy;
  name_owners owners;
  std::map<std::string, entry> nodes;                   // by node id
  std::map<std::string, std::set<std::string>> by_name; // export -> ids
  caf::actor cluster; // invalid without --redis
  std::shared_ptr<cluster_metrics> cluster_stats;

  /// Removes `id` and its exports from the index.
  void erase(const std::string& id);
  /// Replaces the accepted exports of `id` (which must be online).
  void set_exports(const std::string& id, std::vector<std::string> names);
  /// Decides every name `id` requested (claiming unowned ones), updates the
  /// index and returns the answer for the node.
  signal::RegisterResult decide_all(const std::string& id);

  static inline const char* name = "directory";
};

using directory_actor = caf::stateful_actor<directory_state>;

/// Spawn with sys.spawn(directory, names_options{...}). Reads the owners and
/// the policy at once; if either cannot be read it logs why and quits with
/// ec::bad_config (the caller checks both beforehand to report it). Ends on
/// (stop_atom, reason).
caf::behavior directory(directory_actor* self, names_options opts);

/// The same for a server in a cluster: sys.spawn(clustered_directory,
/// names, cluster_options{...}, metrics). The owners live in Redis, so
/// names.state_dir is not used.
caf::behavior clustered_directory(directory_actor* self, names_options opts,
                                  cluster_options copts,
                                  std::shared_ptr<cluster_metrics> metrics);

} // namespace p2proxy
