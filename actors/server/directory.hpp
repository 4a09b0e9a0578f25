// DIRECTORY: the signaling server's view of who is online, what each node
// exports, and where to route a Signal. One per server; SIGNAL CLIENTs log
// in and out of it. Messages: see the DIRECTORY section of actors/actors.hpp.
//
// Rules it keeps:
// - one client per node id: a newer login wins, the older client is told
//   (replaced_atom, new address) and ends itself;
// - a logout, a Register or the down_msg of a client that is no longer the
//   current one for its id changes nothing (a replaced client may still be
//   draining its mailbox);
// - lookups answer node ids sorted, so answers are stable.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

namespace p2proxy {

struct directory_state {
  struct entry {
    caf::actor client;
    std::string address;
    std::chrono::system_clock::time_point since;
    std::vector<std::string> exports; // sorted, unique
  };

  std::map<std::string, entry> nodes;                   // by node id
  std::map<std::string, std::set<std::string>> by_name; // export -> ids

  /// Removes `id` and its exports from the index.
  void erase(const std::string& id);
  /// Replaces the exports of `id` (which must be online).
  void set_exports(const std::string& id, std::vector<std::string> names);

  static inline const char* name = "directory";
};

using directory_actor = caf::stateful_actor<directory_state>;

/// Spawn with sys.spawn(directory). Ends on (stop_atom, reason).
caf::behavior directory(directory_actor* self);

} // namespace p2proxy
