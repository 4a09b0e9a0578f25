// UDP REACTOR: one thread that waits on every UDP socket of the node (the
// UDP listeners' sockets, the UDP exports' connected sockets) and hands
// what they receive to their owners as messages:
//
//   (udp_in_atom, std::vector<std::string> from, std::vector<std::string>
//    payloads)   from[i] is the sender's raw sockaddr, payloads[i] its bytes
//   (udp_in_atom, int64_t tag, from, payloads)   the same for a socket added
//                with a tag (an owner of several sockets: RTSP media pairs)
//
// Back-pressure: a socket whose owner has not yet handled `max_in_flight`
// batches is not read; the kernel's buffer then fills and drops what a
// flood sends, instead of the owner's mailbox growing. The owner calls
// done() after each batch.
//
// The reactor lives while someone holds it (shared()); its thread never
// touches actor state and only anon_sends.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor.hpp>

namespace p2proxy {

class udp_reactor;

/// One socket watched for one owner. Dropping the last handle of it does
/// not close the socket: its owner does, after remove().
class udp_registration {
public:
  udp_registration(int fd, caf::actor owner, int64_t tag = -1)
    : fd_(fd), owner_(std::move(owner)), tag_(tag) {}
  int fd() const {
    return fd_;
  }
  /// The owner handled one batch.
  void done();

private:
  friend class udp_reactor;
  int fd_;
  caf::actor owner_;
  int64_t tag_;
  std::atomic<int> in_flight_{0};
  std::atomic<bool> removed_{false};
  std::weak_ptr<udp_reactor> reactor_;
};

class udp_reactor : public std::enable_shared_from_this<udp_reactor> {
public:
  /// Batches a socket may have on their way to its owner.
  static constexpr int max_in_flight = 4;
  /// Datagrams read from one socket per batch.
  static constexpr size_t batch = 64;

  /// The node's reactor, started on first use.
  static std::shared_ptr<udp_reactor> shared();

  udp_reactor();
  ~udp_reactor();
  udp_reactor(const udp_reactor&) = delete;
  udp_reactor& operator=(const udp_reactor&) = delete;

  /// `tag` >= 0: its batches carry the tag (see above).
  std::shared_ptr<udp_registration> add(int fd, caf::actor owner,
                                        int64_t tag = -1);
  /// No batch is read for it after this returns (one may be on its way).
  void remove(const std::shared_ptr<udp_registration>& reg);
  /// Wakes the thread (credit came back, a socket was added).
  void wake();

private:
  void run();

  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mtx_;
  std::vector<std::shared_ptr<udp_registration>> regs_; // guarded
  std::thread thread_;
};

/// "1.2.3.4:53" or "[::1]:53" for a raw sockaddr (as in udp_in_atom).
std::string udp_address_text(const std::string& raw);

/// A non-blocking UDP socket bound to HOST:PORT (numeric or a name), or -1
/// with `why` set; `bound_port` gets the port (for port 0).
int udp_bind(const std::string& host, uint16_t port, uint16_t& bound_port,
             std::string& why);
/// A non-blocking UDP socket connected to HOST:PORT: it sends only there and
/// hears only from there. -1 with `why` set.
int udp_connect(const std::string& host, uint16_t port, std::string& why);

} // namespace p2proxy
