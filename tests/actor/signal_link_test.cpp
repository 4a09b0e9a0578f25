// The SIGNAL LINK state machine on virtual time, with the CONNECTOR and the
// FRAME CONNECTION replaced by fakes that record what the link sends.
#include "actors/signal/signal_link.hpp"

#include <map>
#include <set>

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/signal/tls_channel.hpp"
#include "test_system.hpp"

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

using inject_atom = caf::atom_constant<caf::atom("inject")>;
using up_atom = caf::atom_constant<caf::atom("up")>;

struct connect_request {
  uint64_t tag;
  std::string host;
  uint16_t port;
  caf::actor owner;
};

struct fake_world {
  /// What the fake connections report of their TLS session: the server's
  /// key id (the test pins it unless it says otherwise), the channel
  /// binding, and why the chain does not verify (self-signed).
  std::string server_key_id = identity::generate().node_id();
  std::string binding = std::string(32, '\x42');
  std::vector<connect_request> connects;
  // frames each fake connection received, by connection number
  std::vector<std::vector<signal::Envelope>> sent;
  std::vector<bool> closed;
};

caf::behavior fake_connector(caf::event_based_actor*,
                             std::shared_ptr<fake_world> w) {
  return {
    [=](connect_atom, uint64_t tag, const std::string& host, uint16_t port,
        caf::actor owner) {
      w->connects.push_back({tag, host, port, owner});
    },
  };
}

/// Stands for one TCP connection to the server; the test makes it deliver
/// frames to the link as the real one would.
caf::behavior fake_conn(caf::event_based_actor* self,
                        std::shared_ptr<fake_world> w, size_t index,
                        caf::actor owner) {
  return {
    [=](up_atom, uint64_t tag) {
      self->send(owner, conn_up_atom::value, tag, caf::actor{self},
                 std::string{"127.0.0.1:7000"}, w->server_key_id, w->binding,
                 std::string{"the certificate issuer is unknown"});
    },
    [=](inject_atom, const std::string& payload) {
      self->send(owner, frame_atom::value, payload);
    },
    [=](conn_down_atom, const std::string& reason) {
      self->send(owner, conn_down_atom::value, reason);
      self->quit();
    },
    [=](frame_atom, const std::string& payload) {
      signal::Envelope env;
      EXPECT_TRUE(env.ParseFromString(payload));
      w->sent[index].push_back(env);
    },
    [=](close_atom) {
      w->closed[index] = true;
      self->quit();
    },
  };
}

class signal_link_test : public ::testing::Test {
protected:
  test::deterministic_system t;
  std::shared_ptr<fake_world> world = std::make_shared<fake_world>();
  std::shared_ptr<const identity> me
    = std::make_shared<identity>(identity::generate());
  caf::actor connector;
  caf::actor link;
  std::vector<caf::actor> conns;

  void SetUp() override {
    start(world->server_key_id, "");
  }

  /// Starts the link pinning `pinned` (or, when empty, trusting on first use
  /// with `store`).
  void start(const std::string& pinned, const std::string& store,
             std::vector<endpoint> servers = {}) {
    connector = t.sys.spawn(fake_connector, world);
    signal_link_config cfg;
    cfg.server = endpoint{"127.0.0.1", 7000};
    cfg.servers = std::move(servers);
    cfg.trust.pinned_id = pinned;
    cfg.trust.store_path = store;
    cfg.token = "secret";
    cfg.exports = {"cam1", "web"};
    cfg.seed = 99;
    link = t.sys.spawn(signal_link, cfg, me, connector, caf::actor{});
    t.run();
  }

  void TearDown() override {
    caf::anon_send(link, stop_atom::value, std::string{"test over"});
    t.run();
    for (auto& c : conns)
      caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(connector, caf::exit_reason::user_shutdown);
    t.run();
  }

