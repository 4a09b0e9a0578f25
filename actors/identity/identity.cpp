#include "actors/identity/identity.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

namespace p2proxy {

namespace {

// GnuTLS hands out buffers it allocated; this frees them on every path.
// Key material is wiped first because the PEM export holds the private key.
struct owned_datum {
  gnutls_datum_t d{nullptr, 0};
  ~owned_datum() {
    if (d.data != nullptr) {
      gnutls_memset(d.data, 0, d.size);
      gnutls_free(d.data);
    }
  }
  std::string str() const {
    return std::string{reinterpret_cast<const char*>(d.data), d.size};
  }
};

struct pubkey_ptr {
  gnutls_pubkey_t k = nullptr;
  ~pubkey_ptr() {
    if (k != nullptr)
      gnutls_pubkey_deinit(k);
  }
};

struct crt_ptr {
  gnutls_x509_crt_t p = nullptr;
  ~crt_ptr() {
    if (p != nullptr)
      gnutls_x509_crt_deinit(p);
  }
};

struct x509_key_ptr {
  gnutls_x509_privkey_t k = nullptr;
  ~x509_key_ptr() {
    if (k != nullptr)
      gnutls_x509_privkey_deinit(k);
  }
};

gnutls_datum_t as_datum(std::string_view s) {
  // GnuTLS takes non-const pointers but does not write through them here.
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
          static_cast<unsigned>(s.size())};
}

[[noreturn]] void fail(const char* what, int rc) {
  throw identity_error(fmt::format("{}: {}", what, gnutls_strerror(rc)));
}

std::string keygen_hint(const std::string& path) {
  return fmt::format("create a key with `p2proxy keygen --out {}`", path);
}

// Zeroes a string that held key material before its memory is released.
struct wiped_string {
  std::string s;
  ~wiped_string() {
    if (!s.empty())
      gnutls_memset(s.data(), 0, s.size());
  }
};

} // namespace

// -- helpers ------------------------------------------------------------------

std::string base32_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out.push_back(alphabet[(buffer >> (bits - 5)) & 0x1f]);
      bits -= 5;
    }
  }
  if (bits > 0)
    out.push_back(alphabet[(buffer << (5 - bits)) & 0x1f]);
  return out;
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[32];
  auto rc
    = gnutls_hash_fast(GNUTLS_DIG_SHA256, bytes.data(), bytes.size(), digest);
  if (rc < 0)
    fail("sha256", rc);
  return std::string{reinterpret_cast<char*>(digest), sizeof(digest)};
}

std::string node_id_from_spki(std::string_view spki_der) {
  return base32_encode(sha256(spki_der));
}

bool looks_like_node_id(std::string_view text) {
  if (text.size() != 52)
    return false;
  for (char c : text)
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')))
      return false;
  return true;
}

bool verify_signature(std::string_view spki_der, std::string_view data,
                      std::string_view signature) {
  if (spki_der.empty() || signature.empty())
    return false;
  try {
    pubkey_ptr pub;
    if (gnutls_pubkey_init(&pub.k) < 0)
      return false;
    auto spki = as_datum(spki_der);
    if (gnutls_pubkey_import(pub.k, &spki, GNUTLS_X509_FMT_DER) < 0)
      return false;
    auto pk = static_cast<gnutls_pk_algorithm_t>(
      gnutls_pubkey_get_pk_algorithm(pub.k, nullptr));
    gnutls_sign_algorithm_t algo;
    switch (pk) {
      case GNUTLS_PK_EDDSA_ED25519:
        algo = GNUTLS_SIGN_EDDSA_ED25519;
        break;
      case GNUTLS_PK_EDDSA_ED448:
        algo = GNUTLS_SIGN_EDDSA_ED448;
        break;
      default:
        algo = gnutls_pk_to_sign(pk, GNUTLS_DIG_SHA256);
        break;
    }
    if (algo == GNUTLS_SIGN_UNKNOWN)
      return false;
    auto msg = as_datum(data);
    auto sig = as_datum(signature);
    return gnutls_pubkey_verify_data2(pub.k, algo, 0, &msg, &sig) >= 0;
  } catch (...) {
    return false;
  }
}

std::string login_challenge(std::string_view nonce, std::string_view node_id) {
  std::string out{"p2proxy-login-v1"};
  out.append(nonce);
  out.append(node_id);
  return out;
}

