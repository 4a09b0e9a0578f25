// PEER MANAGER and PEER SESSION on virtual time: real QUIC (ngtcp2 +
// GnuTLS) over the fake ICE driver, signaling through a fake server.
#include "actors/peer/peer_manager.hpp"

#include <gtest/gtest.h>

#include <deque>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/preamble.hpp"
#include "actors/debug/stream_pump.hpp"
#include "actors/peer/stream_owners.hpp"
#include "fake_ice.hpp"
#include "proto/signal.pb.h"
#include "test_system.hpp"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

using attach_atom = caf::atom_constant<caf::atom("attach")>;
using send_atom = caf::atom_constant<caf::atom("send")>;

/// The fake signaling server: node id -> that node's PEER MANAGER.
struct fake_directory {
  std::map<std::string, caf::actor> managers;
  uint64_t signals = 0;
  bool drop_restarts = false; // loses every Signal of an ICE restart
};

/// A node's SIGNAL LINK stand-in: stamps `from` with the id it claims and
/// hands the Signal to the addressee's manager, or reports it offline.
caf::behavior fake_link(caf::stateful_actor<caf::actor>* self,
                        std::shared_ptr<fake_directory> dir,
                        std::string claimed_id) {
  return {
    [=](attach_atom, caf::actor manager) { self->state = manager; },
    [=](signal_atom, const std::string& serialized) -> caf::result<void> {
      signal::Signal sig;
      sig.ParseFromString(serialized);
      if (dir->drop_restarts && sig.generation() > 0)
        return caf::unit;
      sig.set_from(claimed_id);
      auto i = dir->managers.find(sig.to());
      if (i == dir->managers.end()) {
        self->send(self->state, peer_off_atom::value, sig.to(),
                   sig.session_id(), std::string{"peer offline"});
        return make_error(ec::peer_offline, "not online");
      }
      ++dir->signals;
      caf::anon_send(i->second, signal_atom::value, sig.SerializeAsString());
      return caf::unit;
    },
  };
}

struct client_record {
  int64_t id = -1;
  std::string open_error;
  std::string received;
  bool fin = false;
  bool closed = false;
  std::string down;
};

/// A local stream owner: opens a stream on `session` as its owner, writes
/// what it is told, records what comes back.
caf::behavior stream_client(caf::event_based_actor* self, caf::actor session,
                            std::shared_ptr<client_record> rec) {
  self
    ->request(session, caf::infinite, stream_open_atom::value, caf::actor{self})
    .then([=](int64_t id) { rec->id = id; },
          [=](caf::error& err) {
            rec->open_error = error_text(err);
            self->quit();
          });
  return {
    [=](send_atom, const std::string& bytes, bool fin) {
      self->send(session, stream_write_atom::value, rec->id, bytes, fin);
    },
    [=](stream_data_atom, int64_t id, const std::string& bytes, bool fin) {
      rec->received += bytes;
      rec->fin = rec->fin || fin;
      self->send(session, stream_consumed_atom::value, id,
                 static_cast<uint64_t>(bytes.size()));
    },
    [=](stream_credit_atom, int64_t, uint64_t) {},
    [=](stream_reset_atom, int64_t, uint64_t) {},
    [=](stream_closed_atom, int64_t) {
      rec->closed = true;
      self->quit();
    },
    [=](session_down_atom, const caf::error& why) {
      rec->down = error_text(why);
      self->quit();
    },
  };
}

struct node {
  std::shared_ptr<const identity> id;
  caf::actor link;
  caf::actor manager;
};

class peer_session_test : public ::testing::Test {
protected:
  test::deterministic_system t;
  std::shared_ptr<test::fake_ice_network> net
    = std::make_shared<test::fake_ice_network>();
  std::shared_ptr<fake_directory> dir = std::make_shared<fake_directory>();
  std::deque<node> nodes;          // stable references on push_back
  caf::timespan next_linger = 30s; // the next make_node's idle_linger

  /// A node; `claim` makes its link pretend to be another node id.
  node& make_node(const std::string& name, std::string claim = {},
                  std::shared_ptr<const identity> id = nullptr) {
    node n;
    n.id = id ? id : std::make_shared<identity>(identity::generate());
    auto as = claim.empty() ? n.id->node_id() : claim;
    n.link = t.sys.spawn(fake_link, dir, as);
    peer_manager_config cfg;
    cfg.me = n.id;
    cfg.ice = std::make_shared<test::fake_ice_driver>(net, name);
    cfg.link = n.link;
    stream_owner_config sc;
    sc.test_resources = true;
    cfg.handler = make_stream_handler(sc);
    cfg.settings.connect_timeout = 20s;
    cfg.settings.idle_linger
      = std::chrono::duration_cast<std::chrono::milliseconds>(next_linger);
    cfg.seed = std::hash<std::string>{}(name) << 8;
    n.manager = t.sys.spawn(peer_manager, cfg);
    caf::anon_send(n.link, attach_atom::value, n.manager);
    dir->managers[as] = n.manager;
    t.run();
    nodes.push_back(n);
    return nodes.back();
  }

