#include "actors/signal/tls_channel.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <arpa/inet.h>

#include <fmt/format.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

namespace p2proxy {

namespace {

/// TLS 1.3 only; the signaling link has no older peers to talk to.
constexpr char priority[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
constexpr char exporter_label[] = "EXPORTER-Channel-Binding";
constexpr size_t binding_size = 32;
/// GnuTLS's largest record payload: one record_send call takes at most this.
constexpr size_t max_record = 16384;

[[noreturn]] void fail(const std::string& what, int rc) {
  throw identity_error(fmt::format("{}: {}", what, gnutls_strerror(rc)));
}

// The priority string parsed once per process and shared by every session:
// parsing it per session cost each of a server's connections about 8 KiB
// (tests/bench/signal_load).
gnutls_priority_t shared_priority() {
  static gnutls_priority_t cache = [] {
    gnutls_priority_t p = nullptr;
    if (auto rc = gnutls_priority_init(&p, priority, nullptr); rc < 0)
      fail("TLS priority", rc);
    return p;
  }();
  return cache;
}

// The client credentials carry the system trust store, loaded once per
// process on first use (a few hundred certificates) and shared by every
// session afterwards.
gnutls_certificate_credentials_t client_credentials() {
  static gnutls_certificate_credentials_t cred = [] {
    gnutls_certificate_credentials_t c = nullptr;
    if (auto rc = gnutls_certificate_allocate_credentials(&c); rc < 0)
      fail("TLS client credentials", rc);
    // A missing or empty trust store is not an error here: it only means no
    // server can be verified by host name (pinned or TOFU ids still work).
    gnutls_certificate_set_x509_system_trust(c);
    return c;
  }();
  return cred;
}

bool is_address(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1
         || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

} // namespace

// --- server credentials
// -------------------------------------------------------

struct tls_server_credentials::impl {
  gnutls_certificate_credentials_t cred = nullptr;
  ~impl() {
    if (cred != nullptr)
      gnutls_certificate_free_credentials(cred);
  }
};

tls_server_credentials::tls_server_credentials(const identity& key,
                                               const std::string& cert_file)
  : impl_(std::make_unique<impl>()), id_(key.node_id()) {
  if (auto rc = gnutls_certificate_allocate_credentials(&impl_->cred); rc < 0)
    fail("TLS server credentials", rc);
  if (cert_file.empty()) {
    add_self_signed_certificate(key, impl_->cred);
    return;
  }
  std::ifstream in{cert_file, std::ios::binary};
  if (!in)
    throw identity_error(fmt::format("{}: cannot read the certificate: {}",
                                     cert_file, std::strerror(errno)));
  std::ostringstream buf;
  buf << in.rdbuf();
  auto pem = buf.str();
  gnutls_datum_t data{reinterpret_cast<unsigned char*>(pem.data()),
                      static_cast<unsigned>(pem.size())};
  gnutls_x509_crt_t* crts = nullptr;
  unsigned n = 0;
  if (auto rc
      = gnutls_x509_crt_list_import2(&crts, &n, &data, GNUTLS_X509_FMT_PEM, 0);
      rc < 0 || n == 0)
    throw identity_error(
      fmt::format("{}: not a PEM certificate chain ({})", cert_file,
                  rc < 0 ? gnutls_strerror(rc) : "no certificate in it"));
  auto release = [&] {
    for (unsigned i = 0; i < n; ++i)
      gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
  };
  gnutls_datum_t der{nullptr, 0};
  std::string leaf_id;
  if (gnutls_x509_crt_export2(crts[0], GNUTLS_X509_FMT_DER, &der) >= 0) {
    leaf_id
      = certificate_key_id({reinterpret_cast<const char*>(der.data), der.size});
    gnutls_free(der.data);
  }
  if (leaf_id != id_) {
    release();
    throw identity_error(fmt::format(
      "{}: the certificate is not for the server key (its key id is {}, the "
      "key's is {})",
      cert_file, leaf_id.empty() ? "unreadable" : leaf_id, id_));
  }
  gnutls_x509_privkey_t x509 = nullptr;
  auto rc = gnutls_privkey_export_x509(key.native_key(), &x509);
  if (rc >= 0)
    rc = gnutls_certificate_set_x509_key(impl_->cred, crts, static_cast<int>(n),
                                         x509);
  if (x509 != nullptr)
    gnutls_x509_privkey_deinit(x509);
  release();
  if (rc < 0)
    fail(fmt::format("{}: cannot use the certificate", cert_file), rc);
}

tls_server_credentials::~tls_server_credentials() = default;

// --- the channel
// ----------------------------------------------------------------

struct tls_channel::impl {
  gnutls_session_t session = nullptr;
  bool is_client = false;
  std::string host;
  std::shared_ptr<const tls_server_credentials> server_cred;
  std::string in;    // network bytes not yet consumed by GnuTLS
  size_t in_pos = 0; // consumed prefix of `in`
  std::string out;   // records waiting to go to the network
  std::string held;  // plaintext written before the handshake ended
  bool done = false; // handshake finished
  bool dead = false; // a fatal error happened
  bool closed_by_peer = false;
  std::string error;
  std::string peer_id;
  std::string ca_problem;
  std::string binding;

  ~impl() {
    if (session != nullptr)
      gnutls_deinit(session);
  }

  static ssize_t push(gnutls_transport_ptr_t p, const void* data, size_t n) {
    static_cast<impl*>(p)->out.append(static_cast<const char*>(data), n);
    return static_cast<ssize_t>(n);
  }

  static ssize_t pull(gnutls_transport_ptr_t p, void* data, size_t n) {
    auto* self = static_cast<impl*>(p);
    auto left = self->in.size() - self->in_pos;
    if (left == 0) {
      gnutls_transport_set_errno(self->session, EAGAIN);
      return -1;
    }
    auto k = std::min(left, n);
    std::memcpy(data, self->in.data() + self->in_pos, k);
    self->in_pos += k;
    return static_cast<ssize_t>(k);
  }

  static int pull_timeout(gnutls_transport_ptr_t p, unsigned) {
    auto* self = static_cast<impl*>(p);
    return self->in.size() > self->in_pos ? 1 : 0;
  }

  void die(const std::string& why) {
    dead = true;
    if (error.empty())
      error = why;
  }

  void setup(unsigned role) {
    auto flags = role | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
    if (auto rc = gnutls_init(&session, flags); rc < 0)
      fail("gnutls_init", rc);
    if (auto rc = gnutls_priority_set(session, shared_priority()); rc < 0)
      fail("TLS priority", rc);
    gnutls_transport_set_ptr(session, this);
    gnutls_transport_set_push_function(session, push);
    gnutls_transport_set_pull_function(session, pull);
    gnutls_transport_set_pull_timeout_function(session, pull_timeout);
  }

  // After the handshake: what the owner of the connection needs to know.
  void learn_session() {
    unsigned char buf[binding_size];
    if (gnutls_prf_rfc5705(session, sizeof(exporter_label) - 1, exporter_label,
                           0, nullptr, sizeof(buf),
                           reinterpret_cast<char*>(buf))
        < 0) {
      die("TLS exporter unavailable");
      return;
    }
    binding.assign(reinterpret_cast<char*>(buf), sizeof(buf));
    if (!is_client)
      return;
    unsigned n = 0;
    auto* certs = gnutls_certificate_get_peers(session, &n);
    if (certs == nullptr || n == 0) {
      die("the server presented no certificate");
      return;
    }
    peer_id = certificate_key_id(
      {reinterpret_cast<const char*>(certs[0].data), certs[0].size});
    if (peer_id.empty()) {
      die("the server presented an unreadable certificate");
      return;
    }
    unsigned status = 0;
    auto rc = gnutls_certificate_verify_peers3(session, host.c_str(), &status);
    if (rc < 0) {
      ca_problem = gnutls_strerror(rc);
    } else if (status != 0) {
      gnutls_datum_t text{nullptr, 0};
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509,
                                                       &text, 0)
          >= 0) {
        ca_problem.assign(reinterpret_cast<char*>(text.data), text.size);
        gnutls_free(text.data);
      } else {
        ca_problem = "the certificate does not verify";
      }
    }
  }

