// TLS CHANNEL: TLS 1.3 (GnuTLS) over memory buffers, for the signaling link.
// A FRAME CONNECTION feeds it the bytes its socket read and writes out what
// it produces; in between it sees plaintext only. Both ends of the link use
// it: the node as client, the signaling server as server. There is no
// plaintext mode.
//
// The server presents a certificate for its key (self-signed, or an
// operator's CA-issued chain for the same key); the client does not verify
// anything during the handshake. Once established, the client reports the id
// of the key the server presented (the SIGNAL LINK pins it) and whether the
// chain verifies for the host name against the system trust store; both
// sides expose the RFC 9266 "tls-exporter" channel binding that the node's
// login signature covers, so a Login cannot be replayed over another TLS
// session (one a relay terminates).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "actors/identity/identity.hpp"

namespace p2proxy {

/// The signaling server's certificate and key, shared by all its
/// connections (GnuTLS credentials are safe to share between sessions).
class tls_server_credentials {
public:
  /// A self-signed certificate for `key`, or, with `cert_file`, the PEM
  /// chain in that file, whose first certificate must be for `key`. Throws
  /// identity_error naming the file on any problem.
  explicit tls_server_credentials(const identity& key,
                                  const std::string& cert_file = {});
  ~tls_server_credentials();
  tls_server_credentials(const tls_server_credentials&) = delete;
  tls_server_credentials& operator=(const tls_server_credentials&) = delete;

  /// The server id: the id of the key, what `p2proxy id --key` prints.
  const std::string& id() const {
    return id_;
  }

  struct impl;
  const impl& native() const {
    return *impl_;
  }

private:
  std::unique_ptr<impl> impl_;
  std::string id_;
};

class tls_channel {
public:
  /// A client session for `host` (sent as SNI unless it is an address); its
  /// ClientHello is ready in take_output().
  static std::unique_ptr<tls_channel> client(const std::string& host);
  /// A server session presenting `cred`.
  static std::unique_ptr<tls_channel>
  server(std::shared_ptr<const tls_server_credentials> cred);

  ~tls_channel();
  tls_channel(const tls_channel&) = delete;
  tls_channel& operator=(const tls_channel&) = delete;

  /// Takes bytes read from the network and appends the application bytes
  /// they complete to `plain`. False on a fatal TLS error (a failed
  /// handshake, a record that does not authenticate): error() says why and
  /// the channel is dead.
  bool feed(const void* data, size_t size, std::string& plain);
  /// Encrypts `plain` (held back until the handshake is done). False when
  /// the channel is dead.
  bool write(std::string_view plain);
  /// Queues a close_notify alert.
  void close();
  /// The bytes to send to the network; empties the buffer.
  std::string take_output();

  bool established() const;
  /// The peer sent close_notify.
  bool peer_closed() const;
  const std::string& error() const;

  // Once established:
  /// Client: the id of the key in the server's certificate.
  const std::string& peer_key_id() const;
  /// Client: empty when the server's chain verified for the host name
  /// against the system trust store, else why not.
  const std::string& ca_problem() const;
  /// 32 bytes of the TLS exporter "EXPORTER-Channel-Binding" (RFC 9266),
  /// the same at both ends of one session.
  const std::string& channel_binding() const;

  struct impl;

private:
  explicit tls_channel(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The bytes a node signs to log in over a TLS session:
/// "p2proxy-login-v2" || channel binding (32 bytes) || nonce || node id.
std::string bound_login_challenge(std::string_view channel_binding,
                                  std::string_view nonce,
                                  std::string_view node_id);

} // namespace p2proxy