  /// Answers the newest connect request with a fresh fake connection.
  size_t accept_connect() {
    EXPECT_FALSE(world->connects.empty());
    auto& req = world->connects.back();
    auto index = conns.size();
    world->sent.emplace_back();
    world->closed.push_back(false);
    conns.push_back(t.sys.spawn(fake_conn, world, index, req.owner));
    caf::anon_send(conns.back(), up_atom::value, req.tag);
    t.run();
    return index;
  }

  void inject(size_t conn, const signal::Envelope& env) {
    caf::anon_send(conns[conn], inject_atom::value, env.SerializeAsString());
    t.run();
  }

  void send_hello(size_t conn, const std::string& nonce) {
    signal::Envelope env;
    env.mutable_hello()->set_nonce(nonce);
    env.mutable_hello()->set_heartbeat_seconds(15);
    inject(conn, env);
  }

  void send_login_ok(size_t conn) {
    signal::Envelope env;
    env.mutable_login_ok()->set_node_id(me->node_id());
    env.mutable_login_ok()->set_observed_address("127.0.0.1:40000");
    inject(conn, env);
  }

  /// Connect, Hello, LoginOk: the link is online on connection `conn`.
  size_t log_in() {
    auto conn = accept_connect();
    send_hello(conn, "nonce-" + std::to_string(conn));
    send_login_ok(conn);
    return conn;
  }

  /// The link's status document; the scoped actor's request is queued, the
  /// coordinator runs the link, then the answer is read.
  admin::SignalLinkStatus status() {
    caf::scoped_actor self{t.sys};
    self->send(link, get_atom::value);
    t.run();
    admin::SignalLinkStatus st;
    self->receive([&](const std::string& s) { st.ParseFromString(s); });
    return st;
  }

  std::string state() {
    return status().state();
  }

  size_t count(size_t conn, signal::Envelope::MsgCase which) {
    size_t n = 0;
    for (auto& env : world->sent[conn])
      n += env.msg_case() == which;
    return n;
  }
};

} // namespace

TEST_F(signal_link_test, connects_at_once_to_the_configured_server) {
  ASSERT_EQ(world->connects.size(), 1u);
  EXPECT_EQ(world->connects[0].host, "127.0.0.1");
  EXPECT_EQ(world->connects[0].port, 7000);
  EXPECT_EQ(state(), "connecting");
}

TEST_F(signal_link_test, login_signs_the_server_nonce_and_registers_exports) {
  auto conn = accept_connect();
  EXPECT_EQ(state(), "logging-in");
  send_hello(conn, std::string(32, '\x07'));
  ASSERT_EQ(world->sent[conn].size(), 1u);
  auto& login = world->sent[conn][0].login();
  EXPECT_EQ(login.node_id(), me->node_id());
  EXPECT_EQ(login.token(), "secret");
  EXPECT_EQ(node_id_from_spki(login.public_key()), me->node_id());
  EXPECT_TRUE(verify_signature(login.public_key(),
                               bound_login_challenge(world->binding,
                                                     std::string(32, '\x07'),
                                                     me->node_id()),
                               login.signature()));
  // signed for another nonce, the signature must not verify
  EXPECT_FALSE(verify_signature(login.public_key(),
                                bound_login_challenge(world->binding,
                                                      std::string(32, '\x08'),
                                                      me->node_id()),
                                login.signature()));
  // nor over another TLS session (a relay that terminates TLS has its own)
  EXPECT_FALSE(verify_signature(login.public_key(),
                                bound_login_challenge(std::string(32, '\x43'),
                                                      std::string(32, '\x07'),
                                                      me->node_id()),
                                login.signature()));
  send_login_ok(conn);
  EXPECT_EQ(state(), "online");
  ASSERT_EQ(count(conn, signal::Envelope::kRegister), 1u);
  auto& reg = world->sent[conn][1].register_();
  ASSERT_EQ(reg.names_size(), 2);
  EXPECT_EQ(reg.names(0), "cam1");
  EXPECT_EQ(reg.names(1), "web");
}