  void TearDown() override {
    for (auto& n : nodes)
      caf::anon_send(n.manager, stop_atom::value, std::string{"test over"});
    t.run();
    t.advance(1s);
    for (auto& n : nodes) {
      caf::anon_send_exit(n.manager, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(n.link, caf::exit_reason::user_shutdown);
    }
    t.run();
  }

  /// Runs messages and moves virtual time in small steps until `done`.
  template <class F>
  bool run_until(F done, caf::timespan limit = 60s) {
    caf::timespan spent{0};
    t.run();
    while (!done() && spent < limit) {
      t.advance(5ms);
      spent += 5ms;
    }
    return done();
  }

  /// Asks `from`'s manager to open a session to `to`; the answer lands in
  /// `result` (a session) or `error`.
  struct open_result {
    caf::actor session;
    std::string error;
    caf::error err; // the same, with its code
    bool answered = false;
  };
  std::shared_ptr<open_result> open(node& from, const std::string& to) {
    auto res = std::make_shared<open_result>();
    auto asker = t.sys.spawn([=](caf::event_based_actor* self) {
      self->request(from.manager, caf::infinite, open_atom::value, to)
        .then(
          [=](caf::actor s) {
            res->session = s;
            res->answered = true;
          },
          [=](caf::error& err) {
            res->error = error_text(err);
            res->err = err;
            res->answered = true;
          });
    });
    return res;
  }

  /// open() from `from` to `to` and run until it is answered (60 s of
  /// virtual time at most).
  std::shared_ptr<open_result> open_and_wait(node& from, node& to) {
    auto res = open(from, to.id->node_id());
    run_until([&] { return res->answered; });
    EXPECT_TRUE(res->answered) << "no answer to open()";
    return res;
  }

  admin::SessionList sessions(node& n) {
    caf::scoped_actor self{t.sys};
    self->send(n.manager, get_atom::value);
    t.run();
    admin::SessionList list;
    self->receive([&](const std::string& s) { list.ParseFromString(s); },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return list;
  }

  std::string session_debug(caf::actor session) {
    caf::scoped_actor self{t.sys};
    self->send(session, status_atom::value);
    t.run();
    std::string out;
    self->receive(
      [&](const std::string& s) {
        admin::ActorStatus as;
        as.ParseFromString(s);
        out = as.DebugString();
      },
      caf::after(std::chrono::seconds(0)) >> [] {});
    return out;
  }

  int64_t open_stream(caf::actor session, std::shared_ptr<client_record> rec,
                      caf::actor& client) {
    client = t.sys.spawn(stream_client, session, rec);
    t.run();
    return rec->id;
  }
};

} // namespace

TEST_F(peer_session_test, open_reaches_ready_on_both_sides) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open(a, b.id->node_id());
  ASSERT_TRUE(run_until([&] { return res->answered; })) << "no answer";
  ASSERT_TRUE(res->error.empty()) << res->error;
  EXPECT_TRUE(res->session);
  auto la = sessions(a);
  auto lb = sessions(b);
  ASSERT_EQ(la.sessions_size(), 1);
  ASSERT_EQ(lb.sessions_size(), 1);
  EXPECT_EQ(la.sessions(0).peer(), b.id->node_id());
  EXPECT_EQ(lb.sessions(0).peer(), a.id->node_id());
  EXPECT_TRUE(la.sessions(0).controlling());
  EXPECT_FALSE(lb.sessions(0).controlling());
  EXPECT_EQ(la.sessions(0).session_id(), lb.sessions(0).session_id());
  EXPECT_EQ(la.sessions(0).local_candidate_type(), "host");
  // A second open reuses the session.
  auto again = open(a, b.id->node_id());
  ASSERT_TRUE(run_until([&] { return again->answered; }));
  EXPECT_EQ(again->session, res->session);
}

TEST_F(peer_session_test, glare_leaves_exactly_one_session) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto ra = open(a, b.id->node_id());
  auto rb = open(b, a.id->node_id());
  ASSERT_TRUE(run_until([&] { return ra->answered && rb->answered; }));
  ASSERT_TRUE(ra->error.empty()) << ra->error;
  ASSERT_TRUE(rb->error.empty()) << rb->error;
  run_until([] { return false; }, 1s); // let the loser finish closing
  auto la = sessions(a);
  auto lb = sessions(b);
  ASSERT_EQ(la.sessions_size(), 1);
  ASSERT_EQ(lb.sessions_size(), 1);
  EXPECT_EQ(la.sessions(0).session_id(), lb.sessions(0).session_id());
  // The session of the higher node id won.
  bool a_higher = a.id->node_id() > b.id->node_id();
  EXPECT_EQ(la.sessions(0).controlling(), a_higher);
  EXPECT_EQ(lb.sessions(0).controlling(), !a_higher);
  EXPECT_EQ(la.sessions(0).state(), "lingering");
}

TEST_F(peer_session_test, ice_failure_is_reported_to_the_opener) {
  net->fail = true;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  EXPECT_NE(res->error.find("ICE failed"), std::string::npos) << res->error;
  run_until([&] { return net->open_agents() == 0; }, 2s);
  EXPECT_EQ(sessions(a).sessions_size(), 0);
  EXPECT_EQ(sessions(b).sessions_size(), 0) << "the peer heard bye";
}

TEST_F(peer_session_test, impostor_fails_the_handshake_closed) {
  auto& a = make_node("a");
  auto real_b = std::make_shared<identity>(identity::generate());
  // Mallory answers for B's node id with her own key.
  make_node("m", real_b->node_id());
  auto res = open(a, real_b->node_id());
  ASSERT_TRUE(run_until([&] { return res->answered; }));
  EXPECT_FALSE(res->session);
  EXPECT_NE(res->error.find(real_b->node_id()), std::string::npos)
    << res->error;
  EXPECT_EQ(sessions(a).sessions_size(), 0);
}

TEST_F(peer_session_test, peer_offline_is_reported) {
  auto& a = make_node("a");
  auto res = open(a, std::string(52, 'q'));
  ASSERT_TRUE(run_until([&] { return res->answered; }));
  EXPECT_NE(res->error.find("offline"), std::string::npos) << res->error;
}

TEST_F(peer_session_test, connect_timeout_when_the_peer_never_answers) {
  auto& a = make_node("a");
  // A node that is "online" but whose manager drops every Signal.
  auto silent = t.sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](signal_atom, const std::string&) {}};
  });
  dir->managers["silent-node"] = silent;
  auto res = open(a, "silent-node");
  ASSERT_TRUE(run_until([&] { return res->answered; }, 25s));
  EXPECT_NE(res->error.find("timeout"), std::string::npos) << res->error;
  caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
}

