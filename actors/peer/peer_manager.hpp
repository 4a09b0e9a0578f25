// PEER MANAGER (seed: P2PConnectionManagement): the only creator and
// destroyer of PEER SESSIONs, one per remote node.
//
// - open(node id): answers the session once it is ready, creating it when
//   there is none (this node is then the controlling side), or with a
//   p2proxy error whose code says why (ec::peer_offline, ice_failed,
//   handshake_failed, identity_mismatch, timeout; session_lost or
//   unspecified otherwise) and whose text says it for people. The
//   open_failures counters are labelled from the code.
// - An offer from a node without a session creates a controlled session.
// - Glare: both nodes opened at once, so each has a controlling session and
//   receives the other's offer. The session started by the node with the
//   higher node id wins on both sides: the lower node stops its own session
//   (reason "glare") and adopts the peer's as controlled; the higher node
//   ignores the peer's offer (the peer stops that session itself). Requests
//   waiting on the losing session move to the winner.
// - A session's end is its own (close protocol); the manager forgets it on
//   the down_msg and fails requests still waiting for it.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/peer/peer_session.hpp"

namespace p2proxy {

struct peer_manager_config {
  std::shared_ptr<const identity> me;
  std::shared_ptr<ice_driver> ice;
  caf::actor link;
  stream_handler_factory handler;
  session_settings settings;
  uint64_t seed = 0; // session ids
};

struct peer_manager_state {
  static inline const char* name = "peer_manager";

  struct entry {
    caf::actor session;
    uint64_t session_id = 0;
    bool controlling = false;
    bool ready = false;
    std::vector<caf::response_promise> waiting;
    caf::error stopped_for; // set when the manager stopped it (peer offline)
  };

  peer_manager_config cfg;
  std::map<std::string, entry> peers; // by node id
  std::map<caf::actor_addr, std::string> by_addr;
  std::map<std::string, caf::error> last_reason; // why the last session ended
  std::map<std::string, uint64_t> open_failures; // by open_failure_label
  std::deque<admin::SessionStatus> recently_closed;
  std::map<std::string, uint64_t> path_changes_closed; // ended sessions'
  uint64_t next_session = 0;
  uint64_t opened = 0, accepted = 0, glare_resolved = 0;
  bool stopping = false;
};

using peer_manager_actor = caf::stateful_actor<peer_manager_state>;

caf::behavior peer_manager(peer_manager_actor* self, peer_manager_config cfg);

} // namespace p2proxy