TEST_F(signal_link_test, heartbeat_every_15s_while_the_server_answers) {
  auto conn = log_in();
  for (int i = 1; i <= 5; ++i) {
    t.advance(15s);
    ASSERT_EQ(count(conn, signal::Envelope::kPing), static_cast<size_t>(i));
    signal::Envelope pong;
    pong.mutable_pong()->set_seq(i);
    inject(conn, pong);
  }
  EXPECT_EQ(state(), "online");
  EXPECT_FALSE(world->closed[conn]);
  EXPECT_EQ(world->connects.size(), 1u);
}

TEST_F(signal_link_test,
       heartbeat_loss_reconnects_with_backoff_and_reregisters) {
  auto conn = log_in();
  // The server goes silent: pings at 15 s and 30 s, declared dead at 45 s.
  t.advance(15s);
  t.advance(15s);
  EXPECT_EQ(state(), "online");
  t.advance(15s);
  EXPECT_EQ(state(), "backoff");
  EXPECT_TRUE(world->closed[conn]);
  EXPECT_EQ(world->connects.size(), 1u);
  // The first retry comes within [0.5 s, 1 s].
  t.advance(499ms);
  EXPECT_EQ(world->connects.size(), 1u);
  t.advance(501ms);
  ASSERT_EQ(world->connects.size(), 2u);
  auto conn2 = log_in();
  EXPECT_EQ(state(), "online");
  EXPECT_EQ(count(conn2, signal::Envelope::kRegister), 1u);
  auto st = status();
  EXPECT_EQ(st.reconnects(), 1u);
  EXPECT_NE(st.last_error(), "");
}

