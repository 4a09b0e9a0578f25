#include "actors/ice/network_watch.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <set>

#include <caf/send.hpp>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"

namespace p2proxy {

namespace {

constexpr const char* subject = "network";

using steady = std::chrono::steady_clock;

std::vector<interface_address> chosen(const network_watch_settings& s) {
  return choose_interfaces(list_interfaces(), s.include, s.exclude).used;
}

std::vector<std::string> ips(const std::vector<interface_address>& xs) {
  std::vector<std::string> out;
  out.reserve(xs.size());
  for (auto& a : xs)
    out.push_back(a.ip);
  return out;
}

} // namespace

address_diff diff_addresses(const std::vector<interface_address>& before,
                            const std::vector<interface_address>& now) {
  std::set<std::string> old_ips, new_ips;
  for (auto& a : before)
    old_ips.insert(a.ip);
  for (auto& a : now)
    new_ips.insert(a.ip);
  address_diff d;
  for (auto& a : now)
    if (old_ips.count(a.ip) == 0)
      d.added.push_back(a);
  for (auto& a : before)
    if (new_ips.count(a.ip) == 0)
      d.removed.push_back(a);
  return d;
}

std::string describe_diff(const address_diff& d) {
  std::string out;
  auto add = [&](char sign, const interface_address& a) {
    if (!out.empty())
      out += ", ";
    out += sign;
    out += a.name + " " + a.ip;
  };
  for (auto& a : d.added)
    add('+', a);
  for (auto& a : d.removed)
    add('-', a);
  return out.empty() ? "none" : out;
}

size_t count_interface_events(const void* buf, size_t len) {
  size_t n = 0;
  auto* p = static_cast<const unsigned char*>(buf);
  while (len >= sizeof(nlmsghdr)) {
    nlmsghdr h{};
    std::memcpy(&h, p, sizeof h); // the buffer need not be aligned
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > len)
      break;
    switch (h.nlmsg_type) {
      case RTM_NEWLINK:
      case RTM_DELLINK:
      case RTM_NEWADDR:
      case RTM_DELADDR:
        ++n;
        break;
      default:
        break;
    }
    size_t step = NLMSG_ALIGN(h.nlmsg_len);
    if (step >= len)
      break;
    p += step;
    len -= step;
  }
  return n;
}

std::unique_ptr<network_watch>
network_watch::start(std::vector<caf::actor> sinks,
                     network_watch_settings settings) {
  int nl = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    NETLINK_ROUTE);
  if (nl < 0) {
    log::warn(subject,
              "cannot watch for address changes (netlink: {}); sessions "
              "notice a changed network by its silence only",
              std::strerror(errno));
    return nullptr;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  if (::bind(nl, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    log::warn(subject,
              "cannot watch for address changes (netlink bind: {}); "
              "sessions notice a changed network by its silence only",
              std::strerror(errno));
    ::close(nl);
    return nullptr;
  }
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    log::warn(subject, "cannot watch for address changes (eventfd: {})",
              std::strerror(errno));
    ::close(nl);
    return nullptr;
  }
  return std::unique_ptr<network_watch>(
    new network_watch(nl, wake, std::move(sinks), std::move(settings)));
}

network_watch::network_watch(int netlink_fd, int wake_fd,
                             std::vector<caf::actor> sinks,
                             network_watch_settings settings)
  : nl_fd_(netlink_fd), wake_fd_(wake_fd), sinks_(std::move(sinks)),
    settings_(std::move(settings)) {
  // Subscribed before the first listing: a change between the two is seen.
  current_ = chosen(settings_);
  log::debug(subject, "watches interfaces; uses {}",
             describe_interfaces(current_));
  thread_ = std::thread([this] { run(); });
}

network_watch::~network_watch() {
  stop();
  ::close(nl_fd_);
  ::close(wake_fd_);
}

void network_watch::stop() {
  if (!thread_.joinable())
    return;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  thread_.join();
}

void network_watch::run() {
  pthread_setname_np(pthread_self(), "p2p-netwatch");
  std::array<char, 16384> buf{};
  bool pending = false; // a burst is being waited out
  steady::time_point first, last;
  for (;;) {
    int timeout = -1;
    if (pending) {
      auto due
        = std::min(last + settings_.debounce, first + settings_.max_delay);
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    due - steady::now())
                    .count();
      timeout = static_cast<int>(std::max<long long>(left, 0));
    }
    std::array<pollfd, 2> fds{pollfd{nl_fd_, POLLIN, 0},
                              pollfd{wake_fd_, POLLIN, 0}};
    int rv = ::poll(fds.data(), fds.size(), timeout);
    if (rv < 0 && errno != EINTR) {
      log::warn(subject, "stops watching for address changes: poll: {}",
                std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0)
      return; // stop()
    if (rv > 0 && fds[0].revents != 0) {
      bool moved = false;
      for (;;) {
        auto got = ::recv(nl_fd_, buf.data(), buf.size(), 0);
        if (got < 0) {
          // ENOBUFS: the kernel dropped messages; a listing finds out.
          if (errno == ENOBUFS)
            moved = true;
          else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            log::warn(subject, "stops watching for address changes: {}",
                      std::strerror(errno));
            return;
          }
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
          continue;
        }
        if (got == 0)
          break;
        if (count_interface_events(buf.data(), static_cast<size_t>(got)) > 0)
          moved = true;
      }
      if (moved) {
        last = steady::now();
        if (!pending)
          first = last;
        pending = true;
      }
    }
    if (pending
        && steady::now() >= std::min(last + settings_.debounce,
                                     first + settings_.max_delay)) {
      pending = false;
      recompute();
    }
  }
}

void network_watch::recompute() {
  auto now = chosen(settings_);
  auto d = diff_addresses(current_, now);
  current_ = std::move(now);
  if (d.empty())
    return;
  log::info(subject, "network change: {}", describe_diff(d));
  auto added = ips(d.added);
  auto removed = ips(d.removed);
  for (auto& sink : sinks_)
    caf::anon_send(sink, net_change_atom::value, added, removed);
}

} // namespace p2proxy