TEST_F(peer_session_test,
       streams_echo_and_linger_is_cancelled_by_a_new_stream) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  EXPECT_EQ(sessions(a).sessions(0).state(), "lingering");
  // 20 s into the linger a stream opens: the session is ready again.
  t.advance(20s);
  auto rec = std::make_shared<client_record>();
  caf::actor client;
  auto id = open_stream(res->session, rec, client);
  ASSERT_GE(id, 0) << rec->open_error;
  EXPECT_EQ(sessions(a).sessions(0).state(), "ready");
  // As a channel does, announce the stream at once with its preamble.
  tunnel::StreamOpen open;
  open.set_resource("echo");
  caf::anon_send(client, send_atom::value,
                 encode_frame(open.SerializeAsString()), false);
  t.run();
  // Past the first linger's deadline: the cancelled timer must not fire.
  t.advance(15s);
  t.run();
  ASSERT_EQ(sessions(a).sessions_size(), 1) << sessions(a).DebugString();
  EXPECT_EQ(sessions(a).sessions(0).state(), "ready");
  // The stream ends; the session lingers again and closes 30 s later.
  caf::anon_send(client, send_atom::value, std::string{"hello"}, true);
  ASSERT_TRUE(run_until([&] { return rec->closed; }));
  EXPECT_NE(rec->received.find("hello"), std::string::npos);
  run_until([&] { return sessions(a).sessions(0).state() == "lingering"; }, 1s);
  EXPECT_EQ(sessions(a).sessions(0).state(), "lingering");
  t.advance(30s);
  run_until([&] { return sessions(a).sessions_size() == 0; }, 2s);
  EXPECT_EQ(sessions(a).sessions_size(), 0);
}

TEST_F(peer_session_test, echo_of_4_mib_arrives_intact) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"}, uint64_t{4} << 20,
              r);
  ASSERT_TRUE(run_until([&] { return r->done; }, 120s));
  EXPECT_EQ(r->error, "");
  EXPECT_EQ(r->sent, uint64_t{4} << 20);
  EXPECT_EQ(r->received, uint64_t{4} << 20);
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
}

TEST_F(peer_session_test, sixteen_concurrent_streams_each_arrive_intact) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  std::vector<std::shared_ptr<pump_result>> rs;
  for (int i = 0; i < 16; ++i) {
    rs.push_back(std::make_shared<pump_result>());
    t.sys.spawn(stream_pump, res->session, std::string{"echo"},
                uint64_t{256} << 10, rs.back());
  }
  ASSERT_TRUE(run_until(
    [&] {
      for (auto& r : rs)
        if (!r->done)
          return false;
      return true;
    },
    120s));
  for (auto& r : rs) {
    EXPECT_EQ(r->error, "");
    EXPECT_EQ(r->received, uint64_t{256} << 10);
    EXPECT_EQ(r->sent_sha256, r->received_sha256);
  }
}

TEST_F(peer_session_test, one_percent_loss_still_delivers_intact) {
  net->loss_per_mille = 10;
  // A real RTT (the 5 ms steps of run_until make it ~10 ms): with zero delay
  // BBR2 has no valid bandwidth sample and, once loss ends its Startup,
  // paces at whatever one PTO-delayed packet suggested (~3.5 KB/s).
  net->delay = 1ms;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"}, uint64_t{1} << 20,
              r);
  ASSERT_TRUE(run_until([&] { return r->done; }, 120s))
    << "sent " << r->sent << " received " << r->received << " datagrams "
    << net->datagrams << " open result " << r->open_result << "\n"
    << sessions(a).DebugString() << sessions(b).DebugString()
    << session_debug(res->session) << "B side:\n"
    << [&] {
         auto rb = open(b, a.id->node_id());
         t.run();
         return rb->session ? session_debug(rb->session) : rb->error;
       }();
  EXPECT_EQ(r->error, "");
  EXPECT_EQ(r->received, uint64_t{1} << 20);
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
}

TEST_F(peer_session_test, unknown_resource_is_refused_on_the_stream) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"no-such-thing"},
              uint64_t{1000}, r);
  ASSERT_TRUE(run_until([&] { return r->done; }));
  EXPECT_EQ(r->open_result, "UNKNOWN_RESOURCE");
  EXPECT_NE(r->error.find("no resource named 'no-such-thing'"),
            std::string::npos)
    << r->error;
}

TEST_F(peer_session_test, linger_expiry_closes_and_a_new_open_starts_over) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  t.advance(29s);
  EXPECT_EQ(sessions(a).sessions_size(), 1);
  run_until([&] { return sessions(a).sessions_size() == 0; }, 2s);
  EXPECT_EQ(sessions(a).sessions_size(), 0);
  run_until([&] { return sessions(b).sessions_size() == 0; }, 2s);
  EXPECT_EQ(sessions(b).sessions_size(), 0) << "the peer saw the close";
  auto again = open(a, b.id->node_id());
  ASSERT_TRUE(run_until([&] { return again->answered; }));
  EXPECT_TRUE(again->session);
  EXPECT_NE(again->session, res->session);
}

TEST_F(peer_session_test, close_while_connecting_fails_the_open) {
  net->hold = true; // ICE checks never finish
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open(a, b.id->node_id());
  t.run();
  ASSERT_EQ(sessions(b).sessions_size(), 1) << "B accepted the offer";
  EXPECT_EQ(sessions(b).sessions(0).state(), "connecting-ice");
  EXPECT_FALSE(res->answered);
  caf::anon_send(a.manager, stop_atom::value, std::string{"operator stop"});
  ASSERT_TRUE(run_until([&] { return res->answered; }));
  EXPECT_NE(res->error.find("shutting down"), std::string::npos) << res->error;
  // B heard the bye and closed its half-made session.
  run_until([&] { return sessions(b).sessions_size() == 0; }, 5s);
  EXPECT_EQ(sessions(b).sessions_size(), 0);
  EXPECT_EQ(net->open_agents(), 0u);
}

TEST_F(peer_session_test, simultaneous_close_from_both_ends_is_clean) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto la = sessions(a);
  auto lb = sessions(b);
  ASSERT_EQ(lb.sessions_size(), 1);
  // Both managers stop their sessions in the same instant.
  caf::anon_send(a.manager, stop_atom::value, std::string{"a stops"});
  caf::anon_send(b.manager, stop_atom::value, std::string{"b stops"});
  run_until([&] { return net->open_agents() == 0; }, 5s);
  EXPECT_EQ(net->open_agents(), 0u);
}