TEST_F(signal_link_test, failed_attempts_back_off_exponentially_up_to_30s) {
  // Every attempt is refused; the delays before attempts 2..8 have ceilings
  // 1, 2, 4, 8, 16, 30, 30 s and floors of half those.
  const int64_t ceilings_ms[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (auto hi : ceilings_ms) {
    auto before = world->connects.size();
    auto& req = world->connects.back();
    caf::anon_send(link, conn_fail_atom::value, req.tag,
                   std::string{"connection refused"});
    t.run();
    EXPECT_EQ(state(), "backoff");
    t.advance(std::chrono::milliseconds(hi / 2 - 1));
    EXPECT_EQ(world->connects.size(), before) << "retried too early";
    t.advance(std::chrono::milliseconds(hi - hi / 2 + 1));
    EXPECT_EQ(world->connects.size(), before + 1) << "retried too late";
  }
  // A successful login resets the schedule.
  log_in();
  EXPECT_EQ(state(), "online");
}

TEST_F(signal_link_test, a_stale_timer_is_ignored) {
  // Attempt 1 fails at once; attempt 2 logs in. Attempt 1's login timeout
  // (15 s after it started) must not tear down the new, healthy connection.
  caf::anon_send(link, conn_fail_atom::value, world->connects[0].tag,
                 std::string{"connection refused"});
  t.run();
  t.advance(1s);
  ASSERT_EQ(world->connects.size(), 2u);
  auto conn = log_in();
  signal::Envelope pong;
  for (int i = 0; i < 3; ++i) {
    t.advance(5s);
    inject(conn, pong);
  }
  EXPECT_EQ(state(), "online");
  EXPECT_FALSE(world->closed[conn]);
  EXPECT_EQ(world->connects.size(), 2u);
}

TEST_F(signal_link_test, a_late_connection_for_an_abandoned_attempt_is_closed) {
  auto old_tag = world->connects[0].tag;
  t.advance(15s); // login timeout of attempt 1
  EXPECT_EQ(state(), "backoff");
  // The connector's answer for attempt 1 arrives after all.
  world->sent.emplace_back();
  world->closed.push_back(false);
  conns.push_back(t.sys.spawn(fake_conn, world, 0, link));
  caf::anon_send(conns.back(), up_atom::value, old_tag);
  t.run();
  EXPECT_TRUE(world->closed[0]);
  EXPECT_EQ(state(), "backoff");
}

TEST_F(signal_link_test, login_timeout_when_the_server_never_says_hello) {
  auto conn = accept_connect();
  t.advance(14s);
  EXPECT_EQ(state(), "logging-in");
  t.advance(1s);
  EXPECT_EQ(state(), "backoff");
  EXPECT_TRUE(world->closed[conn]);
}

TEST_F(signal_link_test, refused_login_is_reported_and_retried) {
  auto conn = accept_connect();
  send_hello(conn, "n");
  signal::Envelope err;
  err.mutable_error()->set_code(signal::BAD_TOKEN);
  err.mutable_error()->set_text("wrong network token");
  inject(conn, err);
  EXPECT_EQ(state(), "backoff");
  auto st = status();
  EXPECT_EQ(st.login_failures(), 1u);
  EXPECT_NE(st.last_error().find("wrong network token"), std::string::npos);
  t.advance(1s);
  EXPECT_EQ(world->connects.size(), 2u);
}

TEST_F(signal_link_test, replaced_login_waits_the_longest_backoff) {
  auto conn = log_in();
  signal::Envelope err;
  err.mutable_error()->set_code(signal::REPLACED);
  err.mutable_error()->set_text("replaced by a newer login");
  inject(conn, err);
  EXPECT_EQ(state(), "backoff");
  t.advance(29s);
  EXPECT_EQ(world->connects.size(), 1u);
  t.advance(1s);
  EXPECT_EQ(world->connects.size(), 2u);
}

TEST_F(signal_link_test, lookup_is_answered_from_the_server) {
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam9"});
  t.run();
  auto& lk = world->sent[conn].back();
  ASSERT_TRUE(lk.has_lookup());
  EXPECT_EQ(lk.lookup().name(), "cam9");
  signal::Envelope res;
  res.mutable_lookup_result()->set_request_id(lk.lookup().request_id());
  res.mutable_lookup_result()->set_name("cam9");
  res.mutable_lookup_result()->add_node_ids("peer-a");
  inject(conn, res);
  bool got = false;
  self->receive([&](const std::vector<std::string>& ids) {
    got = true;
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_EQ(ids[0], "peer-a");
  });
  EXPECT_TRUE(got);
}

TEST_F(signal_link_test, lookup_times_out_and_fails_when_offline) {
  log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam1"});
  t.run();
  t.advance(5s);
  std::string text;
  self->receive([&](const std::vector<std::string>&) { text = "answered"; },
                [&](caf::error& err) { text = error_text(err); });
  EXPECT_NE(text.find("no answer"), std::string::npos) << text;
}

TEST_F(signal_link_test, lookup_while_offline_says_why) {
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam9"});
  t.run();
  std::string text;
  self->receive([&](const std::vector<std::string>&) { text = "answered"; },
                [&](caf::error& err) { text = error_text(err); });
  EXPECT_NE(text.find("not logged in"), std::string::npos) << text;
}

TEST_F(signal_link_test, pending_lookup_fails_when_the_link_drops) {
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam1"});
  t.run();
  caf::anon_send(conns[conn], conn_down_atom::value,
                 std::string{"peer closed the connection"});
  t.run();
  EXPECT_EQ(state(), "backoff");
  std::string text;
  self->receive([&](const std::vector<std::string>&) { text = "answered"; },
                [&](caf::error& err) { text = error_text(err); });
  EXPECT_EQ(text, "peer closed the connection");
}

TEST_F(signal_link_test, signals_are_relayed_both_ways) {
  auto conn = log_in();
  // Incoming: to the sink.
  std::vector<std::string> got;
  auto sink = t.sys.spawn([&](caf::event_based_actor*) -> caf::behavior {
    return {[&](signal_atom, const std::string& s) { got.push_back(s); }};
  });
  caf::anon_send(link, sink_atom::value, sink);
  t.run();
  signal::Envelope in;
  in.mutable_signal()->set_from("peer-b");
  in.mutable_signal()->set_to(me->node_id());
  in.mutable_signal()->set_session_id(7);
  in.mutable_signal()->set_candidate(
    "candidate:1 1 UDP 1 198.18.0.1 4000 typ host");
  inject(conn, in);
  ASSERT_EQ(got.size(), 1u);
  signal::Signal sig;
  ASSERT_TRUE(sig.ParseFromString(got[0]));
  EXPECT_EQ(sig.from(), "peer-b");
  EXPECT_EQ(sig.session_id(), 7u);
  // Outgoing: from a session owner to the server, `from` left to the server.
  signal::Signal out;
  out.set_to("peer-b");
  out.set_from("forged");
  out.set_bye("done");
  caf::anon_send(link, signal_atom::value, out.SerializeAsString());
  t.run();
  auto& last = world->sent[conn].back();
  ASSERT_TRUE(last.has_signal());
  EXPECT_EQ(last.signal().to(), "peer-b");
  EXPECT_EQ(last.signal().from(), "");
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  t.run();
}

TEST_F(signal_link_test, probes_are_answered_and_measured) {
  auto conn = log_in();
  signal::Envelope in;
  in.mutable_signal()->set_from("peer-b");
  in.mutable_signal()->mutable_probe()->set_nonce(42);
  inject(conn, in);
  auto& reply = world->sent[conn].back();
  ASSERT_TRUE(reply.has_signal());
  EXPECT_EQ(reply.signal().to(), "peer-b");
  EXPECT_TRUE(reply.signal().probe().reply());
  EXPECT_EQ(reply.signal().probe().nonce(), 42u);
}

TEST_F(signal_link_test, stop_closes_the_connection_and_ends_the_link) {
  auto conn = log_in();
  caf::anon_send(link, stop_atom::value, std::string{"shutdown"});
  t.run();
  EXPECT_TRUE(world->closed[conn]);
  caf::scoped_actor self{t.sys};
  self->monitor(link);
  t.run();
  bool down = false;
  self->receive([&](caf::down_msg&) { down = true; });
  EXPECT_TRUE(down);
}

TEST(signal_link_table, only_listed_transitions_are_allowed) {
  using s = link_state;
  EXPECT_TRUE(link_transition_allowed(s::idle, s::connecting));
  EXPECT_TRUE(link_transition_allowed(s::connecting, s::logging_in));
  EXPECT_TRUE(link_transition_allowed(s::logging_in, s::online));
  EXPECT_TRUE(link_transition_allowed(s::online, s::backoff));
  EXPECT_TRUE(link_transition_allowed(s::backoff, s::connecting));
  EXPECT_FALSE(link_transition_allowed(s::idle, s::online));
  EXPECT_FALSE(link_transition_allowed(s::backoff, s::online));
  EXPECT_FALSE(link_transition_allowed(s::online, s::logging_in));
  EXPECT_FALSE(link_transition_allowed(s::stopped, s::connecting));
}

// --- error codes: callers choose replies and counters from these ----------

namespace {

/// What a look-up answered: the ids, or the error.
struct lookup_answer {
  bool answered = false;
  std::vector<std::string> ids;
  caf::error err;
};

lookup_answer receive_lookup(caf::scoped_actor& self) {
  lookup_answer a;
  self->receive(
    [&](const std::vector<std::string>& ids) {
      a.answered = true;
      a.ids = ids;
    },
    [&](caf::error& err) {
      a.answered = true;
      a.err = err;
    },
    caf::after(std::chrono::seconds(0)) >> [] {});
  return a;
}

} // namespace

TEST_F(signal_link_test, lookup_while_offline_is_not_online) {
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam9"});
  t.run();
  auto a = receive_lookup(self);
  ASSERT_TRUE(a.answered);
  EXPECT_TRUE(is_error(a.err, ec::not_online)) << error_text(a.err);
  EXPECT_EQ(failure_class(a.err), "not_online");
}

TEST_F(signal_link_test, lookup_without_an_answer_is_a_timeout) {
  log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam1"});
  t.run();
  t.advance(5s);
  auto a = receive_lookup(self);
  ASSERT_TRUE(a.answered);
  EXPECT_TRUE(is_error(a.err, ec::timeout)) << error_text(a.err);
}

TEST_F(signal_link_test, lookup_cut_by_the_link_dropping_is_link_down) {
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam1"});
  t.run();
  caf::anon_send(conns[conn], conn_down_atom::value,
                 std::string{"peer closed the connection"});
  t.run();
  auto a = receive_lookup(self);
  ASSERT_TRUE(a.answered);
  EXPECT_TRUE(is_error(a.err, ec::link_down)) << error_text(a.err);
}

TEST_F(signal_link_test, lookup_of_an_unknown_name_is_an_empty_list) {
  // Not an error: GET /v1/lookup shows the empty list, and a CHANNEL turns
  // it into ec::unknown_resource.
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"nothing-here"});
  t.run();
  auto& lk = world->sent[conn].back();
  ASSERT_TRUE(lk.has_lookup());
  signal::Envelope res;
  res.mutable_lookup_result()->set_request_id(lk.lookup().request_id());
  res.mutable_lookup_result()->set_name("nothing-here");
  inject(conn, res);
  auto a = receive_lookup(self);
  ASSERT_TRUE(a.answered);
  EXPECT_FALSE(a.err) << error_text(a.err);
  EXPECT_TRUE(a.ids.empty());
}

