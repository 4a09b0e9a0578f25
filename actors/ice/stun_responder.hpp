// STUN binding responder of the signaling server (`p2proxy signal
// --stun-ports P1,P2`): answers RFC 5389 Binding requests on UDP ports with
// the source address it saw (XOR-MAPPED-ADDRESS), built on libnice's STUN
// library. Nodes use it as a STUN server, and `p2proxy netcheck` compares the
// addresses two ports saw to tell endpoint-independent from endpoint-
// dependent mapping (docs/netcheck.md).
//
// A port without a host listens on every address; the answer then leaves
// from the very address and port the request came to (IP_PKTINFO), which a
// NAT needs to let it back in. Not an actor: one thread of its own polls the
// sockets; the destructor stops and joins it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "actors/common/endpoint.hpp"

namespace p2proxy {

class stun_responder {
public:
  virtual ~stun_responder() = default;
  /// The bound ports, in the order given to start().
  virtual std::vector<uint16_t> ports() const = 0;
  /// Binding requests answered so far.
  virtual uint64_t answered() const = 0;

  /// Binds each of `binds` (UDP; an empty host: every IPv4 address, and
  /// every IPv6 address where IPv6 works) and starts answering. nullptr and
  /// `why` set when a port cannot be bound.
  static std::unique_ptr<stun_responder>
  start(const std::vector<endpoint>& binds, std::string& why);
};

} // namespace p2proxy
