// `p2proxy netcheck --config node.toml [--json]`: what this host's network
// allows, with the help of the signaling server the configuration names
// (docs/netcheck.md). It logs in once without being listed (proto/signal.proto
// Login.probe_only) to learn the STUN and TURN servers and the server's STUN
// ports, then probes from this host: UDP, public address, mapping behaviour,
// IPv6, each relay's reachability and round trip; and says which path to
// expect with each kind of peer.
#pragma once

#include <string>
#include <vector>

#include "actors/ice/stun_probe.hpp"

namespace p2proxy {

/// What the probes found, as printed (human text or JSON).
struct netcheck_result {
  std::string signal_server;
  std::string signal_error;        // empty: the probe login worked
  std::string observed;            // the TCP address the server saw
  std::string server_id;           // the key id the server presented
  std::string server_trust;        // pinned | certificate | stored | first use
  std::string udp = "unknown";     // works | blocked | unknown
  std::string mapping = "unknown"; // endpoint-independent | ...-dependent
  std::string mapping_note;        // how much the probes could tell
  std::string local_address;       // this host's address toward the server
  std::vector<std::string> public_addresses;
  bool behind_nat = false;
  std::vector<stun_binding_answer> stun;
  std::vector<std::string> ipv6_addresses; // global ones on this host
  std::string ipv6 = "unavailable";        // works | no-answer | unavailable |
                                           // untested (server without IPv6)
  std::string relay_source;                // "server", "config" or empty: none
  std::string relay_expires;               // RFC 3339; empty: no expiry
  std::vector<turn_check> relay;
  struct expectation {
    std::string peer;
    std::string path;
  };
  std::vector<expectation> paths;
};

/// The whole command; returns the exit code (0 unless the check could not
/// run, e.g. a bad configuration).
int run_netcheck(const std::string& config_path, bool json,
                 const std::string& log_level);

/// The verdict from the probes' raw findings (exposed for the unit test).
void classify(netcheck_result& r);

std::string netcheck_json(const netcheck_result& r);
std::string netcheck_text(const netcheck_result& r);

} // namespace p2proxy
