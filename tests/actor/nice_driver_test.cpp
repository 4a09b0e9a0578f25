// The libnice ICE driver for real: agents on loopback in one process, owned
// by small actors on a real actor system (libnice runs on the driver's own
// thread, so the deterministic test_coordinator does not apply). The test
// thread waits by polling what the actors recorded, with a deadline.
#include "actors/ice/nice_driver.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/log.hpp"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

using t_peer_atom = caf::atom_constant<caf::atom("t_peer")>;
using t_cand_atom = caf::atom_constant<caf::atom("t_cand")>;
using t_done_atom = caf::atom_constant<caf::atom("t_done")>;
using t_bogus_atom = caf::atom_constant<caf::atom("t_bogus")>;
using t_send_atom = caf::atom_constant<caf::atom("t_send")>;
using t_ack_atom = caf::atom_constant<caf::atom("t_ack")>;
using t_burst_atom = caf::atom_constant<caf::atom("t_burst")>;
using t_close_atom = caf::atom_constant<caf::atom("t_close")>;
using t_mark_atom = caf::atom_constant<caf::atom("t_mark")>;
using t_fin_atom = caf::atom_constant<caf::atom("t_fin")>;
using t_batch_atom = caf::atom_constant<caf::atom("t_batch")>;

constexpr int counted = 1000;         // datagrams each way that must all arrive
constexpr int window = 32;            // unacknowledged datagrams at most
constexpr size_t payload_size = 1200; // a typical QUIC packet

/// What one test peer saw; written by its actor, read by the test thread.
struct record {
  std::mutex mtx;
  std::string ufrag;
  std::string pwd;
  std::vector<std::string> candidates;
  bool gathered = false;
  std::vector<std::string> states;
  std::string local_type, local_addr, remote_type, remote_addr;
  std::vector<int> seen = std::vector<int>(counted, 0); // per sequence number
  int received = 0;
  size_t data_messages = 0;
  std::vector<std::string> raw; // every datagram, in arrival order
  size_t late = 0;              // after close(), but posted before it returned
  size_t after_close = 0;       // posted after close() returned: must stay 0
  bool marked = false;
  bool finished = false;

  bool has_state(const std::string& s) {
    std::lock_guard<std::mutex> guard{mtx};
    return std::find(states.begin(), states.end(), s) != states.end();
  }
};

using record_ptr = std::shared_ptr<record>;

struct peer_state {
  std::shared_ptr<ice_agent> agent;
  caf::actor other;
  uint64_t tag = 0;
  int to_send = 0;
  int sent = 0;
  int acked = 0;
  bool closed = false;
  bool marked = false;
  record_ptr rec;
  static inline const char* name = "ice_test_peer";
};

using peer_actor = caf::stateful_actor<peer_state>;

std::string payload(uint64_t tag, int seq) {
  auto s = fmt::format("{}:{}:", tag, seq);
  s.resize(payload_size, 'x');
  return s;
}

int sequence_of(const std::string& x) {
  auto a = x.find(':');
  auto b = x.find(':', a + 1);
  return std::stoi(x.substr(a + 1, b - a - 1));
}

/// Counts an event and says whether to act on it: none is expected once the
/// agent is closed. The self-sent marker separates the events queued before
/// close() returned from those posted after it.
bool accept_event(peer_actor* self) {
  auto& st = self->state;
  if (!st.closed)
    return true;
  std::lock_guard<std::mutex> guard{st.rec->mtx};
  if (st.marked)
    ++st.rec->after_close;
  else
    ++st.rec->late;
  return false;
}

void pump(peer_actor* self) {
  auto& st = self->state;
  std::vector<std::string> xs;
  while (st.sent < st.to_send && st.sent - st.acked < window)
    xs.push_back(payload(st.tag, st.sent++));
  if (!xs.empty())
    st.agent->send(std::move(xs));
}