// --- error codes: the open's error and the open_failures label -------------

namespace {

uint64_t open_failures(const admin::SessionList& list, const std::string& k) {
  auto i = list.open_failures().find(k);
  return i == list.open_failures().end() ? 0 : i->second;
}

} // namespace

TEST_F(peer_session_test, ice_failure_is_ec_ice_failed) {
  net->fail = true;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  EXPECT_TRUE(is_error(res->err, ec::ice_failed)) << res->error;
  run_until([&] { return net->open_agents() == 0; }, 2s);
  auto list = sessions(a);
  EXPECT_EQ(open_failures(list, "ice_failed"), 1u) << list.DebugString();
  ASSERT_EQ(list.recently_closed_size(), 1);
  EXPECT_NE(list.recently_closed(0).close_reason().find("ICE failed"),
            std::string::npos);
}

TEST_F(peer_session_test, impostor_is_ec_identity_mismatch) {
  auto& a = make_node("a");
  auto real_b = std::make_shared<identity>(identity::generate());
  auto& m = make_node("m", real_b->node_id());
  auto res = open(a, real_b->node_id());
  ASSERT_TRUE(run_until([&] { return res->answered; }));
  EXPECT_TRUE(is_error(res->err, ec::identity_mismatch)) << res->error;
  auto list = sessions(a);
  EXPECT_EQ(open_failures(list, "identity_mismatch"), 1u) << list.DebugString();
  EXPECT_EQ(list.open_failures_size(), 1);
  // Mallory's side: A refused her certificate in the handshake.
  run_until([&] { return sessions(m).sessions_size() == 0; }, 5s);
  auto lm = sessions(m);
  EXPECT_EQ(open_failures(lm, "handshake_failed"), 1u) << lm.DebugString();
}

TEST_F(peer_session_test, offline_peer_is_ec_peer_offline) {
  auto& a = make_node("a");
  auto res = open(a, std::string(52, 'q'));
  ASSERT_TRUE(run_until([&] { return res->answered; }));
  EXPECT_TRUE(is_error(res->err, ec::peer_offline)) << res->error;
  run_until([&] { return sessions(a).sessions_size() == 0; }, 2s);
  EXPECT_EQ(open_failures(sessions(a), "peer_offline"), 1u);
}

TEST_F(peer_session_test, connect_timeout_is_ec_timeout) {
  auto& a = make_node("a");
  auto silent = t.sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](signal_atom, const std::string&) {}};
  });
  dir->managers["silent-node"] = silent;
  auto res = open(a, "silent-node");
  ASSERT_TRUE(run_until([&] { return res->answered; }, 25s));
  EXPECT_TRUE(is_error(res->err, ec::timeout)) << res->error;
  EXPECT_EQ(open_failures(sessions(a), "timeout"), 1u);
  caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
}

// --- The session reads a peer-opened stream's StreamOpen itself --------------

namespace {

/// The StreamOpenResult at the front of what a stream client received, and
/// the bytes after it in `rest`.
tunnel::StreamOpenResult read_open_result(const std::string& received,
                                          std::string* rest = nullptr) {
  preamble_reader r;
  tunnel::StreamOpenResult res;
  if (r.feed(received) == preamble_reader::status::complete) {
    res.ParseFromString(r.payload());
    if (rest)
      *rest = r.rest();
  } else {
    res.set_text("<no complete StreamOpenResult>");
  }
  return res;
}

std::string stream_open_frame(const std::string& resource) {
  tunnel::StreamOpen open;
  open.set_resource(resource);
  return encode_frame(open.SerializeAsString());
}

} // namespace

class peer_session_preamble_test : public peer_session_test {
protected:
  std::shared_ptr<client_record> rec = std::make_shared<client_record>();
  caf::actor client;

  /// A session a -> b and one stream on it, nothing written yet.
  void open_one_stream() {
    auto& a = make_node("a");
    auto& b = make_node("b");
    auto res = open_and_wait(a, b);
    ASSERT_TRUE(res->session) << res->error;
    ASSERT_GE(open_stream(res->session, rec, client), 0) << rec->open_error;
  }

  void send(const std::string& bytes, bool fin = false) {
    caf::anon_send(client, send_atom::value, bytes, fin);
    run_until([] { return false; }, 50ms);
  }
};

TEST_F(peer_session_preamble_test, preamble_in_pieces_then_bytes_after_it) {
  open_one_stream();
  auto wire = stream_open_frame("echo");
  // Inside the length, inside the payload, then its end with data and FIN.
  send(wire.substr(0, 2));
  send(wire.substr(2, 3));
  send(wire.substr(5) + "hello", true);
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  std::string rest;
  auto res = read_open_result(rec->received, &rest);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::OK) << res.text();
  EXPECT_EQ(rest, "hello");
}

TEST_F(peer_session_preamble_test, bytes_in_the_same_write_reach_the_owner) {
  open_one_stream();
  send(stream_open_frame("echo") + std::string(100000, 'x'), true);
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  std::string rest;
  EXPECT_EQ(read_open_result(rec->received, &rest).code(),
            tunnel::StreamOpenResult::OK);
  EXPECT_EQ(rest, std::string(100000, 'x'));
}

TEST_F(peer_session_preamble_test, oversize_preamble_is_a_bad_request) {
  open_one_stream();
  send(std::string("\x00\x00\x40\x01", 4)); // 16 KiB + 1
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  auto res = read_open_result(rec->received);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::BAD_REQUEST);
  EXPECT_NE(res.text().find("16385 bytes exceeds the 16384-byte limit"),
            std::string::npos)
    << res.text();
  // What the peer still sends is read and dropped; the stream can end.
  send(std::string(64 * 1024, 'z'), true);
  EXPECT_TRUE(run_until([&] { return rec->closed; }));
}

