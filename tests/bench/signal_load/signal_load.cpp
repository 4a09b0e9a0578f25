// p2proxy_signal_load: a load generator for the signaling server (and a
// cluster of them on one Redis). Many nodes per thread log in with real
// keys, hold their connections with pings, send probes (Signal) to nodes on
// other servers, and, if asked, outlive the kill of one server by
// reconnecting to the others. It prints what it measured and writes it as
// JSON for tests/bench/signal_load/run.sh; it asserts nothing.
//
//   p2proxy_signal_load --servers 127.0.0.1:7001,127.0.0.1:7002
//       [--pids P1,P2] [--redis 127.0.0.1:6379] [--nodes N] [--threads T]
//       [--rate LOGINS_PER_S] [--probes N] [--probe-rate PER_S]
//       [--kill INDEX] [--token-file F] [--json OUT] [--timeout S]
//       [--per-process N]
//
// It forks one process per --per-process nodes (15 000 by default), since
// one process may hold only as many sockets as its open-file limit allows.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "load_worker.hpp"

namespace p2proxy::bench {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in{text};
  std::string item;
  while (std::getline(in, item, sep))
    if (!item.empty())
      out.push_back(item);
  return out;
}

bool parse_target(const std::string& text, target& t) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return false;
  t.host = text.substr(0, colon);
  int port = std::atoi(text.c_str() + colon + 1);
  in_addr a{};
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, t.host.c_str(), &a) != 1)
    return false;
  t.port = static_cast<uint16_t>(port);
  return true;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return std::nan("");
  std::sort(v.begin(), v.end());
  auto i = static_cast<size_t>(std::ceil(p / 100.0 * double(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

/// VmRSS of a process in bytes; 0 when unreadable.
uint64_t rss_bytes(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  return 0;
}

/// One inline command to Redis and its whole reply, as text; empty on any
/// problem. Enough for INFO and DBSIZE.
std::string redis_command(const target& r, const std::string& command) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return {};
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(r.port);
  inet_pton(AF_INET, r.host.c_str(), &a.sin_addr);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    auto line = command + "\r\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL)
        == static_cast<ssize_t>(line.size())) {
      char buf[8192];
      for (int i = 0; i < 64; ++i) {
        auto got = ::recv(fd, buf, sizeof buf, 0);
        if (got <= 0)
          break;
        reply.append(buf, static_cast<size_t>(got));
        // A bulk string is complete once "$LEN\r\n" + LEN + "\r\n" arrived.
        if (reply[0] == '$') {
          auto eol = reply.find("\r\n");
          if (eol != std::string::npos
              && reply.size()
                   >= eol + 4 + std::strtoull(reply.c_str() + 1, nullptr, 10))
            break;
        } else if (reply.find("\r\n") != std::string::npos) {
          break;
        }
      }
    }
  }
  ::close(fd);
  return reply;
}

uint64_t info_field(const std::string& info, const std::string& name) {
  auto at = info.find("\n" + name + ":");
  if (at == std::string::npos)
    return 0;
  return std::strtoull(info.c_str() + at + name.size() + 2, nullptr, 10);
}

struct args {
  load_plan plan;
  std::vector<int> pids;
  std::optional<target> redis;
  int kill = -1;
  std::string json;
  int timeout_s = 600;
  size_t per_process = 15000; // under a hard open-file limit of 20 000
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "p2proxy_signal_load: " << why
            << "\nusage: p2proxy_signal_load --servers IP:PORT[,IP:PORT...] "
               "[--pids P1,...] [--redis IP:PORT] [--nodes N] [--threads T] "
               "[--rate LOGINS_PER_S] [--probes N] [--probe-rate PER_S] "
               "[--kill INDEX] [--token-file F] [--json OUT] [--timeout S] "
               "[--per-process N]\n";
  std::exit(2);
}

