// The SIGNAL CLIENT state machine and the DIRECTORY on virtual time. Each
// node's TCP connection is a fake FRAME CONNECTION that records the frames
// the client sends it; the test injects the node's frames through it.
#include "actors/server/directory.hpp"
#include "actors/server/signal_client.hpp"
#include "actors/server/signal_server.hpp"

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include "actors/actors.hpp"
#include "actors/identity/identity.hpp"
#include "actors/signal/tls_channel.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"
#include "test_system.hpp"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

using inject_atom = caf::atom_constant<caf::atom("inject")>;

struct conn_record {
  std::vector<signal::Envelope> frames;
  bool closed = false;
};

// Each fake TLS session has its own channel binding, as real ones do.
std::string binding_of(const std::string& peer) {
  return sha256("tls session of " + peer);
}

caf::behavior recording_conn(caf::event_based_actor* self,
                             std::shared_ptr<conn_record> rec, caf::actor owner,
                             std::string peer) {
  self->send(owner, conn_up_atom::value, uint64_t{1}, caf::actor{self}, peer,
             std::string{}, binding_of(peer), std::string{});
  return {
    [=](frame_atom, const std::string& payload) {
      signal::Envelope env;
      EXPECT_TRUE(env.ParseFromString(payload));
      rec->frames.push_back(env);
    },
    [=](close_atom) {
      rec->closed = true;
      self->quit();
    },
    [=](inject_atom, const std::string& payload) {
      self->send(owner, frame_atom::value, payload);
    },
    [=](conn_down_atom, const std::string& reason) {
      self->send(owner, conn_down_atom::value, reason);
      self->quit();
    },
  };
}

struct attempt_record {
  std::vector<std::pair<bool, std::string>> reports;
};

// Stands for the SIGNAL SERVER: records how each attempt ended.
caf::behavior recording_server(caf::event_based_actor*,
                               std::shared_ptr<attempt_record> rec) {
  return {
    [=](attempt_atom, bool logged_in, const std::string& why) {
      rec->reports.emplace_back(logged_in, why);
    },
  };
}

struct test_node {
  std::shared_ptr<conn_record> rec = std::make_shared<conn_record>();
  caf::actor client;
  caf::actor conn;
  std::string peer;

  const signal::Envelope& last() const {
    return rec->frames.back();
  }
  std::string nonce() const {
    return rec->frames.at(0).hello().nonce();
  }
};

