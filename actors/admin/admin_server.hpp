// ADMIN SERVER: the node's (or signaling server's) HTTP admin port. GET /
// is the DASHBOARD (dashboard.hpp: a page, /dashboard.js and
// /dashboard.css, compiled in, served without the token since they hold no
// data; the page reads /v1/status with it). GET
// /v1/status answers the JSON that (get_atom) on `source` returns; GET
// /metrics the Prometheus text of (metrics_atom); /v1/lookup/NAME,
// /v1/probe/NODE-ID and /v1/debug/pump/NODE-ID ask `source` likewise.
//
// HTTP is served by the HTTP FRONT (http_front.hpp): one epoll thread that
// bounds every request (head 16 KiB and 100 fields: 431 past them; body
// 64 KiB: 413; 10 s from a request's first byte to its end; 512
// connections, the longest-waiting idle one closed to admit a new one) and
// never waits for `source`: each request is asked of `source` by a
// short-lived hidden actor, so a slow client or a slow answer delays no
// other request. The actor owns the front: however it ends (stop, `source`
// down, an exit from the system), it stops the front and joins its thread
// before it is gone; answers still on their way are then dropped.
//
// Access: with a bearer token every request needs `Authorization: Bearer
// TOKEN` (401 otherwise, compared in constant time). An address that is not
// loopback is refused without a token.
//
// Answers: 200 with the source's text; 503 {"error": ...} when the source
// does not answer within 3 s (8 s for look-ups and probes); 404 {"error":
// "not found: /path"}; 405 for a known path with another method than
// GET/HEAD.
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
/// `bearer_token` empty: no authorization, and `listen` must be loopback
/// (bad_config otherwise); a taken or unusable address is io_failure.
caf::expected<caf::actor> start_admin_server(caf::actor_system& sys,
                                             const endpoint& listen,
                                             caf::actor source,
                                             uint16_t& bound_port,
                                             std::string bearer_token = {});

} // namespace p2proxy
