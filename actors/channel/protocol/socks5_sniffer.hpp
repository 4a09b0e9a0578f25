// SOCKS5 (RFC 1928), the part a LISTENER needs: the method negotiation
// (no authentication only) and one CONNECT request naming a domain, whose
// name is the resource.
//
//   client                          sniffer
//   05 n m1..mn            ──▶      05 00 (need_more with reply), or
//                                   05 FF and close when 00 is not offered
//   05 01 00 03 len name port ──▶   done: resource = name; the CHANNEL sends
//                                   socks5_reply(succeeded) once the tunnel
//                                   is up, or failure_reply(...) and closes
//
// The name is lowercased, and a trailing "." and ".localhost" are removed
// ("cam1.localhost" → "cam1"). The requested port is ignored: an export has
// one target (requested_port() is there for the log).
//
// Other requests are answered and closed: BIND / UDP ASSOCIATE → 07
// (command not supported); IPv4 / IPv6 addresses → 08 (address type not
// supported: an address names no resource); a malformed request → 01. A
// greeting that is not version 5 gets no reply (a SOCKS4 client gets its own
// "request rejected", 00 5B). SOCKS5 messages are small (at most 262 bytes
// each), so the 16 KiB head limit never applies.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "actors/channel/protocol/sniffer.hpp"

namespace p2proxy {

enum class socks5_reply_code : uint8_t {
  succeeded = 0x00,
  general_failure = 0x01,
  not_allowed = 0x02,
  network_unreachable = 0x03,
  host_unreachable = 0x04,
  connection_refused = 0x05,
  ttl_expired = 0x06,
  command_not_supported = 0x07,
  address_type_not_supported = 0x08,
};

/// A reply to a request: 05 code 00, then the bound address 0.0.0.0:0
/// (01 00 00 00 00 00 00). Ten bytes.
std::string socks5_reply(socks5_reply_code code);

/// The reply code for a failed open: denied → 02, unknown resource / peer
/// unreachable / target unreachable → 04, target refused → 05, else 01.
socks5_reply_code socks5_code_for(open_failure why);

class socks5_sniffer {
public:
  /// Feeds the next bytes from the client. `reply` of a need_more result
  /// (the method selection) must be written at once. Bytes the client sent
  /// after its request (optimistic data) are in `forward` of `done`.
  sniff_result feed(std::string_view data);

  /// On timeout: a general failure reply once the greeting was answered
  /// (the client is waiting for a reply), else nothing.
  std::string timeout_reply() const;

  /// After `done`: socks5_reply(socks5_code_for(why)). `text` is for the
  /// log only: SOCKS5 carries no text.
  std::string failure_reply(open_failure why, std::string_view text) const;

  /// After `done`: the port the client asked for (ignored).
  uint16_t requested_port() const {
    return port_;
  }

private:
  sniff_result fail(sniff_error err, std::string reply, std::string reason);

  enum class step : uint8_t { greeting, request, finished };
  step step_ = step::greeting;
  std::string buf_;
  uint16_t port_ = 0;
};

} // namespace p2proxy