std::string certificate_key_id(std::string_view cert_der) {
  crt_ptr crt;
  pubkey_ptr pub;
  owned_datum spki;
  auto der = as_datum(cert_der);
  if (gnutls_x509_crt_init(&crt.p) < 0
      || gnutls_x509_crt_import(crt.p, &der, GNUTLS_X509_FMT_DER) < 0
      || gnutls_pubkey_init(&pub.k) < 0
      || gnutls_pubkey_import_x509(pub.k, crt.p, 0) < 0
      || gnutls_pubkey_export2(pub.k, GNUTLS_X509_FMT_DER, &spki.d) < 0)
    return {};
  return node_id_from_spki(spki.str());
}

void add_self_signed_certificate(const identity& me,
                                 gnutls_certificate_credentials_st* cred) {
  auto check = [](const char* what, int rc) {
    if (rc < 0)
      fail(what, rc);
  };
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
  // Dates are not checked by either side (the key is pinned by its id);
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
  check("pubkey_init", gnutls_pubkey_init(&pub.k));
  check("pubkey_import_privkey",
        gnutls_pubkey_import_privkey(pub.k, key, 0, 0));
  check("x509_crt_set_pubkey", gnutls_x509_crt_set_pubkey(crt.p, pub.k));
  check("x509_crt_set_key_usage",
        gnutls_x509_crt_set_key_usage(crt.p, GNUTLS_KEY_DIGITAL_SIGNATURE));
  check("x509_crt_set_basic_constraints",
        gnutls_x509_crt_set_basic_constraints(crt.p, 0, -1));
  // Self-signed: issuer = subject; Ed25519 fixes its own digest.
  check("signing the certificate",
        gnutls_x509_crt_privkey_sign(crt.p, crt.p, key, GNUTLS_DIG_UNKNOWN, 0));
  // The credentials keep their own copies of certificate and key.
  x509_key_ptr x509;
  check("privkey_export_x509", gnutls_privkey_export_x509(key, &x509.k));
  check("certificate_set_x509_key",
        gnutls_certificate_set_x509_key(cred, &crt.p, 1, x509.k));
}

// -- identity
// -------------------------------------------------------------------

struct identity::impl {
  gnutls_privkey_t key = nullptr;
  std::string spki;
  std::string id;

  ~impl() {
    if (key != nullptr)
      gnutls_privkey_deinit(key);
  }

  // Derives the public half; every constructor path ends here.
  void finish() {
    pubkey_ptr pub;
    if (auto rc = gnutls_pubkey_init(&pub.k); rc < 0)
      fail("pubkey_init", rc);
    if (auto rc = gnutls_pubkey_import_privkey(pub.k, key, 0, 0); rc < 0)
      fail("pubkey_import_privkey", rc);
    owned_datum der;
    if (auto rc = gnutls_pubkey_export2(pub.k, GNUTLS_X509_FMT_DER, &der.d);
        rc < 0)
      fail("pubkey_export", rc);
    spki = der.str();
    id = node_id_from_spki(spki);
  }
};