TEST_F(signal_link_test, lookup_refused_by_the_server_carries_its_code) {
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"cam1"});
  t.run();
  auto& lk = world->sent[conn].back();
  ASSERT_TRUE(lk.has_lookup());
  signal::Envelope res;
  res.mutable_error()->set_code(signal::BAD_REQUEST);
  res.mutable_error()->set_text("name too long");
  res.mutable_error()->set_request_id(lk.lookup().request_id());
  inject(conn, res);
  auto a = receive_lookup(self);
  ASSERT_TRUE(a.answered);
  EXPECT_TRUE(is_error(a.err, ec::protocol_error)) << failure_class(a.err);
  EXPECT_EQ(error_text(a.err), "name too long");
}

TEST_F(signal_link_test, signal_while_offline_is_not_online) {
  caf::scoped_actor self{t.sys};
  signal::Signal sig;
  sig.set_to("peer-b");
  auto req = self->request(link, caf::infinite, signal_atom::value,
                           sig.SerializeAsString());
  t.run();
  caf::error err;
  bool answered = false;
  std::move(req).receive([&] { answered = true; },
                         [&](caf::error& e) {
                           answered = true;
                           err = e;
                         });
  ASSERT_TRUE(answered);
  EXPECT_TRUE(is_error(err, ec::not_online)) << error_text(err);
}

