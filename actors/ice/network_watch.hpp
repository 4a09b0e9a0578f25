// NETWORK WATCH: notices that the addresses ICE would gather on changed (an
// address added or removed, an interface up or down) and tells one actor,
// the PEER MANAGER, which passes it to every session (docs/sessions.md,
// "Path changes").
//
// A NETLINK_ROUTE socket subscribed to link and IPv4/IPv6 address changes,
// read by one small thread. Netlink's messages only say that something
// moved: after a burst has been quiet for `debounce` (at most `max_delay`
// after its first message) the thread lists the machine's addresses again
// and applies `[ice] interfaces/exclude` (interface_filter.hpp), so a
// container's veth or a VPN's tun coming and going changes nothing. When
// the chosen set differs from the last one it logs the change once and
// sends each sink
//
//   (net_change_atom, std::vector<std::string> added,
//    std::vector<std::string> removed)      IP addresses in text form
//
// Whoever starts the watch owns it: stop() (or the destructor) wakes the
// thread through an eventfd and joins it, promptly. Where netlink cannot be
// opened start() logs why once and returns null; nothing else changes.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor.hpp>

#include "actors/ice/interface_filter.hpp"

namespace p2proxy {

/// What changed between two sets of chosen addresses.
struct address_diff {
  std::vector<interface_address> added, removed;
  bool empty() const {
    return added.empty() && removed.empty();
  }
};

/// The addresses of `now` not in `before` (added) and of `before` not in
/// `now` (removed), compared by IP; each list in `now`'s / `before`'s order.
address_diff diff_addresses(const std::vector<interface_address>& before,
                            const std::vector<interface_address>& now);

/// "+eth1 198.18.1.3, -eth1 198.18.1.2" (or "none").
std::string describe_diff(const address_diff& d);

/// The messages in a netlink datagram that say a link or an address
/// changed (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR); a
/// truncated or malformed message ends the count.
size_t count_interface_events(const void* buf, size_t len);

struct network_watch_settings {
  /// `[ice] interfaces` and `[ice] exclude`.
  std::vector<std::string> include, exclude;
  /// A burst counts as over after this long without a message...
  std::chrono::milliseconds debounce{400};
  /// ...or this long after its first one.
  std::chrono::milliseconds max_delay{2000};
};

class network_watch {
public:
  /// Opens the netlink socket and starts the thread; null (logged) where
  /// netlink is unavailable.
  static std::unique_ptr<network_watch> start(std::vector<caf::actor> sinks,
                                              network_watch_settings settings);

  ~network_watch();
  network_watch(const network_watch&) = delete;
  network_watch& operator=(const network_watch&) = delete;

  /// Wakes and joins the thread; nothing is sent after it returns.
  /// Idempotent.
  void stop();

private:
  network_watch(int netlink_fd, int wake_fd, std::vector<caf::actor> sinks,
                network_watch_settings settings);
  void run();
  /// Lists the addresses again; sends the difference if there is one.
  void recompute();

  int nl_fd_;
  int wake_fd_;
  std::vector<caf::actor> sinks_;
  network_watch_settings settings_;
  std::vector<interface_address> current_; // the thread's only
  std::thread thread_;
};

} // namespace p2proxy