TEST_F(peer_session_preamble_test, the_limit_itself_is_accepted) {
  open_one_stream();
  tunnel::StreamOpen open;
  open.set_resource("echo");
  open.set_client_address(std::string(16 * 1024 - 9, 'c'));
  auto frame = encode_frame(open.SerializeAsString());
  ASSERT_EQ(frame.size(), 4u + 16 * 1024);
  send(frame + "ok", true);
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  std::string rest;
  EXPECT_EQ(read_open_result(rec->received, &rest).code(),
            tunnel::StreamOpenResult::OK);
  EXPECT_EQ(rest, "ok");
}

TEST_F(peer_session_preamble_test, malformed_stream_open_is_a_bad_request) {
  open_one_stream();
  send(encode_frame("\xff\xff\xff"));
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  auto res = read_open_result(rec->received);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::BAD_REQUEST);
  EXPECT_EQ(res.text(), "malformed StreamOpen");
}

TEST_F(peer_session_preamble_test, fin_inside_the_preamble_is_a_bad_request) {
  open_one_stream();
  send(stream_open_frame("echo").substr(0, 6), true);
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  auto res = read_open_result(rec->received);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::BAD_REQUEST);
  EXPECT_EQ(res.text(), "stream ended inside its StreamOpen");
}

TEST_F(peer_session_preamble_test, no_preamble_in_time_is_a_bad_request) {
  open_one_stream();
  send(std::string(1, '\0'));
  ASSERT_TRUE(run_until([&] { return rec->fin; }, 11s));
  auto res = read_open_result(rec->received);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::BAD_REQUEST);
  EXPECT_EQ(res.text(), "no StreamOpen within 10 s");
}

TEST_F(peer_session_preamble_test, unknown_resource_is_answered_by_name) {
  open_one_stream();
  send(stream_open_frame("nothing-here"), true);
  ASSERT_TRUE(run_until([&] { return rec->fin; }));
  auto res = read_open_result(rec->received);
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::UNKNOWN_RESOURCE);
  EXPECT_EQ(res.text(), "no resource named 'nothing-here' on this node");
}

namespace {

using dgram_atom = caf::atom_constant<caf::atom("dgram")>;

struct flow_record {
  int64_t id = -1;
  std::vector<std::string> got;
  uint64_t too_big = 0;
};

/// A FLOW OWNER: opens a stream for `resource`, attaches to its flow,
/// sends what it is told as datagrams and records what comes back.
caf::behavior flow_client(caf::event_based_actor* self, caf::actor session,
                          std::shared_ptr<flow_record> rec,
                          std::string resource) {
  self
    ->request(session, caf::infinite, stream_open_atom::value, caf::actor{self})
    .then([=](int64_t id) {
      rec->id = id;
      tunnel::StreamOpen open;
      open.set_resource(resource);
      open.set_protocol("udp");
      self->send(session, stream_write_atom::value, id,
                 encode_frame(open.SerializeAsString()), false);
      self->send(session, flow_attach_atom::value, id, caf::actor{self});
    });
  return {
    [=](dgram_atom, std::vector<std::string>& ds) {
      self->send(session, flow_send_atom::value, rec->id, std::move(ds));
    },
    [=](flow_data_atom, int64_t, std::vector<std::string>& ds) {
      for (auto& d : ds)
        rec->got.push_back(std::move(d));
    },
    [=](flow_drop_atom, int64_t, uint64_t too_big, uint64_t) {
      rec->too_big += too_big;
    },
    [=](stream_data_atom, int64_t id, const std::string& bytes, bool) {
      self->send(session, stream_consumed_atom::value, id,
                 static_cast<uint64_t>(bytes.size()));
    },
    [=](stream_credit_atom, int64_t, uint64_t) {},
    [=](stream_reset_atom, int64_t, uint64_t) {},
    [=](stream_closed_atom, int64_t) {},
    [=](session_down_atom, const caf::error&) { self->quit(); },
  };
}

} // namespace

// --- the close handshake (actors/peer/session_close.cpp) --------------------

namespace {

std::string echo_frame() {
  tunnel::StreamOpen open;
  open.set_resource("echo");
  return encode_frame(open.SerializeAsString());
}

} // namespace

TEST_F(peer_session_test, datagrams_for_a_flow_nobody_attached_are_counted) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto rec = std::make_shared<flow_record>();
  auto owner = t.sys.spawn(flow_client, res->session, rec, std::string{"echo"});
  ASSERT_TRUE(run_until([&] { return rec->id >= 0; }, 1s));
  // The far end's owner (the echo test resource) takes no datagrams.
  caf::anon_send(owner, dgram_atom::value,
                 std::vector<std::string>{"one", "two", "three"});
  caf::anon_send(owner, dgram_atom::value,
                 std::vector<std::string>{std::string(5000, 'x')});
  auto b_dropped = [&] {
    auto l = sessions(b);
    return l.sessions_size() == 1
             ? l.sessions(0).datagrams().dropped_unknown_flow()
             : 0;
  };
  ASSERT_TRUE(run_until([&] { return b_dropped() == 3; }, 2s))
    << sessions(b).DebugString();
  EXPECT_EQ(sessions(b).sessions(0).datagrams().received(), 3u);
  EXPECT_EQ(rec->too_big, 1u); // bigger than any path: dropped, reported
  EXPECT_EQ(sessions(a).sessions(0).datagrams().sent(), 3u);
  EXPECT_EQ(sessions(a).sessions(0).datagrams().dropped_oversize(), 1u);
  // An actor that does not own the stream can neither attach nor send.
  auto intruder = t.sys.spawn(
    [](caf::event_based_actor*) -> caf::behavior { return {[](int) {}}; });
  caf::anon_send(res->session, flow_attach_atom::value, rec->id, intruder);
  caf::anon_send(res->session, flow_send_atom::value, rec->id,
                 std::vector<std::string>{"forged"});
  run_until([] { return false; }, 100ms);
  EXPECT_EQ(sessions(a).sessions(0).datagrams().sent(), 3u);
  EXPECT_TRUE(rec->got.empty());
  caf::anon_send_exit(intruder, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
  t.run();
}