class signal_server_test : public ::testing::Test,
                           public test::deterministic_system {
protected:
  void SetUp() override {
    opts.token = "network-secret";
    // Names have owners; the operator's policy lets both nodes export cam1.
    dir = sys.spawn(directory,
                    names_options{"", write_policy(fmt::format(
                                        "[names]\ncam1 = [\"{}\", "
                                        "\"{}\"]\n",
                                        alice.node_id(), bob.node_id()))});
    server = sys.spawn(recording_server, attempts);
  }

  /// A policy file holding `text`, removed when the test ends.
  std::string write_policy(const std::string& text) {
    char path[] = "/tmp/p2proxy-names-XXXXXX";
    int fd = ::mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, text.data(), text.size()),
              static_cast<ssize_t>(text.size()));
    ::close(fd);
    temp_files.push_back(path);
    return path;
  }

  void TearDown() override {
    // The actor system waits for every actor; end what a test left running
    // (clients that are still online and the fake connections).
    for (auto& x : spawned)
      caf::anon_send_exit(x, caf::exit_reason::user_shutdown);
    caf::anon_send(dir, stop_atom::value, std::string{"test over"});
    caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
    run();
    for (auto& f : temp_files)
      ::unlink(f.c_str());
  }

  test_node connect(std::string peer) {
    test_node n;
    n.peer = peer;
    n.client = sys.spawn(signal_client, dir, opts, metrics, server);
    n.conn = sys.spawn(recording_conn, n.rec, n.client, peer);
    run();
    bindings[n.nonce()] = binding_of(peer);
    spawned.push_back(n.client);
    spawned.push_back(n.conn);
    run();
    return n;
  }

  void send(test_node& n, const signal::Envelope& env) {
    caf::anon_send(n.conn, inject_atom::value, env.SerializeAsString());
    run();
  }

  signal::Envelope login_of(const identity& id, const std::string& nonce,
                            std::string token = "network-secret") {
    signal::Envelope env;
    auto login = env.mutable_login();
    login->set_node_id(id.node_id());
    login->set_public_key(id.public_key());
    login->set_signature(
      id.sign(bound_login_challenge(bindings[nonce], nonce, id.node_id())));
    login->set_token(std::move(token));
    return env;
  }

  test_node online(const identity& id, std::string peer) {
    auto n = connect(std::move(peer));
    send(n, login_of(id, n.nonce()));
    EXPECT_EQ(n.last().msg_case(), signal::Envelope::kLoginOk);
    return n;
  }

  /// Asks `dest` and returns the reply, running the scheduler meanwhile.
  template <class T, class... Ts>
  T ask(const caf::actor& dest, Ts... xs) {
    auto out = std::make_shared<T>();
    sys.spawn([=](caf::event_based_actor* self) {
      self->request(dest, caf::infinite, xs...).then([=](T& x) {
        *out = std::move(x);
      });
    });
    run();
    return *out;
  }

  admin::ServerStatus nodes() {
    admin::ServerStatus status;
    status.ParseFromString(ask<std::string>(dir, nodes_atom::value));
    return status;
  }

  static signal::Envelope ping(uint64_t seq) {
    signal::Envelope env;
    env.mutable_ping()->set_seq(seq);
    return env;
  }

  server_options opts;
  std::shared_ptr<server_metrics> metrics = std::make_shared<server_metrics>();
  std::shared_ptr<attempt_record> attempts = std::make_shared<attempt_record>();
  /// The TLS channel binding of the connection that got each nonce.
  std::map<std::string, std::string> bindings;
  caf::actor server;
  caf::actor dir;
  std::vector<caf::actor> spawned;
  std::vector<std::string> temp_files;
  identity alice = identity::generate();
  identity bob = identity::generate();
};

TEST_F(signal_server_test, greets_with_a_hello_carrying_a_nonce) {
  auto n = connect("10.0.0.1:4000");
  ASSERT_EQ(n.rec->frames.size(), 1u);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kHello);
  EXPECT_EQ(n.last().hello().nonce().size(), 32u);
  EXPECT_EQ(n.last().hello().heartbeat_seconds(), 15u);
  EXPECT_FALSE(n.last().hello().server_version().empty());
  EXPECT_NE(connect("10.0.0.2:4000").nonce(), n.nonce());
}

TEST_F(signal_server_test, valid_login_is_answered_with_login_ok) {
  auto n = connect("10.0.0.1:4000");
  send(n, login_of(alice, n.nonce()));
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kLoginOk);
  EXPECT_EQ(n.last().login_ok().node_id(), alice.node_id());
  EXPECT_EQ(n.last().login_ok().observed_address(), "10.0.0.1:4000");
  EXPECT_EQ(n.last().login_ok().heartbeat_seconds(), 15u);
  EXPECT_FALSE(n.rec->closed);
  EXPECT_EQ(metrics->logins, 1u);
  auto status = nodes();
  ASSERT_EQ(status.nodes_size(), 1);
  EXPECT_EQ(status.nodes(0).node_id(), alice.node_id());
  EXPECT_EQ(status.nodes(0).address(), "10.0.0.1:4000");
}

TEST_F(signal_server_test, no_token_configured_accepts_any_token) {
  opts.token.clear();
  auto n = connect("10.0.0.1:4000");
  send(n, login_of(alice, n.nonce(), "anything"));
  EXPECT_EQ(n.last().msg_case(), signal::Envelope::kLoginOk);
}

