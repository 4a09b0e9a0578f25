#include "actors/common/half_close.hpp"

#include <cerrno>

#include <sys/socket.h>

#include <caf/io/middleman.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/io/network/doorman_impl.hpp>
#include <caf/io/network/native_socket.hpp>
#include <caf/io/network/stream_impl.hpp>
#include <caf/io/scribe.hpp>
#include <caf/policy/tcp.hpp>
#include <caf/send.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"

namespace p2proxy {

namespace {

namespace net = caf::io::network;

class half_close_scribe;

/// CAF's TCP policy, except that recv() == 0 (the peer's FIN) is not a
/// failure: the scribe is told, stops reading, and keeps writing.
struct eof_aware_tcp : caf::policy::tcp {
  explicit eof_aware_tcp(half_close_scribe* owner) : owner(owner) {}

  net::rw_state read_some(size_t& result, net::native_socket fd, void* buf,
                          size_t len);

  net::rw_state write_some(size_t& result, net::native_socket fd,
                           const void* buf, size_t len);

  half_close_scribe* owner;
};

class half_close_scribe : public caf::io::scribe {
public:
  half_close_scribe(net::default_multiplexer& mx, net::native_socket fd)
    : scribe(net::conn_hdl_from_socket(fd)), stream_(mx, fd, this) {
    (void)net::keepalive(fd, true);
  }

  void configure_read(caf::io::receive_policy::config config) override {
    stream_.configure_read(config);
    if (!launched_) {
      launched_ = true;
      stream_.start(this);
    }
  }

  void ack_writes(bool enable) override {
    stream_.ack_writes(enable);
  }

  std::vector<char>& wr_buf() override {
    return stream_.wr_buf();
  }

  std::vector<char>& rd_buf() override {
    return stream_.rd_buf();
  }

  void graceful_shutdown() override {
    // After reset_on_close() (SO_LINGER 0): no FIN first, so the peer sees
    // only the reset when the socket is closed.
    linger l{0, 0};
    socklen_t len = sizeof l;
    bool abort
      = ::getsockopt(stream_.fd(), SOL_SOCKET, SO_LINGER, &l, &len) == 0
        && l.l_onoff != 0 && l.l_linger == 0;
    if (!abort)
      stream_.graceful_shutdown();
    detach(&stream_.backend(), false);
  }

  void flush() override {
    stream_.flush(this);
  }

  std::string addr() const override {
    auto x = net::remote_addr_of_fd(stream_.fd());
    return x ? *x : std::string{};
  }

  uint16_t port() const override {
    auto x = net::remote_port_of_fd(stream_.fd());
    return x ? *x : 0;
  }

  void add_to_loop() override {
    if (!eof_)
      stream_.activate(this);
  }

  void remove_from_loop() override {
    stream_.passivate();
  }

  /// The peer no longer reads (our write met EPIPE / ECONNRESET): tell the
  /// broker once; what it still had sent can be read to its end.
  void on_write_lost() {
    if (write_lost_)
      return;
    write_lost_ = true;
    if (auto p = parent())
      caf::anon_send(caf::actor_cast<caf::actor>(p), local_lost_atom::value,
                     hdl());
  }

  /// The peer sent FIN: stop reading, tell the broker once.
  void on_eof() {
    stream_.passivate();
    if (eof_)
      return;
    eof_ = true;
    if (auto p = parent())
      caf::anon_send(caf::actor_cast<caf::actor>(p), local_eof_atom::value,
                     hdl());
  }

private:
  bool launched_ = false;
  bool eof_ = false;
  bool write_lost_ = false;
  net::stream_impl<eof_aware_tcp> stream_;
};

net::rw_state eof_aware_tcp::read_some(size_t& result, net::native_socket fd,
                                       void* buf, size_t len) {
  result = 0;
  auto n = ::recv(fd, buf, len, MSG_NOSIGNAL);
  if (n > 0) {
    result = static_cast<size_t>(n);
    return net::rw_state::success;
  }
  if (n == 0) {
    owner->on_eof();
    return net::rw_state::indeterminate; // ends this read round
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return net::rw_state::success; // nothing now
  return net::rw_state::failure;   // reset or error: the connection is over
}

net::rw_state eof_aware_tcp::write_some(size_t& result, net::native_socket fd,
                                        const void* buf, size_t len) {
  result = 0;
  auto n = ::send(fd, buf, len, MSG_NOSIGNAL);
  if (n >= 0) {
    result = static_cast<size_t>(n);
    return net::rw_state::success;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return net::rw_state::success;
  if (errno == EPIPE || errno == ECONNRESET) {
    // The peer closed its socket: nobody reads what we write (drop it), but
    // CAF would end the whole connection on a write failure, and the bytes
    // the peer sent before closing are still to be read.
    result = len;
    owner->on_write_lost();
    return net::rw_state::success;
  }
  return net::rw_state::failure;
}

/// CAF's doorman, except that accepted connections get half_close_scribes.
class half_close_doorman : public net::doorman_impl {
public:
  using doorman_impl::doorman_impl;

  bool new_connection() override {
    if (detached())
      return false;
    auto& dm = acceptor_.backend();
    caf::io::scribe_ptr sptr
      = caf::make_counted<half_close_scribe>(dm, acceptor_.accepted_socket());
    auto hdl = sptr->hdl();
    parent()->add_scribe(std::move(sptr));
    return doorman::new_connection(&dm, hdl);
  }
};

net::default_multiplexer& backend_of(caf::actor_system& sys) {
  return static_cast<net::default_multiplexer&>(sys.middleman().backend());
}

} // namespace

caf::io::connection_handle add_half_close_scribe(caf::io::abstract_broker* self,
                                                 int fd) {
  caf::io::scribe_ptr ptr
    = caf::make_counted<half_close_scribe>(backend_of(self->system()), fd);
  auto hdl = ptr->hdl();
  self->add_scribe(std::move(ptr));
  return hdl;
}

caf::expected<caf::io::doorman_ptr>
new_half_close_doorman(caf::actor_system& sys, uint16_t port,
                       const std::string& host) {
  auto fd = net::new_tcp_acceptor_impl(port, host.c_str(), true);
  if (!fd)
    return std::move(fd.error());
  caf::io::doorman_ptr ptr
    = caf::make_counted<half_close_doorman>(backend_of(sys), *fd);
  return ptr;
}

void shutdown_write(caf::io::connection_handle hdl) {
  ::shutdown(static_cast<int>(hdl.id()), SHUT_WR);
}

void reset_on_close(caf::io::connection_handle hdl) {
  linger l{1, 0};
  ::setsockopt(static_cast<int>(hdl.id()), SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

} // namespace p2proxy