TEST_F(signal_link_test, register_answers_show_per_export_in_the_status) {
  auto conn = log_in();
  ASSERT_EQ(count(conn, signal::Envelope::kRegister), 1u);
  auto regs = [&] {
    std::map<std::string, std::string> out;
    auto st = status();
    for (auto& r : st.registrations())
      out[r.name()] = r.state() + (r.error().empty() ? "" : " " + r.error())
                      + (r.owners().empty() ? "" : " " + r.owners(0));
    return out;
  };
  EXPECT_EQ(regs(), (std::map<std::string, std::string>{{"cam1", "pending"},
                                                        {"web", "pending"}}));
  signal::Envelope res;
  auto taken = res.mutable_register_result()->add_names();
  taken->set_name("web");
  taken->set_code(signal::NAME_TAKEN);
  taken->add_owners("owner-id");
  res.mutable_register_result()->add_names()->set_name("cam1");
  res.mutable_register_result()->add_names()->set_name("not-ours");
  inject(conn, res);
  EXPECT_EQ(state(), "online"); // a refusal is not a reason to reconnect
  EXPECT_EQ(regs(),
            (std::map<std::string, std::string>{
              {"cam1", "registered"}, {"web", "refused NAME_TAKEN owner-id"}}));
}

TEST_F(signal_link_test, lookup_puts_this_node_first_for_its_own_export) {
  // The server answers every owner, this node included; the node acts on
  // its own export itself (LOCAL SESSION), so it comes first, once.
  auto conn = log_in();
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"web"});
  t.run();
  auto& lk = world->sent[conn].back();
  ASSERT_TRUE(lk.has_lookup());
  signal::Envelope res;
  res.mutable_lookup_result()->set_request_id(lk.lookup().request_id());
  res.mutable_lookup_result()->set_name("web");
  res.mutable_lookup_result()->add_node_ids("peer-a");
  res.mutable_lookup_result()->add_node_ids(me->node_id());
  inject(conn, res);
  std::vector<std::string> got;
  self->receive([&](const std::vector<std::string>& ids) { got = ids; });
  EXPECT_EQ(got, (std::vector<std::string>{me->node_id(), "peer-a"}));
}