TEST_F(signal_server_test, wrong_token_is_refused) {
  auto n = connect("10.0.0.1:4000");
  send(n, login_of(alice, n.nonce(), "guess"));
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::BAD_TOKEN);
  EXPECT_EQ(n.last().error().text(), "wrong network token");
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(metrics->login_failures[signal::BAD_TOKEN], 1u);
  EXPECT_EQ(metrics->logins, 0u);
  EXPECT_EQ(nodes().nodes_size(), 0);
}

TEST_F(signal_server_test, forged_node_id_is_refused) {
  // Alice's key, but Bob's node id, signed correctly by Alice.
  auto n = connect("10.0.0.1:4000");
  auto env = login_of(alice, n.nonce());
  env.mutable_login()->set_node_id(bob.node_id());
  env.mutable_login()->set_signature(alice.sign(
    bound_login_challenge(bindings[n.nonce()], n.nonce(), bob.node_id())));
  send(n, env);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::ID_MISMATCH);
  EXPECT_EQ(n.last().error().text(), "node id does not match its public key");
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(nodes().nodes_size(), 0);
}

TEST_F(signal_server_test, signature_by_another_key_is_refused) {
  auto n = connect("10.0.0.1:4000");
  auto env = login_of(alice, n.nonce());
  env.mutable_login()->set_signature(bob.sign(
    bound_login_challenge(bindings[n.nonce()], n.nonce(), alice.node_id())));
  send(n, env);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::BAD_SIGNATURE);
  EXPECT_TRUE(n.rec->closed);
}

TEST_F(signal_server_test, signature_over_another_nonce_is_refused) {
  auto first = connect("10.0.0.1:4000");
  auto second = connect("10.0.0.1:4001");
  send(second, login_of(alice, first.nonce())); // a replayed login
  ASSERT_EQ(second.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(second.last().error().code(), signal::BAD_SIGNATURE);
}

TEST_F(signal_server_test, signature_over_another_tls_session_is_refused) {
  // What a relay terminating TLS would forward: the right nonce, signed
  // over the node's session with the relay, not over this one.
  auto n = connect("10.0.0.1:4000");
  auto env = login_of(alice, n.nonce());
  env.mutable_login()->set_signature(alice.sign(
    bound_login_challenge(binding_of("relay:1"), n.nonce(), alice.node_id())));
  send(n, env);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::BAD_SIGNATURE);
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(nodes().nodes_size(), 0);
}

TEST_F(signal_server_test, tells_the_server_how_each_attempt_ended) {
  auto good = online(alice, "10.0.0.1:4000");
  auto bad = connect("10.0.0.1:4001");
  send(bad, login_of(bob, bad.nonce(), "guess"));
  auto silent = connect("10.0.0.1:4002");
  advance(10s);
  ASSERT_EQ(attempts->reports.size(), 3u);
  EXPECT_TRUE(attempts->reports[0].first);
  EXPECT_FALSE(attempts->reports[1].first);
  EXPECT_EQ(attempts->reports[1].second, "wrong network token");
  EXPECT_FALSE(attempts->reports[2].first);
  EXPECT_NE(attempts->reports[2].second.find("no login"), std::string::npos);
  // A node that logged in is never reported again, however it ends.
  caf::anon_send(good.client, stop_atom::value, std::string{"test"});
  run();
  EXPECT_EQ(attempts->reports.size(), 3u);
}

TEST_F(signal_server_test, evicted_pending_login_gets_rate_limited) {
  auto n = connect("10.0.0.1:4000");
  caf::anon_send(n.client, evict_atom::value, std::string{"make room"});
  run();
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::RATE_LIMITED);
  EXPECT_TRUE(n.rec->closed);
  // A logged-in node is never evicted.
  auto a = online(alice, "10.0.0.1:4001");
  caf::anon_send(a.client, evict_atom::value, std::string{"make room"});
  run();
  EXPECT_EQ(a.last().msg_case(), signal::Envelope::kLoginOk);
  EXPECT_FALSE(a.rec->closed);
}

TEST_F(signal_server_test, frame_before_login_is_refused) {
  auto n = connect("10.0.0.1:4000");
  send(n, ping(1));
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::NOT_LOGGED_IN);
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(metrics->login_failures[signal::NOT_LOGGED_IN], 1u);
}