/// A PEER SESSION stand-in: relays its candidates to `other` as they arrive
/// (trickle), sends windowed datagrams and acknowledges what it receives.
caf::behavior ice_peer(peer_actor* self, std::shared_ptr<ice_driver> driver,
                       bool controlling, uint64_t tag, record_ptr rec) {
  auto& st = self->state;
  st.tag = tag;
  st.rec = rec;
  st.agent = driver->create_agent(controlling, caf::actor{self}, tag);
  {
    std::lock_guard<std::mutex> guard{rec->mtx};
    rec->ufrag = st.agent->local_ufrag();
    rec->pwd = st.agent->local_pwd();
  }
  return {
    [=](t_peer_atom, caf::actor other, std::string ufrag, std::string pwd) {
      auto& st = self->state;
      st.other = std::move(other);
      st.agent->set_remote_credentials(std::move(ufrag), std::move(pwd));
      st.agent->gather();
    },
    [=](t_bogus_atom, std::string candidate) {
      auto& st = self->state;
      st.agent->set_remote_credentials("bogusufrag", "bogus-password-of-24ch");
      st.agent->add_remote_candidate(std::move(candidate));
      st.agent->remote_gathering_done();
      st.agent->gather();
    },
    [=](t_cand_atom, std::string candidate) {
      self->state.agent->add_remote_candidate(std::move(candidate));
    },
    [=](t_done_atom) { self->state.agent->remote_gathering_done(); },
    [=](t_send_atom, int n) {
      self->state.to_send += n;
      pump(self);
    },
    [=](t_ack_atom, int n) {
      self->state.acked += n;
      pump(self);
    },
    [=](t_burst_atom, int n) {
      // Unacknowledged traffic, so that data is in flight when we close.
      std::vector<std::string> xs;
      for (int i = 0; i < n; ++i)
        xs.push_back(payload(self->state.tag, counted + i));
      self->state.agent->send(std::move(xs));
    },
    [=](t_batch_atom, std::vector<std::string> xs) {
      self->state.agent->send(std::move(xs));
    },
    [=](t_close_atom) {
      auto& st = self->state;
      st.agent->close();
      st.closed = true;
      self->send(self, t_mark_atom::value);
    },
    [=](t_mark_atom) {
      self->state.marked = true;
      std::lock_guard<std::mutex> guard{self->state.rec->mtx};
      self->state.rec->marked = true;
    },
    [=](t_fin_atom) {
      {
        std::lock_guard<std::mutex> guard{self->state.rec->mtx};
        self->state.rec->finished = true;
      }
      self->quit();
    },
    [=](ice_cand_atom, uint64_t, std::string candidate) {
      if (!accept_event(self))
        return;
      auto& st = self->state;
      {
        std::lock_guard<std::mutex> guard{st.rec->mtx};
        st.rec->candidates.push_back(candidate);
      }
      if (st.other)
        self->send(st.other, t_cand_atom::value, std::move(candidate));
    },
    [=](ice_gathered_atom, uint64_t) {
      if (!accept_event(self))
        return;
      auto& st = self->state;
      {
        std::lock_guard<std::mutex> guard{st.rec->mtx};
        st.rec->gathered = true;
      }
      if (st.other)
        self->send(st.other, t_done_atom::value);
    },
    [=](ice_state_atom, uint64_t, std::string state) {
      if (!accept_event(self))
        return;
      std::lock_guard<std::mutex> guard{self->state.rec->mtx};
      self->state.rec->states.push_back(std::move(state));
    },
    [=](ice_pair_atom, uint64_t, std::string lt, std::string la, std::string rt,
        std::string ra) {
      if (!accept_event(self))
        return;
      auto& rec = *self->state.rec;
      std::lock_guard<std::mutex> guard{rec.mtx};
      rec.local_type = std::move(lt);
      rec.local_addr = std::move(la);
      rec.remote_type = std::move(rt);
      rec.remote_addr = std::move(ra);
    },
    [=](ice_data_atom, uint64_t, std::vector<std::string> xs) {
      if (!accept_event(self))
        return;
      auto& st = self->state;
      int windowed = 0;
      {
        std::lock_guard<std::mutex> guard{st.rec->mtx};
        ++st.rec->data_messages;
        st.rec->raw.insert(st.rec->raw.end(), xs.begin(), xs.end());
        for (auto& x : xs) {
          auto seq = sequence_of(x);
          if (seq < counted && x.size() == payload_size) {
            ++st.rec->seen[seq];
            ++st.rec->received;
            ++windowed;
          }
        }
      }
      if (windowed > 0 && st.other)
        self->send(st.other, t_ack_atom::value, windowed);
    },
  };
}

