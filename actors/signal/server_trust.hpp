// Which signaling server a node trusts, decided from what its TLS session
// showed (actors/signal/tls_channel.hpp), in this order:
// 1. `[signal] server_id` pins it: the server's key id must be that one.
// 2. Else a certificate that verifies for the server's host name against
//    the system trust store (an operator's CA-issued `--cert`) is trusted.
// 3. Else trust on first use: the first key id seen is stored in a file
//    beside the node key and every later server must present the same.
// A refusal names the expected and the presented id.
#pragma once

#include <string>

namespace p2proxy {

struct server_trust {
  /// `[signal] server_id`; empty: not pinned.
  std::string pinned_id;
  /// Where a trusted-on-first-use id is kept ("<key>.server_id"); empty:
  /// no first use (a server must then be pinned or CA-verified).
  std::string store_path;
};

struct trust_verdict {
  bool trusted = false;
  /// When refused: why, naming the expected and the presented id.
  std::string refusal;
  /// Set when this verdict stored the id for the first time (warn once).
  bool first_use = false;
  /// How the server was trusted: "pinned", "certificate", "first use",
  /// "stored" (trusted on an earlier first use).
  const char* how = "";
};

/// Judges the server at `server` ("host:port") that presented `key_id`;
/// `ca_problem` is empty when its chain verified for the host name.
trust_verdict judge_server(const server_trust& trust, const std::string& server,
                           const std::string& key_id,
                           const std::string& ca_problem);

} // namespace p2proxy
