// The probes of `p2proxy netcheck` (node/netcheck.*), built on libnice's
// STUN library: Binding requests to the signaling server's STUN ports, all
// from one UDP socket so that their mapped addresses can be compared, and a
// TURN Allocate (long-term credentials, RFC 5766) to see whether a relay
// takes this node's credentials and how far away it is. Synchronous and
// bounded in time; for a command-line tool, not for actors.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "actors/common/endpoint.hpp"

namespace p2proxy {

struct stun_binding_answer {
  endpoint server;
  bool answered = false;
  std::string mapped; // "IP:PORT" the server saw
  double rtt_ms = 0;
  std::string error; // why not answered
};

struct stun_binding_report {
  std::string local; // "IP:PORT" of the probing socket, toward the servers
  std::vector<stun_binding_answer> answers; // in the order of `servers`
};

/// Sends a Binding request to each of `servers` from one UDP socket
/// (retransmitting until `timeout`). `family`: AF_INET or AF_INET6; servers
/// of the other family are answered with an error.
stun_binding_report stun_bindings(const std::vector<endpoint>& servers,
                                  int family,
                                  std::chrono::milliseconds timeout);

struct turn_check {
  endpoint server;
  bool tcp = false;
  bool reachable = false; // the server answered at all
  bool allocated = false; // it took the credentials and gave a relay
  std::string relayed;    // the relayed address
  double rtt_ms = 0;      // of the first answer
  int error_code = 0;     // the STUN error of the last answer, if any
  std::string error;      // one line for people
};

/// Allocates a relay on `server` over UDP or TCP with `user`/`password` and
/// releases it at once.
turn_check turn_allocate(const endpoint& server, bool tcp,
                         const std::string& user, const std::string& password,
                         std::chrono::milliseconds timeout);

} // namespace p2proxy