TEST_F(signal_server_test, undecodable_frame_is_refused) {
  auto n = online(alice, "10.0.0.1:4000");
  caf::anon_send(n.conn, inject_atom::value, std::string{"\xff\xff\xff\xff"});
  run();
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::BAD_FRAME);
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(nodes().nodes_size(), 0); // it logged out on the way
}

TEST_F(signal_server_test, login_times_out_after_ten_seconds) {
  auto n = connect("10.0.0.1:4000");
  advance(9999ms);
  EXPECT_FALSE(n.rec->closed);
  EXPECT_EQ(n.rec->frames.size(), 1u);
  advance(1ms);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::LOGIN_TIMEOUT);
  EXPECT_EQ(n.last().error().text(), "no login within 10 s");
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(metrics->login_failures[signal::LOGIN_TIMEOUT], 1u);
}

TEST_F(signal_server_test, login_timer_is_void_after_login) {
  auto n = online(alice, "10.0.0.1:4000");
  advance(10s);
  EXPECT_FALSE(n.rec->closed);
  EXPECT_EQ(n.last().msg_case(), signal::Envelope::kLoginOk);
}

TEST_F(signal_server_test, ping_is_answered_with_pong) {
  auto n = online(alice, "10.0.0.1:4000");
  send(n, ping(42));
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kPong);
  EXPECT_EQ(n.last().pong().seq(), 42u);
}

TEST_F(signal_server_test, silent_node_is_dropped_after_dead_after) {
  auto n = online(alice, "10.0.0.1:4000");
  advance(44s);
  send(n, ping(1)); // keeps it alive until 44 + 45 s
  advance(44s);
  EXPECT_FALSE(n.rec->closed);
  advance(1s);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(n.last().error().code(), signal::HEARTBEAT_TIMEOUT);
  EXPECT_TRUE(n.rec->closed);
  EXPECT_EQ(nodes().nodes_size(), 0);
}