args parse_args(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc)
      usage(k + " needs a value");
    std::string v = argv[++i];
    if (k == "--servers") {
      for (auto& s : split(v, ',')) {
        target t;
        if (!parse_target(s, t))
          usage("not an IPv4 HOST:PORT: " + s);
        a.plan.servers.push_back(t);
      }
    } else if (k == "--pids") {
      for (auto& s : split(v, ','))
        a.pids.push_back(std::atoi(s.c_str()));
    } else if (k == "--redis") {
      target t;
      if (!parse_target(v, t))
        usage("not an IPv4 HOST:PORT: " + v);
      a.redis = t;
    } else if (k == "--nodes") {
      a.plan.nodes = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--threads") {
      a.plan.threads = static_cast<unsigned>(std::atoi(v.c_str()));
    } else if (k == "--rate") {
      a.plan.login_rate = std::atof(v.c_str());
    } else if (k == "--probes") {
      a.plan.probes = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--probe-rate") {
      a.plan.probe_rate = std::atof(v.c_str());
    } else if (k == "--kill") {
      a.kill = std::atoi(v.c_str());
    } else if (k == "--token-file") {
      std::ifstream in{v};
      std::getline(in, a.plan.token);
    } else if (k == "--json") {
      a.json = v;
    } else if (k == "--per-process") {
      a.per_process = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--timeout") {
      a.timeout_s = std::atoi(v.c_str());
    } else {
      usage("unknown option " + k);
    }
  }
  if (a.plan.servers.empty())
    usage("--servers is required");
  if (a.plan.servers.size() > 8)
    usage("at most 8 servers");
  if (a.plan.nodes == 0 || a.plan.threads == 0 || a.per_process == 0
      || a.plan.login_rate <= 0 || a.plan.probe_rate <= 0)
    usage("--nodes, --threads, --rate and --probe-rate must be positive");
  if (a.kill >= static_cast<int>(a.plan.servers.size())
      || (a.kill >= 0 && a.pids.size() != a.plan.servers.size()))
    usage("--kill INDEX needs a server of that index and --pids for all");
  return a;
}

/// Raises this process's open-file limit to what `nodes` connections need.
void raise_nofile(size_t nodes) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  rlim_t want = nodes + 4096;
  if (lim.rlim_max < want) {
    lim.rlim_max = want; // root may raise the hard limit
    lim.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      getrlimit(RLIMIT_NOFILE, &lim);
      lim.rlim_cur = lim.rlim_max;
      setrlimit(RLIMIT_NOFILE, &lim);
    }
  } else if (lim.rlim_cur < want) {
    lim.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < want)
    std::cerr << "warning: open files limited to " << lim.rlim_cur
              << "; run as root or raise ulimit -n\n";
}

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

/// Waits until `done()` or `limit`, printing `what` every 5 s.
template <class Done, class Show>
bool wait_for(Done done, seconds limit, Show show) {
  auto start = clock::now();
  auto last = start;
  while (!done()) {
    if (clock::now() - start > limit)
      return false;
    std::this_thread::sleep_for(milliseconds(20));
    if (clock::now() - last >= seconds(5)) {
      last = clock::now();
      show();
    }
  }
  return true;
}

struct json_out {
  std::ostringstream s;
  bool first = true;
  template <class T>
  void put(const std::string& k, const T& v) {
    s << (first ? "{" : ", ") << '"' << k << "\": " << v;
    first = false;
  }
  void put_text(const std::string& k, const std::string& v) {
    std::string e;
    for (char c : v)
      if (c == '"' || c == '\\')
        e += std::string{"\\"} + c;
      else if (static_cast<unsigned char>(c) >= 0x20)
        e += c;
    put(k, '"' + e + '"');
  }
  std::string str() const {
    return s.str() + "}";
  }
};

std::string num(double v) {
  if (std::isnan(v))
    return "null";
  std::ostringstream o;
  o.precision(6);
  o << v;
  return o.str();
}

/// A child process: runs its share of the nodes until the phase is stop,
/// then writes its raw figures to `out` for the main process to merge.
[[noreturn]] void run_share(const load_plan& plan, load_control& ctl,
                            size_t begin, size_t end, const std::string& out) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  raise_nofile(end - begin);
  load_shared sh{plan, ctl, begin, end};
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < plan.threads; ++i)
    workers.emplace_back([&sh, i] { run_worker(sh, i); });
  for (auto& w : workers)
    w.join();
  std::ofstream f{out};
  auto& m = sh.merged;
  f.precision(9);
  for (auto v : m.login_ms)
    f << "L " << v << "\n";
  for (auto v : m.probe_ms)
    f << "P " << v << "\n";
  for (auto v : m.relogin_at_ms)
    f << "R " << v << "\n";
  for (auto v : m.relogin_try_ms)
    f << "T " << v << "\n";
  f << "S " << m.probes_sent << " " << m.probes_lost << " " << m.login_failures
    << " " << m.server_errors << "\n";
  for (auto& [why, count] : m.failure_reasons)
    f << "F " << count << " " << why << "\n";
  if (!sh.first_error.empty())
    f << "E " << sh.first_error << "\n";
  f.close();
  std::_Exit(0);
}

