#include "actors/quic/tls_context.hpp"

#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
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
  auto id = certificate_key_id(
    {reinterpret_cast<const char*>(certs[0].data), certs[0].size});
  if (id.empty())
    why = "peer presented an unreadable certificate";
  return id;
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
  check("certificate_allocate_credentials",
        gnutls_certificate_allocate_credentials(&cred_));
  try {
    add_self_signed_certificate(me, cred_);
  } catch (const identity_error& e) {
    gnutls_certificate_free_credentials(cred_);
    cred_ = nullptr;
    throw std::runtime_error(fmt::format("QUIC TLS setup: {}", e.what()));
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
