// The signaling load generator's worker: one thread, one epoll set, many
// nodes. Each node logs in exactly as p2proxy does (TCP, TLS 1.3 through
// the project's tls_channel, the Hello's nonce signed with the node's own
// Ed25519 key over the channel binding, make_login), pings at the
// heartbeat the server announces, answers probes, and on a lost server
// backs off with the project's jittered backoff and tries the next server
// in turn, like a node with several [signal] servers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace p2proxy::bench {

using clock = std::chrono::steady_clock;

struct target {
  std::string host; // an IPv4 address
  uint16_t port = 0;
};

/// What the main thread asks of every worker; workers only read it.
struct load_plan {
  std::vector<target> servers;
  std::string token;
  size_t nodes = 0;         // in all, over every process
  unsigned threads = 1;     // per process
  double login_rate = 1000; // first logins per second, per process
  double probe_rate = 200;  // probes per second, per process
  size_t probes = 0;        // probes, per process
  std::chrono::milliseconds backoff_first{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds login_timeout{10000};
};

/// Phases, set by the main thread.
enum class phase : int { keygen, login, probe, hold, stop };

/// Figures a worker hands back (merged by the main thread).
struct worker_figures {
  std::vector<double> login_ms;       // first logins: connect -> LoginOk
  std::vector<double> probe_ms;       // probe round trips
  std::vector<double> relogin_at_ms;  // after the kill: when each displaced
                                      // node was online again (from the kill)
  std::vector<double> relogin_try_ms; // when each reconnect attempt started
  uint64_t probes_sent = 0;
  uint64_t probes_lost = 0;    // no reply within 5 s, or PEER_OFFLINE
  uint64_t login_failures = 0; // attempts that did not end in LoginOk
  uint64_t server_errors = 0;  // Error frames received
  std::map<std::string, uint64_t> failure_reasons; // of failed attempts
};

/// Counters shared by every process of the generator: it lives in
/// anonymous shared memory made before the processes fork (one process
/// holds at most what its open-file limit allows), so its atomics must be
/// lock-free.
struct load_control {
  std::atomic<int> current{static_cast<int>(phase::keygen)};
  std::atomic<uint64_t> keys_ready{0};
  std::atomic<uint64_t> online{0};
  std::atomic<uint64_t> first_logins{0};
  std::atomic<uint64_t> probes_done{0};
  /// Set by the main process when it kills a server: nodes that lose that
  /// server afterwards count as displaced.
  std::atomic<int> killed_server{-1};
  std::atomic<int64_t> kill_at_ns{0}; // steady clock time of the kill
  std::atomic<uint64_t> displaced{0}; // nodes that lost the killed server
  std::atomic<uint64_t> recovered{0}; // ... and are online again
  std::atomic<uint64_t> held[8]{};    // nodes online per server
  phase now() const {
    return static_cast<phase>(current.load());
  }
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

/// One process's share: nodes [begin, end) of the plan, run by
/// plan.threads workers; node i of the share belongs to worker i % threads.
struct load_shared {
  load_plan plan;
  load_control& ctl;
  size_t begin = 0;
  size_t end = 0;
  std::vector<std::string> node_ids;       // of the share, filled by keygen
  std::vector<std::atomic<int>> server_of; // which server a node is on (-1)
  std::mutex mu;
  worker_figures merged;
  std::string first_error; // the first Error text, to show the reader

  load_shared(load_plan p, load_control& c, size_t b, size_t e)
    : plan(std::move(p)), ctl(c), begin(b), end(e), node_ids(e - b),
      server_of(e - b) {
    for (auto& s : server_of)
      s = -1;
  }
  size_t size() const {
    return end - begin;
  }
  phase now() const {
    return ctl.now();
  }
};

/// Runs worker `index` until the phase is stop; merges its figures into
/// shared.merged before returning.
void run_worker(load_shared& shared, unsigned index);

} // namespace p2proxy::bench
