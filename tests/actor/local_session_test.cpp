// The LOCAL SESSION on the deterministic test coordinator: a node's own
// client reaching its own export. The client CHANNEL and the export's owner
// are recorders; the test plays both owners' parts and checks what each
// hears: the StreamOpen read and handed to the factory (marked local),
// bytes and FINs each way, credit for consumed bytes, resets, an owner that
// ends early, refusals answered as the exporting side would, and the stop.
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "actors/actors.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/error.hpp"
#include "actors/common/preamble.hpp"
#include "actors/peer/local_session.hpp"
#include "proto/tunnel.pb.h"
#include "tests/actor/test_system.hpp"

using namespace p2proxy;

namespace {

struct heard {
  std::string data;
  bool fin = false;
  uint64_t credit = 0;
  int resets = 0;
  uint64_t reset_code = 0;
  int closed = 0;
  int down = 0;
};

caf::behavior recorder(caf::event_based_actor*, std::shared_ptr<heard> h) {
  return {
    [=](stream_data_atom, int64_t, std::string& bytes, bool fin) {
      h->data += bytes;
      h->fin = h->fin || fin;
    },
    [=](stream_credit_atom, int64_t, uint64_t n) { h->credit += n; },
    [=](stream_reset_atom, int64_t, uint64_t code) {
      ++h->resets;
      h->reset_code = code;
    },
    [=](stream_closed_atom, int64_t) { ++h->closed; },
    [=](session_down_atom, const caf::error&) { ++h->down; },
  };
}

std::string stream_open(const std::string& resource) {
  tunnel::StreamOpen open;
  open.set_resource(resource);
  open.set_protocol("tcp");
  open.set_version(1);
  return encode_frame(open.SerializeAsString());
}

class local_session_test : public ::testing::Test {
protected:
  void SetUp() override {
    local_session_config cfg;
    cfg.node_id = "this-node";
    cfg.owner_credit = 1000;
    cfg.handler
      = [this](caf::local_actor* session,
               peer_stream_open open) -> caf::expected<stream_owner_actor> {
      opens.push_back(open);
      if (open.open.resource() != "home")
        return make_error(ec::unknown_resource, "no resource named '"
                                                  + open.open.resource()
                                                  + "' on this node");
      export_id = open.stream_id;
      return caf::actor_cast<stream_owner_actor>(session->spawn(recorder, exp));
    };
    parent = std::make_unique<caf::scoped_actor>(t.sys);
    session = spawn_local_session(parent->ptr(), cfg);
    client_actor = t.sys.spawn(recorder, client);
    t.run();
  }

  void TearDown() override {
    caf::anon_send_exit(session, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(client_actor, caf::exit_reason::user_shutdown);
    t.run();
    t.sched.clock().cancel_all();
    parent.reset();
  }

  /// The client opens a stream and writes `first` (StreamOpen + bytes).
  int64_t open(const std::string& first, bool fin = false) {
    caf::scoped_actor self{t.sys};
    auto req = self->request(session, caf::infinite, stream_open_atom::value,
                             client_actor);
    t.run();
    int64_t id = -1;
    req.receive([&](int64_t x) { id = x; }, [&](caf::error&) {});
    caf::anon_send(session, stream_write_atom::value, id, first, fin);
    t.run();
    return id;
  }

  test::deterministic_system t;
  std::unique_ptr<caf::scoped_actor> parent;
  caf::actor session;
  caf::actor client_actor;
  std::shared_ptr<heard> client = std::make_shared<heard>();
  std::shared_ptr<heard> exp = std::make_shared<heard>();
  std::vector<peer_stream_open> opens;
  int64_t export_id = -1;
};

} // namespace

TEST_F(local_session_test, carries_bytes_and_fins_both_ways_then_closes) {
  auto id = open(stream_open("home") + "GET /");
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_TRUE(opens[0].local);
  EXPECT_EQ(opens[0].peer, "this-node");
  EXPECT_EQ(opens[0].first_bytes, "GET /");
  EXPECT_EQ(exp->credit, 1000u);
  caf::anon_send(session, stream_write_atom::value, export_id,
                 std::string{"200 OK"}, true);
  t.run();
  EXPECT_EQ(client->data, "200 OK");
  EXPECT_TRUE(client->fin);
  EXPECT_EQ(client->closed, 0); // the client's direction is still open
  caf::anon_send(session, stream_write_atom::value, id, std::string{" more"},
                 true);
  t.run();
  EXPECT_EQ(exp->data, " more");
  EXPECT_TRUE(exp->fin);
  EXPECT_EQ(client->closed, 1);
  EXPECT_EQ(exp->closed, 1);
  EXPECT_EQ(client->resets + exp->resets, 0);
}

TEST_F(local_session_test, consumed_bytes_come_back_as_credit) {
  auto id = open(stream_open("home"));
  auto before = client->credit;
  caf::anon_send(session, stream_write_atom::value, id, std::string(800, 'x'),
                 false);
  t.run();
  EXPECT_EQ(client->credit, before); // 800 in flight: no more yet
  caf::anon_send(session, stream_consumed_atom::value, export_id,
                 uint64_t{800});
  t.run();
  EXPECT_GT(client->credit, before); // the export's owner passed them on
}

TEST_F(local_session_test, a_reset_reaches_the_other_end) {
  auto id = open(stream_open("home"));
  caf::anon_send(session, stream_reset_atom::value, id, uint64_t{7});
  t.run();
  EXPECT_EQ(exp->resets, 1);
  EXPECT_EQ(exp->reset_code, 7u);
  EXPECT_EQ(client->resets, 0);
}

TEST_F(local_session_test, an_owner_ending_without_its_fin_resets_the_other) {
  open(stream_open("home"));
  caf::anon_send_exit(client_actor, caf::exit_reason::user_shutdown);
  t.run();
  EXPECT_EQ(exp->resets, 1);
}

TEST_F(local_session_test, an_unknown_name_is_answered_like_a_peer_would) {
  open(stream_open("nothing"));
  preamble_reader r;
  ASSERT_EQ(r.feed(client->data), preamble_reader::status::complete);
  tunnel::StreamOpenResult res;
  ASSERT_TRUE(res.ParseFromString(r.payload()));
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::UNKNOWN_RESOURCE);
  EXPECT_TRUE(client->fin);
}

TEST_F(local_session_test, a_malformed_stream_open_is_a_bad_request) {
  open(encode_frame("\xff\xff\xff not a StreamOpen"));
  EXPECT_TRUE(opens.empty());
  preamble_reader r;
  ASSERT_EQ(r.feed(client->data), preamble_reader::status::complete);
  tunnel::StreamOpenResult res;
  ASSERT_TRUE(res.ParseFromString(r.payload()));
  EXPECT_EQ(res.code(), tunnel::StreamOpenResult::BAD_REQUEST);
}

TEST_F(local_session_test, a_stream_ending_inside_its_stream_open_is_refused) {
  open(stream_open("home").substr(0, 3), true);
  EXPECT_TRUE(opens.empty());
  EXPECT_TRUE(client->fin);
}

TEST_F(local_session_test, stop_tells_every_owner_the_session_is_down) {
  open(stream_open("home"));
  caf::anon_send(session, stop_atom::value, std::string{"node stops"});
  t.run();
  EXPECT_EQ(client->down, 1);
  EXPECT_EQ(exp->down, 1);
}