class close_handshake_test : public peer_session_test {
protected:
  /// The session's close_handshake status field ("" once it is gone).
  std::string hs(caf::actor session) {
    caf::scoped_actor self{t.sys};
    self->send(session, status_atom::value);
    t.run();
    std::string out;
    self->receive(
      [&](const std::string& s) {
        admin::ActorStatus as;
        as.ParseFromString(s);
        auto i = as.fields().find("close_handshake");
        if (i != as.fields().end())
          out = i->second;
      },
      caf::after(std::chrono::seconds(0)) >> [] {});
    return out;
  }

  bool phase_is(caf::actor session, const std::string& phase) {
    return hs(session).rfind(phase + " ", 0) == 0;
  }

  /// Like run_until, in 1 ms steps: the handshake's moments are milliseconds
  /// apart.
  template <class F>
  bool step_until(F done, caf::timespan limit) {
    caf::timespan spent{0};
    t.run();
    while (!done() && spent < limit) {
      t.advance(1ms);
      spent += 1ms;
    }
    return done();
  }

  /// A stream to the peer's echo resource: its preamble and `text` with a
  /// FIN go out as soon as the stream is open (at once unless it is held).
  std::shared_ptr<client_record> echo(caf::actor session,
                                      const std::string& text) {
    auto rec = std::make_shared<client_record>();
    auto client = t.sys.spawn(stream_client, session, rec);
    t.run();
    if (rec->id >= 0) {
      caf::anon_send(client, send_atom::value, echo_frame() + text, true);
      t.run();
    } else {
      held.push_back({client, rec, text});
    }
    return rec;
  }

  /// Writes to the held streams that opened meanwhile.
  void write_opened() {
    for (auto i = held.begin(); i != held.end();)
      if (i->rec->id >= 0) {
        caf::anon_send(i->client, send_atom::value, echo_frame() + i->text,
                       true);
        i = held.erase(i);
      } else {
        ++i;
      }
    t.run();
  }

  struct held_client {
    caf::actor client;
    std::shared_ptr<client_record> rec;
    std::string text;
  };
  std::vector<held_client> held;

  std::string reason(node& n) {
    auto list = sessions(n);
    return list.recently_closed_size() > 0
             ? list.recently_closed(list.recently_closed_size() - 1)
                 .close_reason()
             : "";
  }
};

TEST_F(close_handshake_test,
       the_openers_linger_is_the_sessions_and_both_agree) {
  next_linger = 30s;
  auto& a = make_node("a");
  next_linger = 300s; // b's own value is not used: a opened the session
  auto& b = make_node("b");
  auto sa = open_and_wait(a, b)->session;
  ASSERT_TRUE(sa);
  auto sb = open_and_wait(b, a)->session;
  ASSERT_TRUE(sb);
  EXPECT_NE(hs(sb).find("linger_ms=30000"), std::string::npos) << hs(sb);
  t.advance(29s);
  t.run();
  ASSERT_EQ(sessions(a).sessions_size(), 1);
  ASSERT_EQ(sessions(b).sessions_size(), 1);
  // Closed by agreement at the linger's end, on both sides, with no grace.
  ASSERT_TRUE(run_until(
    [&] {
      return sessions(a).sessions_size() == 0
             && sessions(b).sessions_size() == 0;
    },
    1500ms));
  EXPECT_NE(reason(a).find("both ends agreed"), std::string::npos) << reason(a);
  EXPECT_NE(reason(b).find("both ends agreed"), std::string::npos) << reason(b);
}

TEST_F(close_handshake_test, a_stream_at_the_proposal_is_refused_and_lives) {
  net->delay = 50ms;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto sa = open_and_wait(a, b)->session;
  auto sb = open_and_wait(b, a)->session;
  ASSERT_TRUE(sa && sb);
  ASSERT_TRUE(step_until([&] { return phase_is(sa, "proposing"); }, 31s))
    << hs(sa);
  // The peer opens a stream in the instant the proposal leaves: it is on
  // its way when the proposal arrives, so the peer refuses.
  auto rec = echo(sb, "from b");
  ASSERT_TRUE(run_until([&] { return rec->closed; }, 5s)) << rec->open_error;
  EXPECT_NE(rec->received.find("from b"), std::string::npos);
  EXPECT_NE(hs(sb).find("refusals=1"), std::string::npos) << hs(sb);
  EXPECT_NE(hs(sa).find("proposals=1"), std::string::npos) << hs(sa);
  EXPECT_EQ(sessions(a).sessions_size(), 1);
  EXPECT_EQ(sessions(b).sessions_size(), 1);
  // Idle again: the next linger closes it by agreement.
  ASSERT_TRUE(run_until([&] { return sessions(a).sessions_size() == 0; }, 32s));
  EXPECT_NE(reason(a).find("both ends agreed"), std::string::npos) << reason(a);
}

TEST_F(close_handshake_test, a_stream_during_the_handshake_cancels_it) {
  net->delay = 50ms;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto sa = open_and_wait(a, b)->session;
  auto sb = open_and_wait(b, a)->session;
  ASSERT_TRUE(sa && sb);
  ASSERT_TRUE(step_until([&] { return phase_is(sa, "proposing"); }, 31s));
  // The proposer opens a stream 10 ms later: its proposal is off.
  t.advance(10ms);
  auto x = echo(sa, "from a");
  EXPECT_TRUE(phase_is(sa, "none")) << hs(sa);
  // The peer accepted before that stream reached it; an open it makes now
  // is held, and opens once the proposer's stream arrives.
  ASSERT_TRUE(step_until([&] { return phase_is(sb, "accepted"); }, 100ms))
    << hs(sb);
  auto y = echo(sb, "from b");
  EXPECT_EQ(y->id, -1) << "held while accepted";
  EXPECT_NE(hs(sb).find("held=1"), std::string::npos) << hs(sb);
  ASSERT_TRUE(run_until(
    [&] {
      write_opened();
      return x->closed && y->closed;
    },
    5s))
    << x->open_error << " / " << y->open_error;
  EXPECT_NE(x->received.find("from a"), std::string::npos);
  EXPECT_NE(y->received.find("from b"), std::string::npos);
  EXPECT_EQ(sessions(a).sessions_size(), 1);
  EXPECT_EQ(sessions(b).sessions_size(), 1);
}

