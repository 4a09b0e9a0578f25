#include "actors/quic/tls_context.hpp"

#include <cstring>
#include <ctime>
#include <stdexcept>

#include <fmt/format.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

namespace p2proxy::quic_tls {

namespace {

[[noreturn]] void fail(const char* what, int rc) {
  throw std::runtime_error(
    fmt::format("QUIC TLS setup: {}: {}", what, gnutls_strerror(rc)));
}

void check(const char* what, int rc) {
  if (rc < 0)
    fail(what, rc);
}

// Scoped GnuTLS handles: every exit path releases them.
struct crt_ptr {
  gnutls_x509_crt_t p = nullptr;
  ~crt_ptr() {
    if (p != nullptr)
      gnutls_x509_crt_deinit(p);
  }
};

struct pubkey_ptr {
  gnutls_pubkey_t p = nullptr;
  ~pubkey_ptr() {
    if (p != nullptr)
      gnutls_pubkey_deinit(p);
  }
};

struct x509_key_ptr {
  gnutls_x509_privkey_t p = nullptr;
  ~x509_key_ptr() {
    if (p != nullptr)
      gnutls_x509_privkey_deinit(p);
  }
};

struct datum_ptr {
  gnutls_datum_t d{nullptr, 0};
  ~datum_ptr() {
    if (d.data != nullptr)
      gnutls_free(d.data);
  }
};

// The node id of the first certificate the peer sent, or an empty string
// with `why` set when there is none we can read.
std::string peer_node_id(gnutls_session_t session, std::string& why) {
  if (gnutls_certificate_type_get2(session, GNUTLS_CTYPE_PEERS)
      != GNUTLS_CRT_X509) {
    why = "peer presented no X.509 certificate";
    return {};
  }
  unsigned n = 0;
  auto* certs = gnutls_certificate_get_peers(session, &n);
  if (certs == nullptr || n == 0) {
    why = "peer presented no certificate";
    return {};
  }
  crt_ptr crt;
  pubkey_ptr pub;
  datum_ptr spki;
  if (gnutls_x509_crt_init(&crt.p) < 0
      || gnutls_x509_crt_import(crt.p, &certs[0], GNUTLS_X509_FMT_DER) < 0
      || gnutls_pubkey_init(&pub.p) < 0
      || gnutls_pubkey_import_x509(pub.p, crt.p, 0) < 0
      || gnutls_pubkey_export2(pub.p, GNUTLS_X509_FMT_DER, &spki.d) < 0) {
    why = "peer presented an unreadable certificate";
    return {};
  }
  return node_id_from_spki(
    {reinterpret_cast<const char*>(spki.d.data), spki.d.size});
}

// Runs inside the handshake when the peer's Certificate arrives; nonzero
// aborts the handshake with an alert (fail closed).
int verify_peer(gnutls_session_t session) {
  auto* b = static_cast<peer_binding*>(gnutls_session_get_ptr(session));
  if (b == nullptr)
    return GNUTLS_E_CERTIFICATE_ERROR;
  try {
    // ALPN is settled before any Certificate message in TLS 1.3; checking it
    // here refuses a peer before it proves anything else.
    if (!alpn_ok(session)) {
      b->failure = fmt::format("peer did not negotiate ALPN \"{}\"", alpn);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
    std::string why;
    auto id = peer_node_id(session, why);
    if (id.empty()) {
      b->failure
        = fmt::format("{}, expected node id {}", why, b->expected_peer);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
    b->presented_peer = id;
    if (id != b->expected_peer) {
      b->failure = fmt::format("peer presented node id {}, expected {}", id,
                               b->expected_peer);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
    b->verified = true;
    return 0;
  } catch (...) {
    b->failure = "peer certificate check failed";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
}

} // namespace

credentials::credentials(const identity& me) {
  auto* key = me.native_key();
  crt_ptr crt;
  pubkey_ptr pub;
  check("x509_crt_init", gnutls_x509_crt_init(&crt.p));
  check("x509_crt_set_version", gnutls_x509_crt_set_version(crt.p, 3));
  unsigned char serial[16];
  check("random serial", gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial)));
  serial[0] &= 0x7f; // a positive INTEGER
  check("x509_crt_set_serial",
        gnutls_x509_crt_set_serial(crt.p, serial, sizeof(serial)));
  // Dates are not checked by either side (the key is pinned by node id);
  // they are plausible only for tools that print the certificate.
  auto now = std::time(nullptr);
  check("x509_crt_set_activation_time",
        gnutls_x509_crt_set_activation_time(crt.p, now - 24 * 3600));
  check("x509_crt_set_expiration_time", gnutls_x509_crt_set_expiration_time(
                                          crt.p, now + 10 * 365 * 24 * 3600L));
  const auto& id = me.node_id();
  check("x509_crt_set_dn (CN)",
        gnutls_x509_crt_set_dn_by_oid(crt.p, GNUTLS_OID_X520_COMMON_NAME, 0,
                                      id.data(), id.size()));
  check("pubkey_init", gnutls_pubkey_init(&pub.p));
  check("pubkey_import_privkey",
        gnutls_pubkey_import_privkey(pub.p, key, 0, 0));
  check("x509_crt_set_pubkey", gnutls_x509_crt_set_pubkey(crt.p, pub.p));
  check("x509_crt_set_key_usage",
        gnutls_x509_crt_set_key_usage(crt.p, GNUTLS_KEY_DIGITAL_SIGNATURE));
  check("x509_crt_set_basic_constraints",
        gnutls_x509_crt_set_basic_constraints(crt.p, 0, -1));
  // Self-signed: issuer = subject; Ed25519 fixes its own digest.
  check("signing the certificate",
        gnutls_x509_crt_privkey_sign(crt.p, crt.p, key, GNUTLS_DIG_UNKNOWN, 0));
  // The credentials keep their own copies of certificate and key.
  x509_key_ptr x509;
  check("privkey_export_x509", gnutls_privkey_export_x509(key, &x509.p));
  check("certificate_allocate_credentials",
        gnutls_certificate_allocate_credentials(&cred_));
  auto rc = gnutls_certificate_set_x509_key(cred_, &crt.p, 1, x509.p);
  if (rc < 0) {
    gnutls_certificate_free_credentials(cred_);
    cred_ = nullptr;
    fail("certificate_set_x509_key", rc);
  }
}

credentials::~credentials() {
  if (cred_ != nullptr)
    gnutls_certificate_free_credentials(cred_);
}

gnutls_session_t make_session(bool server, const credentials& cred,
                              peer_binding* binding) {
  gnutls_session_t s = nullptr;
  // No session tickets: every session is a fresh, mutually authenticated
  // handshake (no resumption, no 0-RTT).
  unsigned flags = (server ? GNUTLS_SERVER : GNUTLS_CLIENT)
                   | GNUTLS_NO_END_OF_EARLY_DATA | GNUTLS_NO_TICKETS;
  check("gnutls_init", gnutls_init(&s, flags));
  try {
    auto rc = server ? ngtcp2_crypto_gnutls_configure_server_session(s)
                     : ngtcp2_crypto_gnutls_configure_client_session(s);
    if (rc != 0)
      throw std::runtime_error(
        "QUIC TLS setup: ngtcp2_crypto_gnutls_configure_session failed");
    check("priority", gnutls_priority_set_direct(s, priority, nullptr));
    check("credentials_set",
          gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred.native()));
    gnutls_datum_t proto{
      reinterpret_cast<unsigned char*>(const_cast<char*>(alpn)),
      static_cast<unsigned>(std::strlen(alpn))};
    check("alpn_set_protocols",
          gnutls_alpn_set_protocols(s, &proto, 1, GNUTLS_ALPN_MANDATORY));
    if (server)
      gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_function(s, verify_peer);
    gnutls_session_set_ptr(s, binding);
  } catch (...) {
    gnutls_deinit(s);
    throw;
  }
  return s;
}

bool alpn_ok(gnutls_session_t session) {
  gnutls_datum_t selected{nullptr, 0};
  if (gnutls_alpn_get_selected_protocol(session, &selected) != 0)
    return false;
  return selected.size == std::strlen(alpn)
         && std::memcmp(selected.data, alpn, selected.size) == 0;
}

} // namespace p2proxy::quic_tls
