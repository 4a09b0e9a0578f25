// CLUSTER: one signaling server's share of a network of servers on one
// Redis (docs/cluster.md). The DIRECTORY spawns it when the server runs with
// --redis and is its only client; it owns the REDIS LOOP (redis_loop.hpp),
// the thread that talks to Redis, and hears from it only by messages.
//
// What it keeps in Redis (every key under the prefix "p2proxy:"):
//   node:<node id>   -> the instance id of the server holding the node,
//                       with an expiry of three heartbeats, refreshed
//                       every heartbeat while the node is held here;
//   name:<name>      -> a set of the node ids that export the name (the
//                       look-up filters it by presence);
//   owner:<name>     -> the node id owning the name (the first to register
//                       it, unless the operator's policy says otherwise);
//   policy           -> hash: name -> "id,id,..." the operator's names
//                       policy, written by the servers started with
//                       --names (at every link up and SIGHUP);
//   channel inst:<instance id>: envelopes for nodes held by that instance
//                       ("R" to "\n" envelope) and take-overs ("K" id "\n"
//                       new instance);
//   channel all:        "P": the policy changed, every server reads it.
// Values it cannot make sense of (not a node id, not an instance id, an
// envelope that does not parse) are ignored and logged once each, never
// trusted.
//
//   down ──connect──▶ connecting ──link up──▶ up ──link down, no PONG──▶ down
//     ▲                   │ link down, no answer in time                  │
//     └───── backoff ◀────┴───────────────────────────────────────────────┘
//
// On every link up it resynchronises: presence, name index and owners of
// every node it holds are written again (Redis may have restarted empty).
// While the link is down the server keeps serving the nodes it holds: a
// look-up answers the local nodes, a Signal to a node elsewhere is answered
// PEER_OFFLINE, a Register is decided from the owners last seen.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/common/backoff.hpp"

namespace p2proxy {

/// redis://HOST:PORT[/DB] (port defaults to 6379, db to 0).
struct redis_address {
  std::string host;
  uint16_t port = 6379;
  int db = 0;
  std::string to_string() const;
};

/// Parses a --redis URL; nullopt with `why` set when it is not one.
std::optional<redis_address> parse_redis_url(const std::string& url,
                                             std::string& why);

struct cluster_options {
  redis_address redis;
  std::string instance; // this server's instance id (new_instance_id())
  std::chrono::milliseconds heartbeat{15000}; // presence refresh period
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds backoff_first{500};
  std::chrono::milliseconds backoff_max{10000};
};

/// 16 lowercase hex digits, random: a server instance id.
std::string new_instance_id();
/// True for what new_instance_id() makes.
bool looks_like_instance_id(const std::string& text);

/// What the admin port shows of the cluster. Atomics, like server_metrics:
/// the CLUSTER and the DIRECTORY write them, the SIGNAL SERVER reads them.
struct cluster_metrics {
  enum link_state : int { down = 0, connecting = 1, up = 2 };
  std::string instance;
  std::string redis; // host:port/db
  std::atomic<int> link{down};
  std::atomic<int64_t> latency_us{-1}; // last PING round trip
  std::atomic<uint64_t> nodes_held{0};
  std::atomic<uint64_t> routed_local{0};
  std::atomic<uint64_t> routed_out{0}; // published to another instance
  std::atomic<uint64_t> routed_in{0};  // received from another instance
  std::atomic<uint64_t> redis_reconnects{0};
  std::atomic<uint64_t> garbage_ignored{0};

  static const char* to_string(int link);
};

class redis_loop;
struct redis_reply;

struct cluster_state {
  cluster_options opts;
  std::shared_ptr<cluster_metrics> metrics;
  caf::actor directory;
  std::shared_ptr<redis_loop> loop; // shared_ptr: its type stays hidden

  int link = cluster_metrics::down;
  uint64_t gen = 0; // connection attempt: stale timers are ignored
  backoff retry;    // between attempts while the link is down
  bool ever_up = false;
  // Node id -> the names it exports, for refreshes and resynchronisation.
  std::map<std::string, std::vector<std::string>> held;
  // Commands waiting for their reply, by tag.
  uint64_t next_tag = 0;
  std::map<uint64_t, std::function<void(const redis_reply&)>> pending;
  // The PING in flight, if any (sent at).
  std::optional<std::chrono::steady_clock::time_point> ping_sent;
  // The names policy of this server's --names file (flat: name, "id,id"),
  // written to Redis at every link up; unset without a file.
  std::optional<std::vector<std::string>> own_policy;
  // Garbage already logged (key and value), so it is logged once.
  std::set<std::string> garbage_logged;

  static inline const char* name = "cluster";
};

using cluster_actor = caf::stateful_actor<cluster_state>;

/// Spawn with self->spawn(cluster, opts, metrics, directory): it starts
/// connecting at once. Messages: see the CLUSTER section of
/// actors/actors.hpp.
caf::behavior cluster(cluster_actor* self, cluster_options opts,
                      std::shared_ptr<cluster_metrics> metrics,
                      caf::actor directory);

} // namespace p2proxy