TEST_F(close_handshake_test, an_open_held_by_an_agreed_close_fails_to_reopen) {
  net->delay = 50ms;
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto sa = open_and_wait(a, b)->session;
  auto sb = open_and_wait(b, a)->session;
  ASSERT_TRUE(sa && sb);
  ASSERT_TRUE(step_until([&] { return phase_is(sb, "accepted"); }, 31s));
  auto y = echo(sb, "from b");
  // The proposer saw no stream: it closes; the held open fails as
  // session_lost, and the next open starts a new session.
  ASSERT_TRUE(run_until([&] { return !y->open_error.empty(); }, 2s));
  EXPECT_NE(y->open_error.find("open a new one"), std::string::npos)
    << y->open_error;
  EXPECT_NE(reason(b).find("both ends agreed"), std::string::npos) << reason(b);
  auto again = open_and_wait(b, a);
  ASSERT_TRUE(again->session) << again->error;
  EXPECT_NE(again->session, sb);
  auto z = echo(again->session, "again");
  ASSERT_TRUE(run_until([&] { return z->closed; }, 5s)) << z->open_error;
  EXPECT_NE(z->received.find("again"), std::string::npos);
}

TEST_F(close_handshake_test, crossing_proposals_close_once_by_the_openers) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto sa = open_and_wait(a, b)->session;
  auto sb = open_and_wait(b, a)->session;
  ASSERT_TRUE(sa && sb);
  // Both lingers started in the same instant (no delay yet): both propose
  // at once, and each proposal is on its way when the other's leaves.
  net->delay = 50ms;
  ASSERT_TRUE(step_until([&] { return phase_is(sa, "proposing"); }, 31s));
  EXPECT_TRUE(phase_is(sb, "proposing")) << hs(sb);
  // The opener's stands: b drops its own and accepts.
  ASSERT_TRUE(step_until([&] { return phase_is(sb, "accepted"); }, 60ms))
    << hs(sb);
  ASSERT_TRUE(run_until(
    [&] {
      return sessions(a).sessions_size() == 0
             && sessions(b).sessions_size() == 0;
    },
    1s));
  EXPECT_NE(reason(a).find("both ends agreed"), std::string::npos) << reason(a);
  EXPECT_NE(reason(b).find("both ends agreed"), std::string::npos) << reason(b);
}

// --- ICE restarts (actors/peer/session_path.cpp)
// ------------------------------

namespace {

class session_path_test : public peer_session_test {
protected:
  void SetUp() override {
    // A real RTT (see one_percent_loss_still_delivers_intact).
    net->delay = 1ms;
  }

  /// The session's "paths" field of its debug status.
  std::string paths_of(caf::actor session) {
    auto text = session_debug(session);
    auto at = text.find("gen=");
    return at == std::string::npos ? text
                                   : text.substr(at, text.find('"', at) - at);
  }

  /// Node b's session (opened by a).
  caf::actor session_at(node& n, node& peer) {
    auto r = open(n, peer.id->node_id());
    run_until([&] { return r->answered; }, 5s);
    return r->session;
  }

  static size_t count_reason(const admin::SessionStatus& s,
                             const std::string& reason) {
    size_t n = 0;
    for (auto& c : s.path_history())
      n += c.reason() == reason ? 1 : 0;
    return n;
  }
};

} // namespace

TEST_F(session_path_test, a_dead_path_restarts_and_the_stream_survives) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto id = sessions(a).sessions(0).session_id();
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"}, uint64_t{4} << 20,
              r);
  ASSERT_TRUE(run_until([&] { return r->received > (1u << 20); }, 60s));
  ASSERT_EQ(net->open_agents(), 2u);
  net->cut(false); // silent: only QUIC's silence tells
  ASSERT_TRUE(run_until([&] { return r->done; }, 60s))
    << "received " << r->received << "\n"
    << paths_of(res->session) << "\n"
    << sessions(a).DebugString();
  EXPECT_EQ(r->error, "");
  EXPECT_EQ(r->received, uint64_t{4} << 20);
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
  auto la = sessions(a);
  ASSERT_EQ(la.sessions_size(), 1);
  EXPECT_EQ(la.sessions(0).session_id(), id) << "the same session";
  EXPECT_EQ(count_reason(la.sessions(0), "restart"), 1u)
    << la.sessions(0).DebugString();
  auto lb = sessions(b);
  ASSERT_EQ(lb.sessions_size(), 1);
  EXPECT_EQ(count_reason(lb.sessions(0), "restart"), 1u);
  // QUIC moved to the new generation's path on both sides: the client
  // migrated, the server followed.
  for (auto* l : {&la, &lb}) {
    EXPECT_EQ(l->sessions(0).quic_path(), 1u) << l->sessions(0).DebugString();
    EXPECT_EQ(l->sessions(0).migrations(), 1u);
    auto& h = l->sessions(0).path_history();
    ASSERT_FALSE(h.empty());
    EXPECT_EQ(h.rbegin()->reason(), "restart");
    EXPECT_TRUE(h.rbegin()->migrated());
  }
  // The replaced agents retire: one agent per side is left.
  t.advance(6s);
  run_until([&] { return net->open_agents() == 2u; }, 5s);
  EXPECT_EQ(net->open_agents(), 2u);
  EXPECT_NE(paths_of(res->session)
              .find("gen=1 quic_path=1 pending=- "
                    "retiring=no"),
            std::string::npos)
    << paths_of(res->session);
}

