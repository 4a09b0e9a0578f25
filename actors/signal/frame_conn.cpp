#include "actors/signal/frame_conn.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/tcp_connect.hpp"
#include "proto/admin.pb.h"
#include "actors/common/endpoint.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"

namespace p2proxy {

namespace {

constexpr std::string_view conn_subject = "frame_conn";
/// Bytes a FRAME CONNECTION reads at a time.
constexpr size_t read_chunk = 4096;

struct frame_conn_state {
  caf::actor owner;
  uint64_t tag = 0;
  std::string peer;
  frame_decoder decoder;
  std::shared_ptr<tls_channel> tls;
  // conn_up goes out once the TLS handshake is done.
  bool up_sent = false;
  // The owner hears about the end of the connection once, whatever ends it.
  bool down_sent = false;
  // The socket's own address (IP text), for net_change_atom.
  std::string local_ip;

  static inline const char* name = "frame_conn";
};

using frame_conn_broker = caf::io::stateful_broker<frame_conn_state>;

std::string format_peer(const std::string& addr, uint16_t port) {
  if (addr.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", addr, port);
  return fmt::format("{}:{}", addr, port);
}

/// The IP (text) a connected socket's packets leave from; "" if unknown.
std::string local_ip_of(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (sa.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&sa)->sin_addr, text,
                sizeof text);
  } else if (sa.ss_family == AF_INET6) {
    auto& a6 = reinterpret_cast<sockaddr_in6*>(&sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a6))
      ::inet_ntop(AF_INET, &a6.s6_addr[12], text, sizeof text);
    else
      ::inet_ntop(AF_INET6, &a6, text, sizeof text);
  }
  return text;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Writes whatever TLS produced (records, alerts) to the socket.
void flush_tls(frame_conn_broker* self, caf::io::connection_handle hdl) {
  auto out = self->state.tls->take_output();
  if (out.empty())
    return;
  self->write(hdl, out.size(), out.data());
  self->flush(hdl);
}

// Tells the owner once and ends the broker; CAF closes the socket on exit.
// Before the handshake is done the owner has no connection yet: it hears
// conn_fail for the attempt (its tag) instead of conn_down.
void end_conn(frame_conn_broker* self, caf::io::connection_handle hdl,
              const std::string& reason) {
  auto& st = self->state;
  if (!st.down_sent) {
    st.down_sent = true;
    if (st.up_sent)
      self->send(st.owner, conn_down_atom::value, reason);
    else
      self->send(st.owner, conn_fail_atom::value, st.tag, reason);
  }
  flush_tls(self, hdl); // a TLS alert, if the failure produced one
  self->close(hdl);
  self->quit();
}

caf::behavior frame_conn_impl(frame_conn_broker* self,
                              caf::io::connection_handle hdl, caf::actor owner,
                              uint64_t tag, size_t max_frame,
                              std::shared_ptr<tls_channel> tls) {
  auto& st = self->state;
  st.owner = std::move(owner);
  st.tag = tag;
  st.tls = std::move(tls);
  st.decoder = frame_decoder{max_frame};
  st.peer = format_peer(self->remote_addr(hdl), self->remote_port(hdl));
  // With CAF's default multiplexer a connection handle's id is its socket;
  // signaling frames are small and latency-bound, so Nagle only hurts.
  set_nodelay(static_cast<int>(hdl.id()));
  st.local_ip = local_ip_of(static_cast<int>(hdl.id()));
  // CAF keeps a read buffer of this size for every connection: a server
  // holds tens of thousands of them, and a larger record only takes a few
  // more reads (tests/bench/signal_load).
  self->configure_read(hdl, caf::io::receive_policy::at_most(read_chunk));
  self->monitor(st.owner);
  self->set_down_handler([=](const caf::down_msg& dm) {
    if (dm.source != self->state.owner.address())
      return;
    // Nobody is left to read frames or hear about the end.
    self->state.down_sent = true;
    log::debug(conn_subject, "connection to {} closed: owner is gone",
               self->state.peer);
    self->flush(hdl);
    self->close(hdl);
    self->quit();
  });
  flush_tls(self, hdl); // a client's ClientHello
  return {
    [=](const caf::io::new_data_msg& msg) {
      auto& st = self->state;
      std::string plain;
      auto ok = st.tls->feed(msg.buf.data(), msg.buf.size(), plain);
      flush_tls(self, hdl);
      if (!ok) {
        log::debug(conn_subject, "connection with {} failed: {}", st.peer,
                   st.tls->error());
        end_conn(self, hdl, st.tls->error());
        return;
      }
      if (!st.tls->established())
        return;
      if (!st.up_sent) {
        st.up_sent = true;
        self->send(st.owner, conn_up_atom::value, st.tag, caf::actor{self},
                   st.peer, st.tls->peer_key_id(), st.tls->channel_binding(),
                   st.tls->ca_problem());
      }
      std::vector<std::string> frames;
      auto res = st.decoder.feed(plain.data(), plain.size(), frames);
      for (auto& f : frames)
        self->send(st.owner, frame_atom::value, std::move(f));
      if (res == frame_decoder::status::too_large) {
        auto reason = fmt::format("frame of {} bytes exceeds the {}-byte limit",
                                  st.decoder.bad_length(), max_frame);
        // Per connection, so debug: an unauthenticated flood must not
        // become a flood of log lines (the server counts refusals).
        log::debug(conn_subject, "connection with {} dropped: {}", st.peer,
                   reason);
        end_conn(self, hdl, reason);
        return;
      }
      if (st.tls->peer_closed())
        end_conn(self, hdl, "peer closed the connection");
    },
    [=](const caf::io::connection_closed_msg&) {
      auto& st = self->state;
      end_conn(self, hdl,
               st.up_sent ? "peer closed the connection"
                          : "connection closed during the TLS handshake");
    },
    [=](frame_atom, const std::string& payload) {
      auto& st = self->state;
      if (!st.tls->write(encode_frame(payload))) {
        end_conn(self, hdl, st.tls->error());
        return;
      }
      flush_tls(self, hdl);
    },
    [=](net_change_atom, const std::vector<std::string>&,
        const std::vector<std::string>& removed) {
      auto& st = self->state;
      if (st.local_ip.empty()
          || std::find(removed.begin(), removed.end(), st.local_ip)
               == removed.end())
        return;
      log::info(conn_subject,
                "connection to {} ends: its local address {} "
                "went away",
                st.peer, st.local_ip);
      end_conn(self, hdl, "local address " + st.local_ip + " went away");
    },
    [=](close_atom) {
      // close() is graceful in CAF: buffered bytes go out before the FIN.
      auto& st = self->state;
      st.down_sent = true;
      st.tls->close();
      flush_tls(self, hdl);
      self->close(hdl);
      self->quit();
    },
  };
}

caf::behavior adopt_fd(frame_conn_broker* self, int fd, caf::actor owner,
                       uint64_t tag, size_t max_frame,
                       std::shared_ptr<tls_channel> tls) {
  auto hdl = self->add_scribe(fd);
  return frame_conn_impl(self, hdl, std::move(owner), tag, max_frame,
                         std::move(tls));
}

// --- CONNECTOR ---------------------------------------------------------------

struct connector_state {
  static inline const char* name = "connector";
  uint64_t attempts = 0;
  // Shared with the workers, which report back from their own threads.
  std::shared_ptr<std::atomic<uint64_t>> failures
    = std::make_shared<std::atomic<uint64_t>>(0);
  std::shared_ptr<std::atomic<uint64_t>> in_flight
    = std::make_shared<std::atomic<uint64_t>>(0);
};

caf::behavior connector_impl(caf::stateful_actor<connector_state>* self,
                             std::chrono::milliseconds timeout,
                             size_t max_frame) {
  return {
    [=](connect_atom, uint64_t tag, const std::string& host, uint16_t port,
        const caf::actor& owner) {
      ++self->state.attempts;
      auto failures = self->state.failures;
      auto in_flight = self->state.in_flight;
      ++*in_flight;
      // A detached actor has a thread of its own, so the blocking resolve
      // and connect never stall the scheduler; it ends after one attempt.
      self->spawn<caf::detached>([=](caf::event_based_actor* worker) {
        std::string why;
        auto fd = tcp_connect(host, port, timeout, why);
        auto target = endpoint{host, port}.to_string();
        std::shared_ptr<tls_channel> tls;
        if (fd >= 0) {
          try {
            tls = tls_channel::client(host);
          } catch (const std::exception& e) {
            ::close(fd);
            fd = -1;
            why = e.what();
          }
        }
        if (fd < 0) {
          ++*failures;
          log::debug("connector", "connect to {} failed: {}", target, why);
          caf::anon_send(owner, conn_fail_atom::value, tag,
                         fmt::format("connect to {} failed: {}", target, why));
        } else {
          spawn_frame_conn(worker->system(), fd, owner, tag, max_frame,
                           std::move(tls));
        }
        --*in_flight;
        worker->quit();
      });
    },
    [=](status_atom) {
      admin::ActorStatus as;
      as.set_name(connector_state::name);
      as.set_state(*self->state.in_flight > 0 ? "connecting" : "idle");
      auto& f = *as.mutable_fields();
      f["attempts"] = std::to_string(self->state.attempts);
      f["failures"] = std::to_string(self->state.failures->load());
      f["timeout_ms"] = std::to_string(timeout.count());
      return as.SerializeAsString();
    },
  };
}

} // namespace

caf::actor spawn_frame_conn(caf::actor_system& sys, int fd, caf::actor owner,
                            uint64_t tag, size_t max_frame,
                            std::shared_ptr<tls_channel> tls) {
  return sys.middleman().spawn_broker(adopt_fd, fd, std::move(owner), tag,
                                      max_frame, std::move(tls));
}

caf::actor fork_frame_conn(caf::io::broker* acceptor,
                           caf::io::connection_handle hdl, caf::actor owner,
                           uint64_t tag, size_t max_frame,
                           std::shared_ptr<tls_channel> tls) {
  return acceptor->fork(frame_conn_impl, hdl, std::move(owner), tag, max_frame,
                        std::move(tls));
}

caf::actor spawn_connector(caf::actor_system& sys,
                           std::chrono::milliseconds timeout,
                           size_t max_frame) {
  return sys.spawn(connector_impl, timeout, max_frame);
}

bool peer_already_gone(caf::io::connection_handle hdl) {
  // With CAF's default multiplexer a connection handle's id is its socket.
  pollfd p{static_cast<int>(hdl.id()), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0
         && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

} // namespace p2proxy
