// nfq_delayer: a small NFQUEUE packet delayer for the p2proxy lab (the kernel
// here has no netem).
//
// Binds NFQUEUE queue N in the current network namespace, holds every packet
// for D ms (plus an optional uniform jitter of +-J ms, which may reorder
// packets, as netem's jitter does), then reinjects it with NF_ACCEPT. The hold
// queue is bounded: packets beyond --max-queue are dropped (a full router
// buffer). SIGTERM/SIGINT release every held packet (NF_ACCEPT) and exit
// cleanly.
//
//   nfq_delayer --queue 0 --delay 50 [--jitter 5] [--max-queue 20000] [--seed
//   N]
//
// Usually started by deploy/lab/lab.sh impair ... --delay MS inside a router
// namespace, paired with an iptables NFQUEUE rule (the kernel has no nft
// `queue` expression, only xt_NFQUEUE). System headers first: glibc's
// <netinet/in.h> must precede the kernel's <linux/in.h>.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <queue>
#include <random>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

std::int64_t now_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

struct Held {
  std::int64_t release_us;
  std::uint64_t seq; // FIFO order among equal release times
  std::uint32_t id;
  bool operator>(const Held& o) const {
    return release_us != o.release_us ? release_us > o.release_us : seq > o.seq;
  }
};

struct State {
  nfq_q_handle* qh = nullptr;
  std::priority_queue<Held, std::vector<Held>, std::greater<Held>> held;
  std::int64_t delay_us = 0;
  std::int64_t jitter_us = 0;
  std::size_t max_queue = 20000;
  std::uint64_t seq = 0;
  std::mt19937_64 rng;
  std::uint64_t received = 0, released = 0, dropped = 0;
};

int on_packet(nfq_q_handle* qh, nfgenmsg*, nfq_data* nfa, void* data) {
  auto* st = static_cast<State*>(data);
  nfqnl_msg_packet_hdr* ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph)
    return 0;
  std::uint32_t id = ntohl(ph->packet_id);
  ++st->received;
  if (st->held.size() >= st->max_queue) {
    ++st->dropped;
    nfq_set_verdict(qh, id, NF_DROP, 0, nullptr);
    return 0;
  }
  std::int64_t d = st->delay_us;
  if (st->jitter_us > 0) {
    std::uniform_int_distribution<std::int64_t> dist(-st->jitter_us,
                                                     st->jitter_us);
    d += dist(st->rng);
    if (d < 0)
      d = 0;
  }
  st->held.push(Held{now_us() + d, st->seq++, id});
  return 0;
}

void release_due(State& st, bool all) {
  std::int64_t t = now_us();
  while (!st.held.empty() && (all || st.held.top().release_us <= t)) {
    nfq_set_verdict(st.qh, st.held.top().id, NF_ACCEPT, 0, nullptr);
    st.held.pop();
    ++st.released;
  }
}

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --queue N --delay MS [--jitter MS] [--max-queue "
               "PKTS] [--seed N]\n",
               argv0);
  std::exit(2);
}

long parse_num(const char* s, const char* argv0, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s, &end, 10);
  if (errno || !end || *end || v < lo || v > hi)
    usage(argv0);
  return v;
}

} // namespace

int main(int argc, char** argv) {
  long queue_num = -1, delay_ms = -1, jitter_ms = 0, max_queue = 20000,
       seed = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc)
        usage(argv[0]);
      return argv[++i];
    };
    if (a == "--queue")
      queue_num = parse_num(next(), argv[0], 0, 65535);
    else if (a == "--delay")
      delay_ms = parse_num(next(), argv[0], 0, 60000);
    else if (a == "--jitter")
      jitter_ms = parse_num(next(), argv[0], 0, 60000);
    else if (a == "--max-queue")
      max_queue = parse_num(next(), argv[0], 1, 1000000);
    else if (a == "--seed")
      seed = parse_num(next(), argv[0], 0, 0x7fffffff);
    else
      usage(argv[0]);
  }
  if (queue_num < 0 || delay_ms < 0)
    usage(argv[0]);

  State st;
  st.delay_us = delay_ms * 1000;
  st.jitter_us = jitter_ms * 1000;
  st.max_queue = std::size_t(max_queue);
  st.rng.seed(seed >= 0 ? std::uint64_t(seed) : std::uint64_t(now_us()));

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  nfq_handle* h = nfq_open();
  if (!h) {
    std::perror("nfq_delayer: nfq_open");
    return 1;
  }
  st.qh = nfq_create_queue(h, std::uint16_t(queue_num), &on_packet, &st);
  if (!st.qh) {
    std::perror("nfq_delayer: nfq_create_queue (queue already bound?)");
    nfq_close(h);
    return 1;
  }
  // Only metadata is needed: the verdict carries no payload, so the kernel
  // reinjects the original.
  if (nfq_set_mode(st.qh, NFQNL_COPY_META, 0) < 0) {
    std::perror("nfq_delayer: nfq_set_mode");
    nfq_destroy_queue(st.qh);
    nfq_close(h);
    return 1;
  }
  // Kernel-side bound: packets waiting for us to read them (not the ones we
  // hold).
  nfq_set_queue_maxlen(st.qh, std::uint32_t(max_queue));
  int fd = nfq_fd(h);
  int on = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &on, sizeof on);
  nfnl_rcvbufsiz(nfq_nfnlh(h), 8 * 1024 * 1024);

  std::fprintf(
    stderr, "nfq_delayer: queue %ld delay %ld ms jitter %ld ms max-queue %ld\n",
    queue_num, delay_ms, jitter_ms, max_queue);

  std::vector<char> buf(1 << 16);
  while (!g_stop) {
    int timeout_ms = 200;
    if (!st.held.empty()) {
      std::int64_t wait = st.held.top().release_us - now_us();
      timeout_ms = wait <= 0 ? 0 : int((wait + 999) / 1000);
      if (timeout_ms > 200)
        timeout_ms = 200;
    }
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR) {
      std::perror("nfq_delayer: poll");
      break;
    }
    if (r > 0 && (p.revents & POLLIN)) {
      // Drain what is readable now, bounded so releases are never starved.
      for (int n = 0; n < 256 && !g_stop; ++n) {
        ssize_t len = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (len < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            break;
          if (errno == ENOBUFS)
            continue; // kernel dropped some; keep going
          std::perror("nfq_delayer: recv");
          g_stop = 1;
          break;
        }
        nfq_handle_packet(h, buf.data(), int(len));
      }
    }
    release_due(st, false);
  }
  release_due(st, true); // never strand packets on exit
  std::fprintf(stderr,
               "nfq_delayer: exit received=%llu released=%llu dropped=%llu\n",
               (unsigned long long)st.received, (unsigned long long)st.released,
               (unsigned long long)st.dropped);
  nfq_destroy_queue(st.qh);
  nfq_close(h);
  return 0;
}
