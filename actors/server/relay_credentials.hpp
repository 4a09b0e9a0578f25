// What the signaling server hands every node at login about relays: STUN
// and TURN servers, and for coturn's `use-auth-secret` mode short-lived TURN
// credentials minted per node (the TURN REST scheme coturn implements):
//   user     = "<expiry, Unix seconds>:<node id>"
//   password = base64(HMAC-SHA1(shared secret, user))
// coturn recomputes the password from its `static-auth-secret` and refuses
// a user whose expiry has passed. docs/deploy-coturn.md has the coturn side.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "actors/common/endpoint.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

struct relay_options {
  /// STUN servers handed out; an empty host means the signaling server's
  /// own host as the node reaches it.
  std::vector<endpoint> stun;
  std::vector<endpoint> turn;
  /// coturn's static-auth-secret; empty: TURN servers go out without
  /// credentials (a node then needs its own [ice] turn user and password).
  std::string turn_secret;
  /// How long minted credentials live. The SIGNAL CLIENT pushes fresh ones
  /// to an online node when half of it has passed.
  std::chrono::seconds turn_ttl{86400};
  /// The server's own STUN binding responders (--stun-ports), for netcheck.
  std::vector<endpoint> stun_probes;

  bool empty() const {
    return stun.empty() && turn.empty() && stun_probes.empty();
  }
};

/// base64(HMAC-SHA1(secret, user)), as coturn computes it.
std::string turn_rest_password(const std::string& secret,
                               const std::string& user);

/// The IceServers for `node_id` at `now` (credentials minted when a secret
/// is set).
signal::IceServers make_ice_servers(const relay_options& opts,
                                    const std::string& node_id,
                                    std::chrono::system_clock::time_point now);

/// "HOST:PORT", or ":PORT" for an endpoint without a host.
std::string ice_server_text(const endpoint& ep);

} // namespace p2proxy
