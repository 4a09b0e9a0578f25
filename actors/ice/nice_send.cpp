#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include <algorithm>

#include "actors/actors.hpp"
#include "actors/ice/nice_driver_impl.hpp"

namespace p2proxy::ice_detail {

namespace {

/// Segments in one GSO send at most, and their bytes (the kernel takes up
/// to 64 segments in one UDP datagram of at most 64 KiB).
constexpr size_t max_gso_segments = 64;
constexpr size_t max_gso_bytes = 65000;

enum class direct_result { sent, dropped, refused };

/// Kernel buffer a direct pair's socket asks for each way. Linux's default
/// (208 KiB) holds about 90 datagrams: at gigabit rates a burst that
/// arrives while the ICE thread is busy overflows it, and QUIC sees the
/// drops as loss (5 % in the lab at 2.3 Gbit/s).
constexpr int socket_buffer_bytes = 4 * 1024 * 1024;

/// Send-buffer room data never takes on a direct pair: libnice's STUN
/// checks and answers share the socket, and a full buffer would drop them
/// (EAGAIN) while data keeps it full. A send batch (at most 256 datagrams,
/// under 400 KiB as the kernel counts them) fits in it, so a check always
/// finds half of it free.
constexpr int stun_headroom_bytes = 1024 * 1024;

/// How much of the send buffer data may fill: SO_SNDBUF (the kernel's own
/// count, overhead included) less stun_headroom_bytes; 0 when unknown.
int data_limit(int fd) {
  int got = 0;
  socklen_t len = sizeof got;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) != 0)
    return 0;
  return got > 2 * stun_headroom_bytes ? got - stun_headroom_bytes : got / 2;
}

/// Grows the socket's buffers to socket_buffer_bytes: beyond the sysctl
/// limit when the process may (CAP_NET_ADMIN), else up to it. Says so once
/// per agent when the limit holds it lower.
void grow_buffers(int fd, uint64_t tag) {
  struct which {
    int opt, force;
    const char* name;
    const char* sysctl;
  };
  for (auto w :
       {which{SO_RCVBUF, SO_RCVBUFFORCE, "receive", "net.core.rmem_max"},
        which{SO_SNDBUF, SO_SNDBUFFORCE, "send", "net.core.wmem_max"}}) {
    int got = 0;
    socklen_t len = sizeof got;
    // (The kernel reports twice what was set: its bookkeeping overhead.)
    if (::getsockopt(fd, SOL_SOCKET, w.opt, &got, &len) == 0
        && got >= socket_buffer_bytes)
      continue;
    int want = socket_buffer_bytes;
    if (::setsockopt(fd, SOL_SOCKET, w.force, &want, sizeof want) != 0)
      ::setsockopt(fd, SOL_SOCKET, w.opt, &want, sizeof want);
    len = sizeof got;
    if (::getsockopt(fd, SOL_SOCKET, w.opt, &got, &len) == 0
        && got < socket_buffer_bytes)
      log::info(subject,
                "agent {}: the UDP {} buffer is {} KiB, not {} KiB; "
                "at high rates bursts overflow it (raise {})",
                tag, w.name, got / 2048, socket_buffer_bytes / 1024, w.sysctl);
  }
}