  void handshake() {
    // Warnings are not fatal, but a peer must not keep us looping on them.
    for (int warnings = 0; warnings < 8; ++warnings) {
      auto rc = gnutls_handshake(session);
      if (rc == GNUTLS_E_SUCCESS) {
        done = true;
        learn_session();
        return;
      }
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
        return;
      if (gnutls_error_is_fatal(rc)) {
        die(fmt::format("TLS handshake failed: {}", gnutls_strerror(rc)));
        return;
      }
    }
    die("TLS handshake failed: too many warnings");
  }

  bool send(std::string_view plain) {
    while (!plain.empty() && !dead) {
      auto k = std::min(plain.size(), max_record);
      auto rc = gnutls_record_send(session, plain.data(), k);
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
        continue; // the push function never blocks: retry at once
      if (rc < 0) {
        die(fmt::format("TLS send failed: {}",
                        gnutls_strerror(static_cast<int>(rc))));
        break;
      }
      plain.remove_prefix(static_cast<size_t>(rc));
    }
    return !dead;
  }
};

tls_channel::tls_channel(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tls_channel::~tls_channel() = default;

std::unique_ptr<tls_channel> tls_channel::client(const std::string& host) {
  auto p = std::make_unique<impl>();
  p->is_client = true;
  p->host = host;
  p->setup(GNUTLS_CLIENT);
  if (auto rc = gnutls_credentials_set(p->session, GNUTLS_CRD_CERTIFICATE,
                                       client_credentials());
      rc < 0)
    fail("TLS credentials", rc);
  if (!host.empty() && !is_address(host))
    gnutls_server_name_set(p->session, GNUTLS_NAME_DNS, host.data(),
                           host.size());
  p->handshake(); // writes the ClientHello
  return std::unique_ptr<tls_channel>{new tls_channel{std::move(p)}};
}

std::unique_ptr<tls_channel>
tls_channel::server(std::shared_ptr<const tls_server_credentials> cred) {
  auto p = std::make_unique<impl>();
  p->server_cred = std::move(cred);
  p->setup(GNUTLS_SERVER);
  if (auto rc = gnutls_credentials_set(p->session, GNUTLS_CRD_CERTIFICATE,
                                       p->server_cred->native().cred);
      rc < 0)
    fail("TLS credentials", rc);
  gnutls_certificate_server_set_request(p->session, GNUTLS_CERT_IGNORE);
  return std::unique_ptr<tls_channel>{new tls_channel{std::move(p)}};
}

bool tls_channel::feed(const void* data, size_t size, std::string& plain) {
  auto& p = *impl_;
  if (p.dead)
    return false;
  p.in.append(static_cast<const char*>(data), size);
  if (!p.done) {
    p.handshake();
    if (p.done && !p.dead && !p.held.empty()) {
      auto held = std::move(p.held);
      p.held.clear();
      p.send(held);
    }
  }
  char buf[max_record];
  int warnings = 0;
  while (p.done && !p.dead && !p.closed_by_peer) {
    auto rc = gnutls_record_recv(p.session, buf, sizeof(buf));
    if (rc > 0) {
      plain.append(buf, static_cast<size_t>(rc));
    } else if (rc == 0) {
      p.closed_by_peer = true;
    } else if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
      // Also returned after a post-handshake message (a peer's session
      // ticket, a key update) with more records behind it: go on while
      // input is left.
      if (p.in_pos >= p.in.size()
          && gnutls_record_check_pending(p.session) == 0)
        break;
      if (++warnings > 64)
        break;
    } else if (gnutls_error_is_fatal(static_cast<int>(rc)) || ++warnings > 64) {
      p.die(fmt::format("TLS record rejected: {}",
                        gnutls_strerror(static_cast<int>(rc))));
    }
  }
  p.in.erase(0, p.in_pos);
  p.in_pos = 0;
  return !p.dead;
}

bool tls_channel::write(std::string_view plain) {
  auto& p = *impl_;
  if (p.dead)
    return false;
  if (!p.done) {
    p.held.append(plain);
    return true;
  }
  return p.send(plain);
}

void tls_channel::close() {
  auto& p = *impl_;
  if (p.done && !p.dead)
    gnutls_bye(p.session, GNUTLS_SHUT_WR);
}

std::string tls_channel::take_output() {
  std::string out;
  out.swap(impl_->out);
  return out;
}

bool tls_channel::established() const {
  return impl_->done && !impl_->dead;
}

bool tls_channel::peer_closed() const {
  return impl_->closed_by_peer;
}

const std::string& tls_channel::error() const {
  return impl_->error;
}

const std::string& tls_channel::peer_key_id() const {
  return impl_->peer_id;
}

const std::string& tls_channel::ca_problem() const {
  return impl_->ca_problem;
}

const std::string& tls_channel::channel_binding() const {
  return impl_->binding;
}

std::string bound_login_challenge(std::string_view channel_binding,
                                  std::string_view nonce,
                                  std::string_view node_id) {
  std::string out{"p2proxy-login-v2"};
  out.append(channel_binding);
  out.append(nonce);
  out.append(node_id);
  return out;
}

} // namespace p2proxy
