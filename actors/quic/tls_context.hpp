// TLS side of the QUIC module (private to actors/quic): the self-signed
// certificate for a node key, the GnuTLS session configured for ngtcp2
// (TLS 1.3 only, ALPN "p2proxy/1" mandatory, certificates both ways) and the
// peer check that pins the peer's key to the node id we expect.
//
// Nothing here trusts a CA or looks at names or validity dates: the TLS 1.3
// CertificateVerify proves the peer holds the private key of the certificate
// it sent, and the only question we ask of that certificate is whether its
// SubjectPublicKeyInfo hashes to the expected node id.
#pragma once

#include <string>

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "actors/identity/identity.hpp"

namespace p2proxy::quic_tls {

/// The only application protocol we speak.
inline constexpr char alpn[] = "p2proxy/1";

/// TLS 1.3 only, no middlebox compatibility mode (QUIC_NOTES pitfall 3).
inline constexpr char priority[]
  = "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE";

/// Certificate credentials holding a fresh self-signed X.509 certificate for
/// the node key (CN = node id). Throws std::runtime_error on GnuTLS errors.
class credentials {
public:
  explicit credentials(const identity& me);
  ~credentials();
  credentials(const credentials&) = delete;
  credentials& operator=(const credentials&) = delete;

  gnutls_certificate_credentials_t native() const {
    return cred_;
  }

private:
  gnutls_certificate_credentials_t cred_ = nullptr;
};

/// What the session pointer of a GnuTLS session points to. ngtcp2's crypto
/// helper reads it as an ngtcp2_crypto_conn_ref (pitfall 1), our verify
/// function as a peer_binding: `ref` must stay the first member.
struct peer_binding {
  ngtcp2_crypto_conn_ref ref{nullptr, nullptr};
  /// The node id the peer must prove.
  std::string expected_peer;
  /// The node id of the certificate the peer presented, once seen.
  std::string presented_peer;
  /// Why the peer was refused; empty while it is acceptable.
  std::string failure;
  /// True once the peer's certificate matched `expected_peer`.
  bool verified = false;
};

/// A GnuTLS session ready for ngtcp2: created in the order of pitfall 2 with
/// the crypto helper configured, priority, credentials, mandatory ALPN, the
/// client certificate required (server) and the node-id check installed.
/// `binding` must outlive the session. Throws std::runtime_error.
gnutls_session_t make_session(bool server, const credentials& cred,
                              peer_binding* binding);

/// True when the session negotiated exactly our ALPN.
bool alpn_ok(gnutls_session_t session);

} // namespace p2proxy::quic_tls