/// One sendmsg of xs[i, j): with UDP_SEGMENT when more than one (all as
/// large as the first, the last maybe smaller).
direct_result send_run(agent_core& c, const std::vector<std::string>& xs,
                       size_t i, size_t j) {
  iovec iov[max_gso_segments];
  for (size_t k = i; k < j; ++k)
    iov[k - i] = iovec{const_cast<char*>(xs[k].data()), xs[k].size()};
  msghdr mh{};
  mh.msg_name = &c.direct_to;
  mh.msg_namelen = c.direct_to_len;
  mh.msg_iov = iov;
  mh.msg_iovlen = j - i;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
  if (j - i > 1) {
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    auto* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    auto seg = static_cast<uint16_t>(xs[i].size());
    std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  for (int tries = 0; tries < 2; ++tries) {
    if (::sendmsg(c.direct_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
      return direct_result::sent;
    if (errno != EINTR)
      break;
  }
  switch (errno) {
    case EAGAIN:
    case ENOBUFS:
    case ECONNREFUSED: // an ICMP error of an earlier datagram
    case EHOSTUNREACH:
    case ENETUNREACH:
      return direct_result::dropped; // like UDP: QUIC recovers
    default:
      return j - i > 1 ? direct_result::refused : direct_result::dropped;
  }
}

} // namespace

void nice_driver::select_direct(agent_core& c, const NiceCandidate& remote) {
  int fd = -1;
  if (GSocket* gs = nice_agent_get_selected_socket(c.agent, c.stream, 1)) {
    // Our own descriptor of the same socket: libnice may close its own.
    fd = ::fcntl(g_socket_get_fd(gs), F_DUPFD_CLOEXEC, 0);
    g_object_unref(gs);
    if (fd >= 0)
      grow_buffers(fd, c.tag);
  }
  int old = -1;
  bool direct = false;
  {
    std::lock_guard<std::mutex> guard{c.send_mtx};
    old = std::exchange(c.direct_fd, -1);
    if (fd >= 0 && !c.gso_failed) {
      c.direct_fd = fd;
      c.direct_to = {};
      nice_address_copy_to_sockaddr(&remote.addr,
                                    reinterpret_cast<sockaddr*>(&c.direct_to));
      c.direct_to_len = remote.addr.s.addr.sa_family == AF_INET6
                          ? sizeof(sockaddr_in6)
                          : sizeof(sockaddr_in);
      c.direct_data_limit = data_limit(fd);
      fd = -1;
      direct = true;
    }
  }
  log::debug(subject, "agent {} sends {}", c.tag,
             direct ? "on the selected pair's socket, with UDP GSO"
                    : "through libnice");
  if (old >= 0)
    ::close(old);
  if (fd >= 0)
    ::close(fd);
}

void nice_driver::send(agent_core& c, const std::vector<std::string>& xs) {
  std::lock_guard<std::mutex> guard{c.send_mtx};
  if (c.send_agent == nullptr)
    return; // not open yet, or closed: dropped like UDP
  size_t i = 0;
  size_t dropped = 0;
  if (c.direct_fd >= 0 && c.direct_data_limit > 0) {
    // Data leaves the last part of the send buffer to STUN: a batch that
    // finds the queue that full is dropped like UDP (QUIC's congestion
    // control sees the loss) instead of crowding out the checks.
    int queued = 0;
    if (::ioctl(c.direct_fd, SIOCOUTQ, &queued) == 0
        && queued >= c.direct_data_limit) {
      c.send_drops += xs.size();
      log::emit(log::level::trace, subject,
                "agent {} drops {} datagrams: {} bytes queued, the rest is "
                "kept for STUN",
                c.tag, xs.size(), queued);
      return;
    }
  }
  while (c.direct_fd >= 0 && i < xs.size()) {
    // A run: datagrams as large as the first, then maybe one smaller.
    size_t seg = xs[i].size();
    size_t j = i + 1;
    size_t bytes = seg;
    while (j < xs.size() && j - i < max_gso_segments && xs[j].size() <= seg
           && bytes + xs[j].size() <= max_gso_bytes) {
      bytes += xs[j].size();
      if (xs[j++].size() < seg)
        break;
    }
    auto r = send_run(c, xs, i, j);
    if (r == direct_result::refused) {
      // No GSO here (an old kernel, a device without checksum offload):
      // libnice sends from now on.
      log::info(subject,
                "agent {} cannot send with UDP GSO ({}); sends "
                "one datagram at a time",
                c.tag, std::strerror(errno));
      c.gso_failed = true;
      ::close(std::exchange(c.direct_fd, -1));
      break;
    }
    if (r == direct_result::dropped)
      dropped += j - i;
    i = j;
  }
  if (i < xs.size()) {
    auto n = xs.size() - i;
    std::vector<GOutputVector> bufs(n);
    std::vector<NiceOutputMessage> msgs(n);
    for (size_t k = 0; k < n; ++k) {
      bufs[k] = GOutputVector{xs[i + k].data(), xs[i + k].size()};
      msgs[k] = NiceOutputMessage{&bufs[k], 1};
    }
    GError* err = nullptr;
    auto sent = nice_agent_send_messages_nonblocking(
      c.send_agent, c.stream, 1, msgs.data(), n, nullptr, &err);
    if (err != nullptr)
      g_error_free(err);
    dropped += n - (sent < 0 ? size_t{0} : static_cast<size_t>(sent));
  }
  if (dropped > 0) {
    // Like UDP: the caller's protocol (QUIC) recovers.
    c.send_drops += dropped;
    log::emit(log::level::trace, subject, "agent {} drops {} datagrams", c.tag,
              dropped);
  }
}

} // namespace p2proxy::ice_detail