TEST_F(signal_server_test, second_login_replaces_the_first) {
  auto old_conn = online(alice, "10.0.0.1:4000");
  auto new_conn = online(alice, "10.0.0.9:5000");
  ASSERT_EQ(old_conn.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(old_conn.last().error().code(), signal::REPLACED);
  EXPECT_EQ(old_conn.last().error().text(),
            "replaced by a newer login from 10.0.0.9:5000");
  EXPECT_TRUE(old_conn.rec->closed);
  EXPECT_FALSE(new_conn.rec->closed);
  // The old client's logout must not take the new one offline.
  auto status = nodes();
  ASSERT_EQ(status.nodes_size(), 1);
  EXPECT_EQ(status.nodes(0).address(), "10.0.0.9:5000");
  // And signals reach the new connection.
  auto b = online(bob, "10.0.0.2:4000");
  signal::Envelope env;
  env.mutable_signal()->set_to(alice.node_id());
  env.mutable_signal()->set_candidate("c");
  send(b, env);
  EXPECT_EQ(new_conn.last().msg_case(), signal::Envelope::kSignal);
}

TEST_F(signal_server_test, lookup_answers_sorted_node_ids) {
  auto a = online(alice, "10.0.0.1:4000");
  auto b = online(bob, "10.0.0.2:4000");
  signal::Envelope reg;
  reg.mutable_register_()->add_names("cam1");
  reg.mutable_register_()->add_names("web");
  send(a, reg);
  reg.mutable_register_()->clear_names();
  reg.mutable_register_()->add_names("cam1");
  send(b, reg);
  signal::Envelope lookup;
  lookup.mutable_lookup()->set_request_id(7);
  lookup.mutable_lookup()->set_name("cam1");
  send(a, lookup);
  ASSERT_EQ(a.last().msg_case(), signal::Envelope::kLookupResult);
  auto& res = a.last().lookup_result();
  EXPECT_EQ(res.request_id(), 7u);
  EXPECT_EQ(res.name(), "cam1");
  std::vector<std::string> want{alice.node_id(), bob.node_id()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(
    std::vector<std::string>(res.node_ids().begin(), res.node_ids().end()),
    want);
  // Register replaces the set: alice no longer exports cam1.
  reg.mutable_register_()->clear_names();
  reg.mutable_register_()->add_names("web");
  send(a, reg);
  lookup.mutable_lookup()->set_request_id(8);
  send(b, lookup);
  ASSERT_EQ(b.last().msg_case(), signal::Envelope::kLookupResult);
  ASSERT_EQ(b.last().lookup_result().node_ids_size(), 1);
  EXPECT_EQ(b.last().lookup_result().node_ids(0), bob.node_id());
  // Nobody exports it.
  lookup.mutable_lookup()->set_name("nope");
  send(b, lookup);
  EXPECT_EQ(b.last().lookup_result().node_ids_size(), 0);
}

TEST_F(signal_server_test, signal_is_routed_with_from_overwritten) {
  auto a = online(alice, "10.0.0.1:4000");
  auto b = online(bob, "10.0.0.2:4000");
  signal::Envelope env;
  auto sig = env.mutable_signal();
  sig->set_to(bob.node_id());
  sig->set_from("somebody-else");
  sig->set_session_id(99);
  sig->mutable_offer()->set_ufrag("uf");
  sig->mutable_offer()->add_candidates(
    "candidate:1 1 udp 1 10.0.0.1 5000 typ host");
  send(a, env);
  ASSERT_EQ(b.last().msg_case(), signal::Envelope::kSignal);
  auto& got = b.last().signal();
  EXPECT_EQ(got.from(), alice.node_id());
  EXPECT_EQ(got.to(), bob.node_id());
  EXPECT_EQ(got.session_id(), 99u);
  EXPECT_EQ(got.offer().ufrag(), "uf");
  EXPECT_EQ(got.offer().candidates_size(), 1);
  EXPECT_EQ(a.last().msg_case(), signal::Envelope::kLoginOk); // no answer
}

TEST_F(signal_server_test, signal_to_offline_peer_is_answered_peer_offline) {
  auto a = online(alice, "10.0.0.1:4000");
  signal::Envelope env;
  env.mutable_signal()->set_to(bob.node_id());
  env.mutable_signal()->set_session_id(5);
  env.mutable_signal()->set_bye("done");
  send(a, env);
  ASSERT_EQ(a.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(a.last().error().code(), signal::PEER_OFFLINE);
  EXPECT_EQ(a.last().error().peer(), bob.node_id());
  EXPECT_EQ(a.last().error().session_id(), 5u);
  EXPECT_FALSE(a.rec->closed);
}

TEST_F(signal_server_test, disconnect_takes_the_node_offline) {
  auto a = online(alice, "10.0.0.1:4000");
  EXPECT_EQ(nodes().nodes_size(), 1);
  caf::anon_send(a.conn, conn_down_atom::value,
                 std::string{"peer closed the connection"});
  run();
  EXPECT_EQ(nodes().nodes_size(), 0);
  EXPECT_EQ(metrics->dropped_connections, 0u);
}

TEST_F(signal_server_test, stop_ends_clients_with_shutting_down) {
  auto a = online(alice, "10.0.0.1:4000");
  caf::anon_send(a.client, stop_atom::value, std::string{"operator"});
  run();
  ASSERT_EQ(a.last().msg_case(), signal::Envelope::kError);
  EXPECT_EQ(a.last().error().code(), signal::SHUTTING_DOWN);
  EXPECT_TRUE(a.rec->closed);
  EXPECT_EQ(nodes().nodes_size(), 0);
}

// --- names have owners ------------------------------------------------------

/// The RegisterResult a node received last, by name: "" for registered, else
/// the code and the owners ("NAME_TAKEN owner1,owner2").
std::map<std::string, std::string> register_answers(const test_node& n) {
  std::map<std::string, std::string> out;
  for (auto i = n.rec->frames.rbegin(); i != n.rec->frames.rend(); ++i) {
    if (i->msg_case() != signal::Envelope::kRegisterResult)
      continue;
    for (auto& r : i->register_result().names()) {
      std::string v;
      if (r.code() != signal::ERROR_UNSPECIFIED) {
        v = signal::ErrorCode_Name(r.code());
        for (int k = 0; k < r.owners_size(); ++k)
          v += (k == 0 ? " " : ",") + r.owners(k);
      }
      out[r.name()] = v;
    }
    break;
  }
  return out;
}

signal::Envelope register_of(std::vector<std::string> names) {
  signal::Envelope env;
  for (auto& n : names)
    env.mutable_register_()->add_names(n);
  return env;
}

TEST_F(signal_server_test, a_claimed_name_is_refused_to_others_alone) {
  auto a = online(alice, "10.0.0.1:4000");
  auto b = online(bob, "10.0.0.2:4000");
  send(a, register_of({"web"}));
  EXPECT_EQ(register_answers(a),
            (std::map<std::string, std::string>{{"web", ""}}));
  send(b, register_of({"web", "other"}));
  EXPECT_EQ(register_answers(b),
            (std::map<std::string, std::string>{
              {"web", "NAME_TAKEN " + alice.node_id()}, {"other", ""}}));
  EXPECT_FALSE(b.rec->closed); // a refusal is an answer, not an error
  // The look-up answers the owner only.
  signal::Envelope lk;
  lk.mutable_lookup()->set_request_id(3);
  lk.mutable_lookup()->set_name("web");
  send(b, lk);
  ASSERT_EQ(b.last().msg_case(), signal::Envelope::kLookupResult);
  EXPECT_EQ(
    std::vector<std::string>(b.last().lookup_result().node_ids().begin(),
                             b.last().lookup_result().node_ids().end()),
    std::vector<std::string>{alice.node_id()});
  // An owner that goes offline keeps its name.
  caf::anon_send(a.conn, conn_down_atom::value, std::string{"gone"});
  run();
  send(b, register_of({"web", "other"}));
  EXPECT_EQ(register_answers(b)["web"], "NAME_TAKEN " + alice.node_id());
  send(b, lk);
  EXPECT_EQ(b.last().lookup_result().node_ids_size(), 0);
}

TEST_F(signal_server_test, owners_outlive_a_restart_of_the_directory) {
  char tmpl[] = "/tmp/p2proxy-state-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string state = tmpl;
  auto restart = [&] {
    caf::anon_send(dir, stop_atom::value, std::string{"restart"});
    run();
    dir = sys.spawn(directory, names_options{state, ""});
    run();
  };
  restart();
  {
    auto a = online(alice, "10.0.0.1:4000");
    send(a, register_of({"web"}));
    EXPECT_EQ(register_answers(a)["web"], "");
    caf::anon_send(a.conn, conn_down_atom::value, std::string{"gone"});
    run();
  }
  restart();
  // The squatter comes first after the restart: the name is still alice's.
  auto b = online(bob, "10.0.0.2:4000");
  send(b, register_of({"web"}));
  EXPECT_EQ(register_answers(b)["web"], "NAME_TAKEN " + alice.node_id());
  auto a = online(alice, "10.0.0.1:4001");
  send(a, register_of({"web"}));
  EXPECT_EQ(register_answers(a)["web"], "");
  caf::anon_send(dir, stop_atom::value, std::string{"test over"});
  run();
  ::unlink((state + "/owners.toml").c_str());
  ::rmdir(state.c_str());
}

TEST_F(signal_server_test,
       policy_reload_moves_a_name_and_a_bad_file_changes_nothing) {
  auto policy = write_policy("");
  caf::anon_send(dir, stop_atom::value, std::string{"restart"});
  run();
  dir = sys.spawn(directory, names_options{"", policy});
  auto a = online(alice, "10.0.0.1:4000");
  auto b = online(bob, "10.0.0.2:4000");
  send(a, register_of({"web"}));
  send(b, register_of({"web"}));
  EXPECT_EQ(register_answers(b)["web"], "NAME_TAKEN " + alice.node_id());
  auto rewrite = [&](const std::string& text) {
    FILE* f = fopen(policy.c_str(), "w");
    fputs(text.c_str(), f);
    fclose(f);
    caf::anon_send(dir, reload_atom::value);
    run();
  };
  // Moved to bob: both nodes hear the new answer without registering again.
  rewrite(fmt::format("[names]\nweb = [\"{}\"]\n", bob.node_id()));
  EXPECT_EQ(register_answers(b)["web"], "");
  EXPECT_EQ(register_answers(a)["web"], "NAME_TAKEN " + bob.node_id());
  // A file that does not parse keeps the policy in force.
  rewrite("[names]\nweb = [\"not an id\"\n");
  EXPECT_EQ(register_answers(b)["web"], "");
  EXPECT_EQ(register_answers(a)["web"], "NAME_TAKEN " + bob.node_id());
  // The move sticks once the policy forgets the name: bob owns it now.
  rewrite("");
  EXPECT_EQ(register_answers(b)["web"], "");
  EXPECT_EQ(register_answers(a)["web"], "NAME_TAKEN " + bob.node_id());
}

TEST(names_policy, a_malformed_file_is_refused_with_its_line) {
  char path[] = "/tmp/p2proxy-policy-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string text = "[names]\nweb = [\"" + identity::generate().node_id()
                     + "\"]\ncam = \"not a list\"\n";
  ASSERT_EQ(::write(fd, text.data(), text.size()),
            static_cast<ssize_t>(text.size()));
  ::close(fd);
  try {
    names_policy::load(path);
    ADD_FAILURE() << "a malformed policy was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(std::string(path) + ":3: ", 0), 0u)
      << e.what();
  }
  ::unlink(path);
}

TEST(login_rate_limiter, allows_a_burst_then_refills_over_the_window) {
  login_rate_limiter lim{3, std::chrono::milliseconds{60000}};
  auto t = login_rate_limiter::clock::time_point{};
  bool first = false;
  EXPECT_TRUE(lim.allow("a", t));
  EXPECT_TRUE(lim.allow("a", t));
  EXPECT_TRUE(lim.allow("a", t));
  EXPECT_FALSE(lim.allow("a", t, &first));
  EXPECT_TRUE(first);
  EXPECT_FALSE(lim.allow("a", t + 1s, &first));
  EXPECT_FALSE(first);                  // logged once per burst
  EXPECT_TRUE(lim.allow("b", t));       // per source
  EXPECT_TRUE(lim.allow("a", t + 21s)); // one attempt back every 20 s
  EXPECT_FALSE(lim.allow("a", t + 22s));
}

TEST(login_rate_limiter, an_address_stays_limited_for_a_window) {
  login_rate_limiter lim{2, std::chrono::milliseconds{60000}};
  auto t = login_rate_limiter::clock::time_point{};
  EXPECT_FALSE(lim.exhausted("a", t));
  lim.allow("a", t);
  lim.allow("a", t);
  EXPECT_FALSE(lim.exhausted("a", t)); // used up, never refused yet
  EXPECT_FALSE(lim.allow("a", t + 1s));
  EXPECT_TRUE(lim.exhausted("a", t + 1s));
  // A refill alone does not lift it while the window lasts.
  EXPECT_TRUE(lim.exhausted("a", t + 40s));
  EXPECT_FALSE(lim.exhausted("a", t + 62s));
  EXPECT_FALSE(lim.exhausted("b", t + 1s));
}

TEST(login_rate_limiter, zero_burst_means_no_limit) {
  login_rate_limiter lim{0, std::chrono::milliseconds{60000}};
  for (int i = 0; i < 100; ++i)
    EXPECT_TRUE(lim.allow("a", login_rate_limiter::clock::time_point{}));
}

} // namespace

// --- relays handed out at login (proto IceServers) ---------------------------

TEST_F(signal_server_test, login_ok_carries_servers_and_minted_credentials) {
  opts.relay.stun.push_back(endpoint{"", 3479});
  opts.relay.turn.push_back(endpoint{"198.18.0.1", 3478});
  opts.relay.turn_secret = "north";
  opts.relay.turn_ttl = std::chrono::seconds(3600);
  auto before = std::chrono::system_clock::now();
  auto n = online(alice, "10.0.0.1:4000");
  ASSERT_TRUE(n.last().login_ok().has_ice_servers());
  auto& servers = n.last().login_ok().ice_servers();
  ASSERT_EQ(servers.stun_size(), 1);
  EXPECT_EQ(servers.stun(0), ":3479");
  ASSERT_EQ(servers.turn_size(), 1);
  auto& turn = servers.turn(0);
  EXPECT_EQ(turn.server(), "198.18.0.1:3478");
  auto expiry = std::chrono::system_clock::to_time_t(before) + 3600;
  EXPECT_GE(servers.expires_unix(), static_cast<uint64_t>(expiry));
  EXPECT_LE(servers.expires_unix(), static_cast<uint64_t>(expiry + 5));
  EXPECT_EQ(turn.user(),
            fmt::format("{}:{}", servers.expires_unix(), alice.node_id()));
  EXPECT_EQ(turn.password(), turn_rest_password("north", turn.user()));
  sched.clock().cancel_all();
}

TEST_F(signal_server_test, credentials_are_pushed_again_at_half_their_life) {
  opts.relay.turn.push_back(endpoint{"198.18.0.1", 3478});
  opts.relay.turn_secret = "north";
  opts.relay.turn_ttl = std::chrono::seconds(600);
  opts.dead_after = std::chrono::hours(1); // no heartbeats in this test
  auto n = online(alice, "10.0.0.1:4000");
  auto first = n.last().login_ok().ice_servers().turn(0).user();
  advance(299s);
  EXPECT_EQ(n.last().msg_case(), signal::Envelope::kLoginOk);
  advance(1s);
  ASSERT_EQ(n.last().msg_case(), signal::Envelope::kIceServers);
  auto& turn = n.last().ice_servers().turn(0);
  EXPECT_EQ(turn.password(), turn_rest_password("north", turn.user()));
  EXPECT_NE(turn.user().find(alice.node_id()), std::string::npos);
  advance(300s);
  EXPECT_EQ(n.last().msg_case(), signal::Envelope::kIceServers);
  EXPECT_FALSE(n.rec->closed);
  sched.clock().cancel_all();
}

TEST_F(signal_server_test, no_relays_configured_sends_no_ice_servers) {
  auto n = online(alice, "10.0.0.1:4000");
  EXPECT_FALSE(n.last().login_ok().has_ice_servers());
  sched.clock().cancel_all();
}

TEST_F(signal_server_test, probe_login_answers_and_leaves_the_directory_alone) {
  opts.relay.stun_probes.push_back(endpoint{"", 3479});
  opts.relay.stun_probes.push_back(endpoint{"198.18.0.10", 3480});
  auto running = online(alice, "10.0.0.1:4000");
  auto probe = connect("10.0.0.1:4001");
  auto login = login_of(alice, probe.nonce());
  login.mutable_login()->set_probe_only(true);
  send(probe, login);
  ASSERT_EQ(probe.last().msg_case(), signal::Envelope::kLoginOk);
  auto& servers = probe.last().login_ok().ice_servers();
  ASSERT_EQ(servers.stun_probes_size(), 2);
  EXPECT_EQ(servers.stun_probes(0), ":3479");
  EXPECT_EQ(servers.stun_probes(1), "198.18.0.10:3480");
  EXPECT_TRUE(probe.rec->closed);
  // The running node is neither replaced nor moved.
  EXPECT_FALSE(running.rec->closed);
  auto status = nodes();
  ASSERT_EQ(status.nodes_size(), 1);
  EXPECT_EQ(status.nodes(0).address(), "10.0.0.1:4000");
  sched.clock().cancel_all();
}