TEST_F(signal_link_test, lookup_of_a_name_refused_to_this_node_goes_to_owner) {
  auto conn = log_in();
  signal::Envelope reg;
  auto ans = reg.mutable_register_result()->add_names();
  ans->set_name("web");
  ans->set_code(signal::NAME_TAKEN);
  ans->add_owners("peer-a");
  inject(conn, reg);
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"web"});
  t.run();
  auto& lk = world->sent[conn].back();
  ASSERT_TRUE(lk.has_lookup());
  signal::Envelope res;
  res.mutable_lookup_result()->set_request_id(lk.lookup().request_id());
  res.mutable_lookup_result()->set_name("web");
  res.mutable_lookup_result()->add_node_ids("peer-a");
  inject(conn, res);
  std::vector<std::string> got;
  self->receive([&](const std::vector<std::string>& ids) { got = ids; });
  EXPECT_EQ(got, std::vector<std::string>{"peer-a"});
}

TEST_F(signal_link_test, lookup_of_its_own_export_needs_no_server) {
  // Not logged in: its own export is still answered, another name is not.
  caf::scoped_actor self{t.sys};
  self->send(link, lookup_atom::value, std::string{"web"});
  t.run();
  std::vector<std::string> got;
  self->receive([&](const std::vector<std::string>& ids) { got = ids; },
                [&](caf::error&) {});
  EXPECT_EQ(got, std::vector<std::string>{me->node_id()});
}

// --- which server the link trusts
// ---------------------------------------------

namespace {

class signal_link_trust_test : public signal_link_test {
protected:
  void SetUp() override {
    // Each test starts the link itself.
    dir = std::filesystem::temp_directory_path()
          / ("p2proxy-trust-" + std::to_string(::getpid()) + "-"
             + std::to_string(++counter));
    std::filesystem::create_directories(dir);
    store = (dir / "node.key.server_id").string();
  }
  void TearDown() override {
    signal_link_test::TearDown();
    std::filesystem::remove_all(dir);
  }
  static inline int counter = 0;
  std::filesystem::path dir;
  std::string store;
};

} // namespace

TEST_F(signal_link_trust_test,
       a_server_with_another_id_than_pinned_is_refused) {
  auto pinned = identity::generate().node_id();
  start(pinned, store);
  auto conn = accept_connect();
  EXPECT_TRUE(world->closed[conn]) << "the connection was kept";
  EXPECT_TRUE(world->sent[conn].empty()) << "something was sent to it";
  send_hello(conn, std::string(32, '\x07'));
  auto st = status();
  EXPECT_EQ(st.state(), "backoff");
  EXPECT_NE(st.last_error().find(pinned), std::string::npos) << st.last_error();
  EXPECT_NE(st.last_error().find(world->server_key_id), std::string::npos)
    << st.last_error();
  EXPECT_FALSE(std::filesystem::exists(store));
}