/// Reads a child's figures into `m`.
void merge_share(const std::string& path, worker_figures& m,
                 std::string& first_error) {
  std::ifstream f{path};
  std::string tag;
  while (f >> tag) {
    if (tag == "S") {
      uint64_t sent = 0, lost = 0, fails = 0, errors = 0;
      f >> sent >> lost >> fails >> errors;
      m.probes_sent += sent;
      m.probes_lost += lost;
      m.login_failures += fails;
      m.server_errors += errors;
    } else if (tag == "F") {
      uint64_t count = 0;
      std::string why;
      f >> count;
      std::getline(f, why);
      m.failure_reasons[why.substr(why.empty() ? 0 : 1)] += count;
    } else if (tag == "E") {
      std::string text;
      std::getline(f, text);
      if (first_error.empty())
        first_error = text.substr(text.empty() ? 0 : 1);
    } else {
      double v = 0;
      f >> v;
      auto& to = tag == "L"   ? m.login_ms
                 : tag == "P" ? m.probe_ms
                 : tag == "R" ? m.relogin_at_ms
                              : m.relogin_try_ms;
      to.push_back(v);
    }
  }
  std::remove(path.c_str());
}

int run(int argc, char** argv) {
  auto a = parse_args(argc, argv);
  auto& plan = a.plan;
  size_t procs = (plan.nodes + a.per_process - 1) / a.per_process;
  // Each process takes an equal part of the rates and the probes.
  load_plan share = plan;
  share.login_rate = plan.login_rate / double(procs);
  share.probe_rate = plan.probe_rate / double(procs);
  share.probes = (plan.probes + procs - 1) / procs;
  void* mem = mmap(nullptr, sizeof(load_control), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  auto& ctl = *new (mem) load_control{};
  json_out js;
  std::printf("%zu nodes on %zu server(s), %zu process(es) of %u thread(s), "
              "logins at %.0f/s\n",
              plan.nodes, plan.servers.size(), procs, plan.threads,
              plan.login_rate);
  std::fflush(stdout);
  auto tmp = (a.json.empty() ? std::string{"/tmp/p2proxy_signal_load"} : a.json)
             + ".part";
  std::vector<pid_t> children;
  for (size_t k = 0; k < procs; ++k) {
    size_t begin = plan.nodes * k / procs, end = plan.nodes * (k + 1) / procs;
    auto pid = fork();
    if (pid == 0)
      run_share(share, ctl, begin, end, tmp + std::to_string(k));
    if (pid < 0) {
      std::perror("fork");
      ctl.current = static_cast<int>(phase::stop);
      break;
    }
    children.push_back(pid);
  }
  auto stop = [&] {
    ctl.current = static_cast<int>(phase::stop);
    auto until = clock::now() + seconds(60);
    for (auto pid : children) {
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (clock::now() > until) {
          ::kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(milliseconds(20));
      }
    }
  };
  auto& sh = ctl;
  plan.probes = share.probes * procs;
  auto keygen_start = clock::now();
  wait_for([&] { return sh.keys_ready.load() == plan.nodes; }, seconds(600),
           [&] { std::printf("  keys: %zu\n", sh.keys_ready.load()); });
  std::printf("keys generated in %.1f s\n", seconds_since(keygen_start));

  // The servers' memory before any node: what a node costs is above it.
  uint64_t rss_idle = 0;
  for (auto pid : a.pids)
    rss_idle += rss_bytes(pid);
  js.put("rss_idle_total_bytes", rss_idle);

  // Logins at the planned rate.
  auto login_start = clock::now();
  sh.current = static_cast<int>(phase::login);
  auto login_limit
    = seconds(static_cast<int64_t>(double(plan.nodes) / plan.login_rate + 60));
  bool all_in = wait_for([&] { return sh.first_logins.load() == plan.nodes; },
                         std::min(login_limit, seconds(a.timeout_s)),
                         [&] {
                           std::printf("  online %zu of %zu after %.0f s\n",
                                       sh.online.load(), plan.nodes,
                                       seconds_since(login_start));
                           std::fflush(stdout);
                         });
  double login_secs = seconds_since(login_start);
  std::printf("%zu of %zu nodes online after %.1f s%s\n", sh.online.load(),
              plan.nodes, login_secs, all_in ? "" : " (timed out)");
  js.put("nodes", plan.nodes);
  js.put("servers", plan.servers.size());
  js.put("login_seconds", num(login_secs));
  js.put("online_after_login", sh.online.load());
  // Settle a little so that the servers' memory reflects a quiet hold.
  std::this_thread::sleep_for(seconds(3));
  js.put("online_held", sh.online.load());
  std::vector<size_t> per_server(plan.servers.size());
  for (size_t i = 0; i < per_server.size(); ++i)
    per_server[i] = sh.held[i].load();
  std::string rss_list;
  uint64_t rss_total = 0;
  for (size_t i = 0; i < a.pids.size(); ++i) {
    auto r = rss_bytes(a.pids[i]);
    rss_total += r;
    std::printf("server %zu (pid %d): %zu nodes, RSS %.1f MB\n", i, a.pids[i],
                i < per_server.size() ? per_server[i] : 0, double(r) / 1e6);
    rss_list += (rss_list.empty() ? "" : ",") + std::to_string(r);
  }
  js.put("rss_bytes", "[" + rss_list + "]");
  js.put("rss_total_bytes", rss_total);
  std::string held_list;
  for (auto n : per_server)
    held_list += (held_list.empty() ? "" : ",") + std::to_string(n);
  js.put("nodes_per_server", "[" + held_list + "]");
  if (a.redis) {
    auto info = redis_command(*a.redis, "INFO memory");
    auto keys = redis_command(*a.redis, "DBSIZE");
    auto used = info_field(info, "used_memory");
    auto rss = info_field(info, "used_memory_rss");
    std::printf("Redis: used_memory %.1f MB, used_memory_rss %.1f MB, %s",
                double(used) / 1e6, double(rss) / 1e6,
                keys.empty() ? "DBSIZE ?\n"
                             : ("keys " + keys.substr(1)).c_str());
    js.put("redis_used_memory", used);
    js.put("redis_rss", rss);
    js.put("redis_keys",
           keys.size() > 1 ? std::strtoull(keys.c_str() + 1, nullptr, 10) : 0);
  }

  // Probes: Signal to a node on another server and its reply.
  if (plan.probes > 0) {
    sh.current = static_cast<int>(phase::probe);
    wait_for(
      [&] { return sh.probes_done.load() >= plan.probes; },
      seconds(static_cast<int64_t>(double(plan.probes) / plan.probe_rate + 30)),
      [&] { std::printf("  probes: %zu\n", sh.probes_done.load()); });
  }
  sh.current = static_cast<int>(phase::hold);

  // The kill: SIGKILL one server, then wait until its nodes are back.
  double failover_secs = std::nan("");
  size_t expected = 0;
  if (a.kill >= 0) {
    expected = sh.held[static_cast<size_t>(a.kill)].load();
    auto kill_at = clock::now();
    sh.kill_at_ns = kill_at.time_since_epoch().count();
    sh.killed_server = a.kill;
    std::printf("killing server %d (pid %d) holding %zu nodes\n", a.kill,
                a.pids[static_cast<size_t>(a.kill)], expected);
    ::kill(a.pids[static_cast<size_t>(a.kill)], SIGKILL);
    bool back = wait_for(
      [&] {
        return sh.displaced.load() >= expected
               && sh.recovered.load() >= sh.displaced.load();
      },
      seconds(std::min(a.timeout_s, 180)),
      [&] {
        std::printf("  displaced %zu, back online %zu, after %.0f s\n",
                    sh.displaced.load(), sh.recovered.load(),
                    seconds_since(kill_at));
        std::fflush(stdout);
      });
    failover_secs = seconds_since(kill_at);
    std::printf("%zu of %zu displaced nodes online elsewhere after %.1f s%s\n",
                sh.recovered.load(), expected, failover_secs,
                back ? "" : " (timed out)");
    js.put("failover_nodes", expected);
    js.put("failover_recovered", sh.recovered.load());
    std::string rss_after;
    for (size_t i = 0; i < a.pids.size(); ++i)
      if (static_cast<int>(i) != a.kill)
        rss_after += (rss_after.empty() ? "" : ",")
                     + std::to_string(rss_bytes(a.pids[i]));
    js.put("rss_after_failover_bytes", "[" + rss_after + "]");
  }
  stop();

  worker_figures m;
  std::string first_error;
  for (size_t k = 0; k < children.size(); ++k)
    merge_share(tmp + std::to_string(k), m, first_error);
  double lp50 = percentile(m.login_ms, 50), lp99 = percentile(m.login_ms, 99);
  double lmax = percentile(m.login_ms, 100);
  std::printf("login time: p50 %.1f ms, p99 %.1f ms, max %.1f ms; %llu failed "
              "attempts\n",
              lp50, lp99, lmax,
              static_cast<unsigned long long>(m.login_failures));
  js.put("login_rate_planned", num(plan.login_rate));
  js.put("login_rate", num(double(m.login_ms.size()) / login_secs));
  js.put("login_p50_ms", num(lp50));
  js.put("login_p99_ms", num(lp99));
  js.put("login_max_ms", num(lmax));
  js.put("login_failures", m.login_failures);
  std::string reasons;
  for (auto& [why, count] : m.failure_reasons)
    reasons
      += (reasons.empty() ? "" : ", ") + why + ": " + std::to_string(count);
  if (!reasons.empty())
    std::printf("failed attempts: %s\n", reasons.c_str());
  js.put_text("login_failure_reasons", reasons);
  double pp50 = percentile(m.probe_ms, 50), pp99 = percentile(m.probe_ms, 99);
  std::printf("Signal round trip (%s): p50 %.2f ms, p99 %.2f ms; %llu of %llu "
              "lost\n",
              plan.servers.size() > 1 ? "across servers" : "one server", pp50,
              pp99, static_cast<unsigned long long>(m.probes_lost),
              static_cast<unsigned long long>(m.probes_sent));
  js.put("probe_p50_ms", num(pp50));
  js.put("probe_p99_ms", num(pp99));
  js.put("probes_sent", m.probes_sent);
  js.put("probes_lost", m.probes_lost);
  if (a.kill >= 0) {
    // Reconnect attempts and logins per second after the kill: a herd shows
    // as one tall second, jitter as a spread.
    std::map<long, size_t> tries, backs;
    for (auto t : m.relogin_try_ms)
      ++tries[static_cast<long>(t / 1000)];
    for (auto t : m.relogin_at_ms)
      ++backs[static_cast<long>(t / 1000)];
    size_t peak_tries = 0;
    std::string hist;
    for (auto& [sec, n] : backs)
      tries[sec] += 0; // a second with logins but no attempts shows too
    for (auto& [sec, n] : tries) {
      peak_tries = std::max(peak_tries, n);
      hist += (hist.empty() ? "" : ", ") + std::to_string(sec) + ":"
              + std::to_string(n) + "/" + std::to_string(backs[sec]);
    }
    std::printf("after the kill, per second (attempts/online again): %s\n",
                hist.c_str());
    double r50 = percentile(m.relogin_at_ms, 50);
    double r99 = percentile(m.relogin_at_ms, 99);
    double rmax = percentile(m.relogin_at_ms, 100);
    std::printf("failover: p50 %.1f s, p99 %.1f s, last %.1f s; %zu attempts "
                "for %zu nodes, at most %zu in one second\n",
                r50 / 1000, r99 / 1000, rmax / 1000, m.relogin_try_ms.size(),
                m.relogin_at_ms.size(), peak_tries);
    js.put("failover_seconds", num(rmax / 1000));
    js.put("failover_p50_seconds", num(r50 / 1000));
    js.put("failover_p99_seconds", num(r99 / 1000));
    js.put("failover_attempts", m.relogin_try_ms.size());
    js.put("failover_peak_attempts_per_s", peak_tries);
    js.put_text("failover_per_second", hist);
  }
  if (!first_error.empty())
    std::printf("first error seen: %s\n", first_error.c_str());
  js.put_text("first_error", first_error);
  js.put("server_errors", m.server_errors);
  if (!a.json.empty()) {
    std::ofstream out{a.json};
    out << js.str() << "\n";
  }
  return all_in ? 0 : 1;
}

} // namespace
} // namespace p2proxy::bench

int main(int argc, char** argv) {
  return p2proxy::bench::run(argc, argv);
}
