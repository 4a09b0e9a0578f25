// A raw signaling client over TLS 1.3 for process-level tests: GnuTLS used
// directly (not the product's TLS CHANNEL), on a socket opened by raw_conn
// (tests/e2e/process.hpp), with the same frame-level interface. It trusts
// any server certificate and reports the server's key id and the session's
// channel binding, which a Login must sign. Every wait has a deadline.
#pragma once

#include <gnutls/gnutls.h>

#include <poll.h>

#include <chrono>
#include <string>
#include <vector>

#include "actors/common/frame_codec.hpp"
#include "actors/identity/identity.hpp"
#include "tests/e2e/process.hpp"

namespace p2proxy::e2e {

class tls_conn {
public:
  using result = raw_conn::result;

  tls_conn() = default;
  tls_conn(const tls_conn&) = delete;
  tls_conn& operator=(const tls_conn&) = delete;
  ~tls_conn() {
    if (session_ != nullptr)
      gnutls_deinit(session_);
    if (cred_ != nullptr)
      gnutls_certificate_free_credentials(cred_);
  }

  /// Connects to 127.0.0.1:port from `source` and runs the TLS handshake
  /// (within 10 s); "" on success, else why not.
  std::string connect(uint16_t port, const std::string& source) {
    auto why = tcp_.connect(port, source);
    if (!why.empty())
      return why;
    int fd = tcp_.fd();
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    gnutls_certificate_allocate_credentials(&cred_);
    gnutls_init(&session_, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS);
    gnutls_priority_set_direct(session_, "NORMAL:-VERS-ALL:+VERS-TLS1.3",
                               nullptr);
    gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, cred_);
    gnutls_transport_set_int(session_, fd);
    auto deadline = steady::now() + 10s;
    for (;;) {
      auto rc = gnutls_handshake(session_);
      if (rc == GNUTLS_E_SUCCESS)
        break;
      if (gnutls_error_is_fatal(rc))
        return std::string{"TLS handshake: "} + gnutls_strerror(rc);
      if (!wait_io(deadline))
        return "TLS handshake: timeout";
    }
    unsigned char buf[32];
    const char label[] = "EXPORTER-Channel-Binding";
    gnutls_prf_rfc5705(session_, sizeof(label) - 1, label, 0, nullptr,
                       sizeof(buf), reinterpret_cast<char*>(buf));
    binding_.assign(reinterpret_cast<char*>(buf), sizeof(buf));
    unsigned n = 0;
    auto* certs = gnutls_certificate_get_peers(session_, &n);
    if (certs != nullptr && n > 0)
      server_id_ = certificate_key_id(
        {reinterpret_cast<const char*>(certs[0].data), certs[0].size});
    return {};
  }

  /// The session's RFC 9266 tls-exporter value.
  const std::string& binding() const {
    return binding_;
  }
  /// The id of the key the server presented.
  const std::string& server_id() const {
    return server_id_;
  }

  /// Sends `bytes` as application data; false if the peer has gone.
  bool send_raw(const std::string& bytes) {
    size_t off = 0;
    auto deadline = steady::now() + 10s;
    while (off < bytes.size()) {
      auto rc = gnutls_record_send(session_, bytes.data() + off,
                                   std::min<size_t>(bytes.size() - off, 16384));
      if (rc > 0) {
        off += static_cast<size_t>(rc);
        continue;
      }
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
        if (!wait_io(deadline)) {
          last_error_ = "send timeout";
          return false;
        }
        continue;
      }
      last_error_ = gnutls_strerror(static_cast<int>(rc));
      return false;
    }
    return true;
  }

  bool send_frame(const std::string& payload) {
    return send_raw(encode_frame(payload));
  }

  /// As raw_conn::read_frame, over TLS; a TLS error counts as closed.
  result read_frame(std::chrono::milliseconds timeout, std::string& payload) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      if (take_frame(buf_, payload))
        return result::frame;
      if (eof_)
        return result::closed;
      char tmp[16384];
      auto rc = gnutls_record_recv(session_, tmp, sizeof(tmp));
      if (rc > 0) {
        buf_.append(tmp, static_cast<size_t>(rc));
      } else if (rc == 0) {
        eof_ = true;
        last_error_ = "end of stream";
      } else if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
        if (!wait_io(deadline))
          return result::timeout;
      } else if (gnutls_error_is_fatal(static_cast<int>(rc))) {
        eof_ = true;
        // A reset or an EOF without close_notify: the server closed.
        last_error_ = gnutls_strerror(static_cast<int>(rc));
      }
    }
  }

  bool wait_closed(std::chrono::milliseconds timeout,
                   std::vector<std::string>* frames = nullptr) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - steady::now());
      if (left.count() < 0)
        left = 0ms;
      std::string payload;
      switch (read_frame(left, payload)) {
        case result::frame:
          if (frames != nullptr)
            frames->push_back(std::move(payload));
          break;
        case result::closed:
          return true;
        case result::timeout:
          return false;
      }
    }
  }

  const std::string& last_error() const {
    return last_error_;
  }

private:
  // Waits until the socket is ready for what GnuTLS needs; false at the
  // deadline.
  bool wait_io(steady::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - steady::now());
    if (left.count() <= 0)
      return false;
    short events
      = gnutls_record_get_direction(session_) == 1 ? POLLOUT : POLLIN;
    pollfd pfd{tcp_.fd(), events, 0};
    ::poll(&pfd, 1, static_cast<int>(left.count()));
    return true;
  }

  raw_conn tcp_;
  gnutls_certificate_credentials_t cred_ = nullptr;
  gnutls_session_t session_ = nullptr;
  std::string binding_;
  std::string server_id_;
  std::string buf_;
  bool eof_ = false;
  std::string last_error_;
};

} // namespace p2proxy::e2e