identity::identity(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

identity::~identity() = default;
identity::identity(identity&&) noexcept = default;
identity& identity::operator=(identity&&) noexcept = default;

identity identity::generate() {
  auto p = std::make_unique<impl>();
  if (auto rc = gnutls_privkey_init(&p->key); rc < 0)
    fail("privkey_init", rc);
  if (auto rc = gnutls_privkey_generate2(p->key, GNUTLS_PK_EDDSA_ED25519, 256,
                                         0, nullptr, 0);
      rc < 0)
    fail("generating an Ed25519 key", rc);
  p->finish();
  return identity{std::move(p)};
}

identity identity::load(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    auto err = errno;
    if (err == ENOENT)
      throw identity_error(
        fmt::format("{}: no such key file; {}", path, keygen_hint(path)));
    throw identity_error(
      fmt::format("{}: cannot open key file: {}", path, std::strerror(err)));
  }
  // Checked on the open descriptor so a swap between check and read is moot.
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw identity_error(
      fmt::format("{}: not a regular file; {}", path, keygen_hint(path)));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    ::close(fd);
    throw identity_error(fmt::format(
      "{}: key file is accessible by group or others (mode {:04o}); "
      "run `chmod 600 {}`",
      path, st.st_mode & 07777, path));
  }
  wiped_string pem;
  // A PEM Ed25519 key is ~120 bytes; the cap keeps a wrong path from
  // swallowing a huge file.
  constexpr size_t max_size = 64 * 1024;
  char buf[4096];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto err = errno;
      ::close(fd);
      throw identity_error(
        fmt::format("{}: cannot read key file: {}", path, std::strerror(err)));
    }
    if (n == 0)
      break;
    pem.s.append(buf, static_cast<size_t>(n));
    if (pem.s.size() > max_size)
      break;
  }
  gnutls_memset(buf, 0, sizeof(buf));
  ::close(fd);
  auto bad_key = [&](const std::string& why) {
    return identity_error(fmt::format(
      "{}: not a usable p2proxy key ({}); expected an Ed25519 key in "
      "PKCS#8 PEM; move it away and {}",
      path, why, keygen_hint(path)));
  };
  if (pem.s.size() > max_size)
    throw bad_key("file too large");
  x509_key_ptr x509;
  if (auto rc = gnutls_x509_privkey_init(&x509.k); rc < 0)
    fail("x509_privkey_init", rc);
  auto data = as_datum(pem.s);
  if (auto rc = gnutls_x509_privkey_import_pkcs8(
        x509.k, &data, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN);
      rc < 0)
    throw bad_key(gnutls_strerror(rc));
  if (gnutls_x509_privkey_get_pk_algorithm(x509.k) != GNUTLS_PK_EDDSA_ED25519)
    throw bad_key("not an Ed25519 key");
  auto p = std::make_unique<impl>();
  if (auto rc = gnutls_privkey_init(&p->key); rc < 0)
    fail("privkey_init", rc);
  // COPY keeps `x509` owned by us, so both deinit paths stay simple.
  if (auto rc
      = gnutls_privkey_import_x509(p->key, x509.k, GNUTLS_PRIVKEY_IMPORT_COPY);
      rc < 0)
    throw bad_key(gnutls_strerror(rc));
  p->finish();
  return identity{std::move(p)};
}

identity identity::load_or_create(const std::string& path, bool* created) {
  if (created != nullptr)
    *created = false;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    auto id = generate();
    try {
      id.save(path);
      if (created != nullptr)
        *created = true;
      return id;
    } catch (const identity_error&) {
      // Another process may have created it since the stat; theirs wins.
      if (::stat(path.c_str(), &st) != 0)
        throw;
    }
  }
  return load(path);
}

void identity::save(const std::string& path) const {
  x509_key_ptr x509;
  if (auto rc = gnutls_privkey_export_x509(impl_->key, &x509.k); rc < 0)
    fail("privkey_export_x509", rc);
  owned_datum pem;
  if (auto rc = gnutls_x509_privkey_export2_pkcs8(
        x509.k, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN, &pem.d);
      rc < 0)
    fail("exporting the key as PKCS#8", rc);
  // O_EXCL: an existing key is somebody's identity; never replace it.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    auto err = errno;
    if (err == EEXIST)
      throw identity_error(fmt::format(
        "{}: file exists; refusing to overwrite a key (remove it first if "
        "you really mean to replace this node's identity)",
        path));
    throw identity_error(
      fmt::format("{}: cannot create key file: {}", path, std::strerror(err)));
  }
  // The umask can only clear bits, but be explicit about the contract.
  ::fchmod(fd, 0600);
  size_t done = 0;
  while (done < pem.d.size) {
    auto n = ::write(fd, pem.d.data + done, pem.d.size - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      auto err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      throw identity_error(
        fmt::format("{}: cannot write key file: {}", path, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  auto synced = ::fsync(fd) == 0;
  auto err = errno;
  auto closed = ::close(fd) == 0;
  if (synced && !closed)
    err = errno;
  if (!synced || !closed) {
    ::unlink(path.c_str());
    throw identity_error(
      fmt::format("{}: cannot write key file: {}", path, std::strerror(err)));
  }
}

const std::string& identity::node_id() const {
  return impl_->id;
}

const std::string& identity::public_key() const {
  return impl_->spki;
}

gnutls_privkey_st* identity::native_key() const {
  return impl_->key;
}

std::string identity::sign(std::string_view data) const {
  auto msg = as_datum(data);
  owned_datum sig;
  if (auto rc = gnutls_privkey_sign_data2(impl_->key, GNUTLS_SIGN_EDDSA_ED25519,
                                          0, &msg, &sig.d);
      rc < 0)
    fail("signing", rc);
  return sig.str();
}

} // namespace p2proxy