struct real_config : caf::actor_system_config {
  real_config() {
    set("logger.verbosity", caf::atom("quiet"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

/// Polls `pred` until it holds or `limit` passes.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

bool known_credentials(const record_ptr& rec) {
  std::lock_guard<std::mutex> guard{rec->mtx};
  return !rec->ufrag.empty() && !rec->pwd.empty();
}

class nice_driver_test : public ::testing::Test {
protected:
  nice_driver_test() {
    if (const char* lvl = getenv("P2PROXY_TEST_LOG")) {
      log::level l;
      if (log::parse_level(lvl, l))
        log::set_level(l);
    }
  }

  ~nice_driver_test() override {
    // Actors first, then the driver (also when an assertion bailed out).
    for (auto& p : peers)
      caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
    peers.clear();
    sys.await_all_actors_done();
    if (driver)
      driver->shutdown();
  }

  caf::actor spawn_peer(bool controlling, uint64_t tag, record_ptr rec) {
    auto p = sys.spawn(ice_peer, driver, controlling, tag, std::move(rec));
    peers.push_back(p);
    return p;
  }

  /// Closes the peer's agent, waits until its marker is through, and checks
  /// after the driver is gone that nothing came after close().
  void close_peer(const caf::actor& peer, const record_ptr& rec) {
    caf::anon_send(peer, t_close_atom::value);
    ASSERT_TRUE(wait_until([&] {
      std::lock_guard<std::mutex> guard{rec->mtx};
      return rec->marked;
    }));
  }

  void finish_peer(const caf::actor& peer, const record_ptr& rec) {
    caf::anon_send(peer, t_fin_atom::value);
    ASSERT_TRUE(wait_until([&] {
      std::lock_guard<std::mutex> guard{rec->mtx};
      return rec->finished;
    }));
    std::lock_guard<std::mutex> guard{rec->mtx};
    EXPECT_EQ(rec->after_close, 0u) << "events posted after close()";
  }

  /// Introduces the two peers to each other and waits until ICE is ready.
  void connect_ready(const caf::actor& a, const record_ptr& ra,
                     const caf::actor& b, const record_ptr& rb) {
    ASSERT_TRUE(wait_until(
      [&] { return known_credentials(ra) && known_credentials(rb); }));
    caf::anon_send(a, t_peer_atom::value, b, rb->ufrag, rb->pwd);
    caf::anon_send(b, t_peer_atom::value, a, ra->ufrag, ra->pwd);
    ASSERT_TRUE(wait_until(
      [&] { return ra->has_state("ready") && rb->has_state("ready"); }));
  }

  ice_settings loopback_settings() {
    ice_settings s;
    s.local_addresses = {"127.0.0.1"};
    return s;
  }

  real_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<ice_driver> driver;
  std::vector<caf::actor> peers;
};

TEST_F(nice_driver_test, two_agents_connect_on_loopback_and_carry_datagrams) {
  driver = make_nice_driver(loopback_settings());
  auto ra = std::make_shared<record>();
  auto rb = std::make_shared<record>();
  auto a = spawn_peer(true, 1, ra);
  auto b = spawn_peer(false, 2, rb);
  ASSERT_TRUE(
    wait_until([&] { return known_credentials(ra) && known_credentials(rb); }));
  EXPECT_GE(ra->ufrag.size(), 4u);
  EXPECT_GE(ra->pwd.size(), 22u);
  EXPECT_NE(ra->ufrag, rb->ufrag);

  auto t0 = std::chrono::steady_clock::now();
  caf::anon_send(a, t_peer_atom::value, b, rb->ufrag, rb->pwd);
  caf::anon_send(b, t_peer_atom::value, a, ra->ufrag, ra->pwd);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard<std::mutex> ga{ra->mtx};
    std::lock_guard<std::mutex> gb{rb->mtx};
    return ra->gathered && rb->gathered;
  }));
  auto gathered_after = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(wait_until(
    [&] { return ra->has_state("ready") && rb->has_state("ready"); }))
    << "states A: " << fmt::format("{}", fmt::join(ra->states, ","))
    << " B: " << fmt::format("{}", fmt::join(rb->states, ","));
  auto ready_after = std::chrono::steady_clock::now() - t0;
  for (auto* rec : {ra.get(), rb.get()}) {
    std::lock_guard<std::mutex> guard{rec->mtx};
    ASSERT_FALSE(rec->candidates.empty());
    for (auto& c : rec->candidates) {
      EXPECT_EQ(c.rfind("candidate:", 0), 0u) << c;
      EXPECT_NE(c.find(" 127.0.0.1 "), std::string::npos) << c;
    }
    EXPECT_EQ(rec->local_type, "host");
    EXPECT_EQ(rec->remote_type, "host");
    EXPECT_EQ(rec->local_addr.rfind("127.0.0.1:", 0), 0u) << rec->local_addr;
    EXPECT_EQ(rec->remote_addr.rfind("127.0.0.1:", 0), 0u) << rec->remote_addr;
    EXPECT_EQ(rec->states.front(), "checking");
  }
  EXPECT_EQ(ra->local_addr, rb->remote_addr);
  EXPECT_EQ(rb->local_addr, ra->remote_addr);

  auto t1 = std::chrono::steady_clock::now();
  caf::anon_send(a, t_send_atom::value, counted);
  caf::anon_send(b, t_send_atom::value, counted);
  auto all_arrived = [](const record_ptr& rec) {
    std::lock_guard<std::mutex> guard{rec->mtx};
    return rec->received >= counted;
  };
  ASSERT_TRUE(wait_until([&] { return all_arrived(ra) && all_arrived(rb); }))
    << "A received " << ra->received << ", B received " << rb->received;
  auto transfer = std::chrono::steady_clock::now() - t1;
  for (auto* rec : {ra.get(), rb.get()}) {
    std::lock_guard<std::mutex> guard{rec->mtx};
    EXPECT_EQ(rec->received, counted);
    for (int i = 0; i < counted; ++i)
      ASSERT_EQ(rec->seen[i], 1) << "datagram " << i;
  }
  using ms = std::chrono::milliseconds;
  std::cout << "[ info     ] gathered after "
            << std::chrono::duration_cast<ms>(gathered_after).count()
            << " ms, ready after "
            << std::chrono::duration_cast<ms>(ready_after).count() << " ms, 2x"
            << counted << " datagrams in "
            << std::chrono::duration_cast<ms>(transfer).count() << " ms in "
            << ra->data_messages << "+" << rb->data_messages
            << " messages; pair " << ra->local_addr << " -> " << ra->remote_addr
            << "\n";

  // Close while unacknowledged data is still arriving.
  caf::anon_send(a, t_burst_atom::value, 200);
  caf::anon_send(b, t_burst_atom::value, 200);
  close_peer(a, ra);
  close_peer(b, rb);
  driver->shutdown();
  finish_peer(a, ra);
  finish_peer(b, rb);
}

/// One send() of datagrams of mixed sizes: on a direct pair the driver sends
/// runs of equal ones in one system call (UDP GSO); each must still arrive
/// as the datagram it was, in order, byte for byte.
TEST_F(nice_driver_test, datagrams_of_mixed_sizes_arrive_as_sent) {
  driver = make_nice_driver(loopback_settings());
  auto ra = std::make_shared<record>();
  auto rb = std::make_shared<record>();
  auto a = spawn_peer(true, 1, ra);
  auto b = spawn_peer(false, 2, rb);
  connect_ready(a, ra, b, rb);
  int n = 0;
  auto run = [&n](std::vector<std::string>& xs, size_t count, size_t size) {
    for (size_t i = 0; i < count; ++i, ++n) {
      auto x = fmt::format("m:{}:", n);
      x.resize(size, static_cast<char>('a' + n % 26));
      xs.push_back(std::move(x));
    }
  };
  // Each batch: what one send() gets. Sizes: equal runs ending in a smaller
  // one, a larger one starting a run, more than a run's 64 segments, more
  // than its 64 KiB, lone datagrams.
  std::vector<std::vector<std::string>> batches(4);
  run(batches[0], 20, 1200);
  run(batches[0], 1, 700);
  run(batches[0], 4, 1400);
  run(batches[0], 1, 90);
  run(batches[1], 70, 300);
  run(batches[2], 50, 1450);
  run(batches[3], 1, 40);
  run(batches[3], 1, 1300);
  run(batches[3], 2, 1300);
  run(batches[3], 1, 20);
  std::vector<std::string> sent;
  for (auto& batch : batches) {
    // One batch at a time, so that none overflows a socket buffer.
    sent.insert(sent.end(), batch.begin(), batch.end());
    caf::anon_send(a, t_batch_atom::value, batch);
    ASSERT_TRUE(wait_until([&] {
      std::lock_guard<std::mutex> guard{rb->mtx};
      return rb->raw.size() >= sent.size();
    }))
      << "B received " << rb->raw.size() << " of " << sent.size();
  }
  {
    std::lock_guard<std::mutex> guard{rb->mtx};
    ASSERT_EQ(rb->raw.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i)
      ASSERT_EQ(rb->raw[i], sent[i]) << "datagram " << i;
  }
  close_peer(a, ra);
  close_peer(b, rb);
  driver->shutdown();
  finish_peer(a, ra);
  finish_peer(b, rb);
}

TEST_F(nice_driver_test, a_bogus_remote_candidate_fails_fast) {
  auto settings = loopback_settings();
  settings.stun_initial_timeout_ms = 100;
  settings.stun_max_retransmissions = 2;
  settings.idle_timeout_ms = 300;
  driver = make_nice_driver(settings);
  auto rec = std::make_shared<record>();
  auto a = spawn_peer(true, 7, rec);
  ASSERT_TRUE(wait_until([&] { return known_credentials(rec); }));
  auto t0 = std::chrono::steady_clock::now();
  // Nothing listens on the discard port of loopback.
  caf::anon_send(a, t_bogus_atom::value,
                 std::string{"candidate:1 1 UDP 2130706431 127.0.0.1 9 typ "
                             "host"});
  ASSERT_TRUE(wait_until([&] { return rec->has_state("failed"); }))
    << fmt::format("{}", fmt::join(rec->states, ","));
  auto failed_after = std::chrono::steady_clock::now() - t0;
  std::cout << "[ info     ] failed after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                 failed_after)
                 .count()
            << " ms\n";
  EXPECT_LT(failed_after, 3s);
  EXPECT_FALSE(rec->has_state("ready"));
  close_peer(a, rec);
  driver->shutdown();
  finish_peer(a, rec);
}

TEST_F(nice_driver_test, malformed_candidates_are_ignored) {
  driver = make_nice_driver(loopback_settings());
  auto rec = std::make_shared<record>();
  auto a = spawn_peer(false, 8, rec);
  ASSERT_TRUE(wait_until([&] { return known_credentials(rec); }));
  caf::anon_send(a, t_cand_atom::value, std::string{"candidate:garbage"});
  caf::anon_send(a, t_cand_atom::value, std::string{});
  // Nothing is selected: dropped, like UDP.
  caf::anon_send(a, t_burst_atom::value, 10);
  close_peer(a, rec);
  driver->shutdown();
  finish_peer(a, rec);
}

TEST_F(nice_driver_test, create_then_close_without_gathering_is_clean) {
  driver = make_nice_driver(loopback_settings());
  auto rec = std::make_shared<record>();
  auto a = spawn_peer(true, 3, rec);
  ASSERT_TRUE(wait_until([&] { return known_credentials(rec); }));
  close_peer(a, rec);
  driver->shutdown();
  driver->shutdown(); // idempotent
  finish_peer(a, rec);
  std::lock_guard<std::mutex> guard{rec->mtx};
  EXPECT_TRUE(rec->states.empty());
  EXPECT_EQ(rec->late, 0u);
}

TEST_F(nice_driver_test, shutdown_closes_the_agents_left) {
  driver = make_nice_driver(loopback_settings());
  auto ra = std::make_shared<record>();
  auto rb = std::make_shared<record>();
  auto a = spawn_peer(true, 4, ra);
  auto b = spawn_peer(false, 5, rb);
  connect_ready(a, ra, b, rb);
  // The agents are still open: the driver ends them; the actors' handles
  // outlive it and close (a no-op now) when the actors end.
  driver->shutdown();
  finish_peer(a, ra);
  finish_peer(b, rb);
}

TEST_F(nice_driver_test, silent_stun_and_turn_servers_end_gathering_late) {
  // A bound UDP socket that never answers: no ICMP, the requests time out.
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  auto port = ntohs(sa.sin_port);
  auto settings = loopback_settings();
  settings.stun_initial_timeout_ms = 100;
  settings.stun_max_retransmissions = 2;
  settings.stun = {endpoint{"localhost", port}}; // resolved by libnice
  settings.turn = {ice_turn_server{endpoint{"127.0.0.1", port}, "u", "p"}};
  driver = make_nice_driver(settings);
  auto rec = std::make_shared<record>();
  auto a = spawn_peer(true, 10, rec);
  ASSERT_TRUE(wait_until([&] { return known_credentials(rec); }));
  auto t0 = std::chrono::steady_clock::now();
  caf::anon_send(a, t_peer_atom::value, caf::actor{}, std::string{"abcd"},
                 std::string{"0123456789012345678901"});
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard<std::mutex> guard{rec->mtx};
    return rec->gathered;
  }));
  auto took = std::chrono::steady_clock::now() - t0;
  std::cout
    << "[ info     ] gathering with silent servers took "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms\n";
  {
    std::lock_guard<std::mutex> guard{rec->mtx};
    ASSERT_EQ(rec->candidates.size(), 1u);
    EXPECT_NE(rec->candidates[0].find(" typ host"), std::string::npos);
  }
  close_peer(a, rec);
  driver->shutdown();
  finish_peer(a, rec);
  ::close(fd);
}

TEST_F(nice_driver_test, default_settings_gather_on_this_machine) {
  driver = make_nice_driver(ice_settings{});
  auto rec = std::make_shared<record>();
  auto a = spawn_peer(true, 6, rec);
  ASSERT_TRUE(wait_until([&] { return known_credentials(rec); }));
  auto t0 = std::chrono::steady_clock::now();
  caf::anon_send(a, t_peer_atom::value, caf::actor{}, std::string{"abcd"},
                 std::string{"0123456789012345678901"});
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard<std::mutex> guard{rec->mtx};
    return rec->gathered;
  }));
  auto took = std::chrono::steady_clock::now() - t0;
  std::lock_guard<std::mutex> guard{rec->mtx};
  std::cout
    << "[ info     ] default gathering took "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms:\n";
  for (auto& c : rec->candidates)
    std::cout << "[ info     ]   " << c << "\n";
  EXPECT_FALSE(rec->candidates.empty());
}

} // namespace