TEST_F(signal_link_trust_test, first_use_stores_the_id_then_refuses_another) {
  start("", store);
  auto conn = log_in();
  EXPECT_EQ(state(), "online");
  std::ifstream in{store};
  std::string stored;
  in >> stored;
  EXPECT_EQ(stored, world->server_key_id);
  // The server goes; another key answers at its address.
  caf::anon_send(conns[conn], conn_down_atom::value, std::string{"gone"});
  t.run();
  auto first = world->server_key_id;
  world->server_key_id = identity::generate().node_id();
  t.advance(31s); // the longest backoff
  ASSERT_EQ(world->connects.size(), 2u);
  auto second = accept_connect();
  EXPECT_TRUE(world->closed[second]);
  EXPECT_TRUE(world->sent[second].empty());
  auto st = status();
  EXPECT_EQ(st.state(), "backoff");
  EXPECT_NE(st.last_error().find(first), std::string::npos) << st.last_error();
  EXPECT_NE(st.last_error().find(world->server_key_id), std::string::npos)
    << st.last_error();
}

TEST_F(signal_link_trust_test, a_certificate_verified_by_host_name_is_trusted) {
  start("", store);
  // The fake reports a chain that verified: no first use is needed.
  auto& req = world->connects.back();
  world->sent.emplace_back();
  world->closed.push_back(false);
  conns.push_back(t.sys.spawn([=](caf::event_based_actor* self) {
    self->send(req.owner, conn_up_atom::value, req.tag, caf::actor{self},
               std::string{"127.0.0.1:7000"}, world->server_key_id,
               world->binding, std::string{});
    return caf::behavior{[=](frame_atom, const std::string&) {},
                         [=](close_atom) { self->quit(); }};
  }));
  t.run();
  EXPECT_EQ(state(), "logging-in");
  EXPECT_FALSE(std::filesystem::exists(store));
}

TEST_F(signal_link_test, several_servers_are_tried_in_turn_and_failed_over) {
  caf::anon_send(link, stop_atom::value, std::string{"restart"});
  caf::anon_send_exit(connector, caf::exit_reason::user_shutdown);
  t.run();
  world->connects.clear();
  start(world->server_key_id, "",
        {endpoint{"198.18.0.1", 7000}, endpoint{"198.18.0.2", 7000},
         endpoint{"198.18.0.3", 7000}});
  ASSERT_EQ(world->connects.size(), 1u);
  std::set<std::string> seen{world->connects[0].host};
  auto conn = log_in();
  EXPECT_EQ(state(), "online");
  // The server goes away: the next one is asked within the backoff's first
  // step (at most backoff_first, 1 s).
  caf::anon_send(conns[conn], conn_down_atom::value,
                 std::string{"peer closed the connection"});
  t.run();
  EXPECT_EQ(state(), "backoff");
  t.advance(std::chrono::milliseconds(1000));
  ASSERT_EQ(world->connects.size(), 2u);
  EXPECT_EQ(seen.count(world->connects[1].host), 0u);
  seen.insert(world->connects[1].host);
  // A failed attempt moves on to the third, then back to the first.
  caf::anon_send(link, conn_fail_atom::value, world->connects[1].tag,
                 std::string{"connection refused"});
  t.run();
  t.advance(std::chrono::milliseconds(2000));
  ASSERT_EQ(world->connects.size(), 3u);
  EXPECT_EQ(seen.count(world->connects[2].host), 0u);
  seen.insert(world->connects[2].host);
  EXPECT_EQ(seen.size(), 3u);
  caf::anon_send(link, conn_fail_atom::value, world->connects[2].tag,
                 std::string{"connection refused"});
  t.run();
  t.advance(std::chrono::milliseconds(4000));
  ASSERT_EQ(world->connects.size(), 4u);
  EXPECT_EQ(world->connects[3].host, world->connects[0].host);
  // The status names the server being tried.
  EXPECT_EQ(status().server(), world->connects[3].host + ":7000");
}
