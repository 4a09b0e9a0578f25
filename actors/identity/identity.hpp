// A node's long-term identity: an Ed25519 key (GnuTLS), stored as PKCS#8 PEM
// with file mode 0600. The node id is the lowercase RFC 4648 base32 (no
// padding) of SHA-256 over the DER SubjectPublicKeyInfo: 52 characters that
// anybody can recompute from the public key, so no server can impersonate a
// node. The same key authenticates the node's QUIC sessions.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

// GnuTLS's handles, forward-declared as gnutls/gnutls.h does.
struct gnutls_privkey_st;
struct gnutls_certificate_credentials_st;

namespace p2proxy {

/// Thrown for unreadable, malformed or unsafe key files; what() says which
/// file and what to do.
struct identity_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// RFC 4648 base32, lowercase, no padding.
std::string base32_encode(std::string_view bytes);

/// SHA-256 of `bytes`, raw 32 bytes.
std::string sha256(std::string_view bytes);

/// The node id for a DER SubjectPublicKeyInfo.
std::string node_id_from_spki(std::string_view spki_der);

/// True when `text` has the shape of a node id (52 chars of [a-z2-7]).
bool looks_like_node_id(std::string_view text);

/// Verifies an Ed25519 (or other GnuTLS-supported) signature over `data`
/// made by the key in `spki_der`. Never throws on bad input.
bool verify_signature(std::string_view spki_der, std::string_view data,
                      std::string_view signature);

class identity {
public:
  ~identity();
  identity(identity&&) noexcept;
  identity& operator=(identity&&) noexcept;

  /// A fresh Ed25519 key.
  static identity generate();
  /// Loads a PEM key; throws identity_error naming `path` on any problem,
  /// including a file readable by others.
  static identity load(const std::string& path);
  /// Loads `path`, or generates and saves a key there when it is missing.
  static identity load_or_create(const std::string& path,
                                 bool* created = nullptr);

  /// Writes the key as PKCS#8 PEM with mode 0600; refuses to overwrite.
  void save(const std::string& path) const;

  const std::string& node_id() const;
  /// DER SubjectPublicKeyInfo.
  const std::string& public_key() const;
  /// Signs `data`; the result verifies with verify_signature(public_key(),
  /// ...).
  std::string sign(std::string_view data) const;
  /// The GnuTLS private key, borrowed: valid while this identity lives, and
  /// never to be deinitialized or modified by the caller. For TLS only (the
  /// QUIC module signs its self-signed certificate with it and exports a copy
  /// into its credentials); everything else goes through sign().
  gnutls_privkey_st* native_key() const;

private:
  struct impl;
  explicit identity(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The id (as node_id_from_spki) of the key in a DER X.509 certificate;
/// empty when the certificate cannot be read.
std::string certificate_key_id(std::string_view cert_der);

/// Adds to `cred` a fresh self-signed X.509 certificate for `me`'s key (CN =
/// its id) together with a copy of the key. Nothing checks its dates or
/// names: peers pin the key by id. Used by QUIC and the signaling TLS.
/// Throws identity_error on GnuTLS errors.
void add_self_signed_certificate(const identity& me,
                                 gnutls_certificate_credentials_st* cred);

/// The bytes a node signs to log in: "p2proxy-login-v1" || nonce || node_id.
std::string login_challenge(std::string_view nonce, std::string_view node_id);

} // namespace p2proxy