TEST_F(session_path_test, glare_the_controlling_side_wins) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto sb = session_at(b, a);
  ASSERT_TRUE(sb);
  // Both agents say "failed" at once: both sides restart generation 1.
  net->cut(true);
  ASSERT_TRUE(run_until(
    [&] {
      return paths_of(res->session).find("gen=1 ") != std::string::npos
             && paths_of(sb).find("gen=1 ") != std::string::npos;
    },
    20s))
    << paths_of(res->session) << "\n"
    << paths_of(sb);
  auto pa = paths_of(res->session);
  auto pb = paths_of(sb);
  EXPECT_NE(pa.find("glare=1"), std::string::npos) << pa;
  EXPECT_NE(pb.find("glare=1"), std::string::npos) << pb;
  // The controlled side gave its own up; nobody failed.
  EXPECT_NE(pa.find("failed=0"), std::string::npos) << pa;
  EXPECT_NE(pb.find("failed=0"), std::string::npos) << pb;
  // The session still carries streams.
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"},
              uint64_t{256} << 10, r);
  ASSERT_TRUE(run_until([&] { return r->done; }, 30s));
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
  t.advance(6s);
  run_until([&] { return net->open_agents() == 2u; }, 5s);
  EXPECT_EQ(net->open_agents(), 2u) << "an agent leaked";
}

TEST_F(session_path_test, an_unanswered_restart_retries_until_the_idle_end) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  dir->drop_restarts = true;
  net->cut(true);
  // Restarts go unanswered for 20 s: retried with backoff, each side never
  // holds more than its current agent and one restart.
  size_t most = 0;
  run_until(
    [&] {
      most = std::max(most, net->open_agents());
      return false;
    },
    20s);
  EXPECT_LE(most, 4u);
  auto pa = paths_of(res->session);
  EXPECT_NE(pa.find("gen=0 "), std::string::npos) << pa;
  EXPECT_EQ(pa.find("failed=0"), std::string::npos) << pa;
  EXPECT_EQ(pa.find("restarts=1 "), std::string::npos) << "retried: " << pa;
  // QUIC's idle timeout (session.idle_timeout, 30 s) ends it as before, and
  // every agent of every generation is closed.
  ASSERT_TRUE(run_until([&] { return sessions(a).sessions_size() == 0; }, 20s));
  ASSERT_TRUE(run_until([&] { return sessions(b).sessions_size() == 0; }, 5s));
  EXPECT_EQ(net->open_agents(), 0u);
}

// --- a change of the local addresses (net_change_atom, session_path.cpp) ---

TEST_F(session_path_test, its_address_going_away_restarts_at_once) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  auto id = sessions(a).sessions(0).session_id();
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"}, uint64_t{4} << 20,
              r);
  ASSERT_TRUE(run_until([&] { return r->received > (1u << 20); }, 60s));
  // The fake's pairs leave from 198.18.1.1 (a host candidate): it went away.
  // The path still works here, so only the change can start the restart.
  caf::anon_send(a.manager, net_change_atom::value,
                 std::vector<std::string>{"198.18.1.7"},
                 std::vector<std::string>{"198.18.1.1"});
  ASSERT_TRUE(run_until([&] { return r->done; }, 60s))
    << "received " << r->received << "\n"
    << paths_of(res->session);
  EXPECT_EQ(r->error, "");
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
  auto la = sessions(a);
  ASSERT_EQ(la.sessions_size(), 1);
  EXPECT_EQ(la.sessions(0).session_id(), id) << "the same session";
  EXPECT_EQ(count_reason(la.sessions(0), "restart"), 1u)
    << la.sessions(0).DebugString();
  EXPECT_EQ(la.sessions(0).network_changes(), 1u);
  EXPECT_EQ(la.network_changes(), 1u);
  EXPECT_NE(paths_of(res->session).find("network_changes=1"), std::string::npos)
    << paths_of(res->session);
}

TEST_F(session_path_test, another_address_changing_leaves_a_direct_pair) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  caf::anon_send(a.manager, net_change_atom::value,
                 std::vector<std::string>{"198.18.1.7"},
                 std::vector<std::string>{"198.18.5.5"});
  run_until([] { return false; }, 2s);
  auto la = sessions(a);
  ASSERT_EQ(la.sessions_size(), 1);
  EXPECT_EQ(la.sessions(0).network_changes(), 1u);
  EXPECT_EQ(count_reason(la.sessions(0), "restart"), 0u);
  auto pa = paths_of(res->session);
  EXPECT_NE(pa.find("gen=0 quic_path=0 pending=- retiring=no restarts=0 "),
            std::string::npos)
    << pa;
  // The peer heard of no change of its own.
  EXPECT_EQ(sessions(b).sessions(0).network_changes(), 0u);
}

TEST_F(session_path_test, a_restart_lost_while_the_link_was_down_is_repeated) {
  auto& a = make_node("a");
  auto& b = make_node("b");
  auto res = open_and_wait(a, b);
  ASSERT_TRUE(res->session) << res->error;
  // The change that removed the pair's address also cut the signaling
  // link: the restart's Signals are lost.
  dir->drop_restarts = true;
  caf::anon_send(a.manager, net_change_atom::value, std::vector<std::string>{},
                 std::vector<std::string>{"198.18.1.1"});
  run_until([] { return false; }, 1s);
  auto before = paths_of(res->session);
  EXPECT_NE(before.find("gen=0 quic_path=0 pending=1 "), std::string::npos)
    << before;
  // Logged in again: the unanswered restart goes out anew and carries.
  dir->drop_restarts = false;
  caf::anon_send(a.manager, online_atom::value);
  ASSERT_TRUE(run_until(
    [&] { return paths_of(res->session).find("gen=2 ") != std::string::npos; },
    5s))
    << paths_of(res->session);
  auto r = std::make_shared<pump_result>();
  t.sys.spawn(stream_pump, res->session, std::string{"echo"},
              uint64_t{256} << 10, r);
  ASSERT_TRUE(run_until([&] { return r->done; }, 30s));
  EXPECT_EQ(r->sent_sha256, r->received_sha256);
  EXPECT_EQ(sessions(a).sessions_size(), 1);
}
