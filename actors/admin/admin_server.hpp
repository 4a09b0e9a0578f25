// ADMIN SERVER: the node's (or signaling server's) HTTP admin port, on
// cpp-httplib. GET /v1/status answers the JSON that (get_atom) on `source`
// returns; GET /metrics the Prometheus text of (metrics_atom).
//
// The HTTP server runs on its own thread with a small pool of workers; the
// handlers reach actors only through a scoped_actor and a copy of `source`,
// never through the ADMIN SERVER itself. The actor owns that thread: however
// it ends (stop, `source` down, an exit from the system), it stops the HTTP
// server and joins the thread before it is gone, so no handler outlives it.
// Stopping may therefore wait up to 3 s for a request still asking `source`.
//
// Answers: 200 with the source's text; 503 {"error": ...} when the source
// does not answer within 3 s; 404 {"error": "not found: /path"}; 405 for a
// known path with another method than GET/HEAD. Requests are limited to
// 64 KiB and a 5 s read timeout.
//
// Messages: (stop_atom, std::string reason) or (stop_atom) end it;
//           (status_atom) -> std::string serialized admin::ActorStatus.
#pragma once

#include <cstdint>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "actors/common/endpoint.hpp"

namespace p2proxy {

/// Binds `listen` (port 0 picks one, stored in `bound_port`) and serves until
/// the returned actor gets (stop_atom, reason) or `source` goes down.
caf::expected<caf::actor> start_admin_server(caf::actor_system& sys,
                                             const endpoint& listen,
                                             caf::actor source,
                                             uint16_t& bound_port);

} // namespace p2proxy
