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
// - resolve(name): the SIGNAL LINK's look-up, whose answer is cached
//   (name_cache.hpp). While the look-up fails (the signaling server is
//   unreachable), the cached owners of the name that have a live, ready
//   session answer instead: a session's peer id is the one its QUIC
//   handshake proved, so the cache never leads to a node it did not
//   authenticate. With none, the look-up's error, saying so. On every
//   (re-)login (online_atom from the SIGNAL LINK) each cached name is looked
//   up again: an owner that changed or vanished replaces or drops the entry.
//   An empty answer does not drop an owner with a live session (after a
//   server restart, nodes register again one by one): that owner answers.
//   Every session hears of the login too (a restart it sent while the link
//   was down is repeated).
// - A change of the node's usable addresses (net_change_atom, from the
//   NETWORK WATCH) is counted and passed on to every session, which decides
//   whether its path needs a restart or a probe (session_path.cpp).
// - A session's end is its own (close protocol); the manager forgets it
//   when it reports its end (failed_atom; or on the down_msg, whichever
//   comes first) and fails requests still waiting for it, so an open after
//   that starts a new session.
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

#include "actors/peer/name_cache.hpp"
#include "actors/peer/peer_session.hpp"

namespace p2proxy {

struct peer_manager_config {
  std::shared_ptr<const identity> me;
  std::shared_ptr<ice_driver> ice;
  caf::actor link;
  stream_handler_factory handler;
  session_settings settings;
  uint64_t seed = 0; // session ids
  /// Resolved names kept for signaling outages (name_cache.hpp).
  size_t name_cache_size = 128;
  std::chrono::milliseconds name_cache_ttl{std::chrono::minutes(10)};
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
  name_cache names{128, std::chrono::minutes(10)};
  uint64_t resolved_from_cache = 0, revalidations = 0;
  uint64_t network_changes = 0; // from the NETWORK WATCH
  bool stopping = false;
};

using peer_manager_actor = caf::stateful_actor<peer_manager_state>;

caf::behavior peer_manager(peer_manager_actor* self, peer_manager_config cfg);

} // namespace p2proxy
