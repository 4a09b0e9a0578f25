// The CHANNEL on virtual time and CAF's test multiplexer: no network,
// no threads. A fake LISTENER forks it for a test scribe, a fake SUPERVISOR
// answers look-ups and session opens, a fake PEER SESSION records what the
// channel puts on its stream, and the test plays the client's socket and the
// stream's other end.
//
// The test multiplexer has no sockets, so what the half-close scribes would
// do is played by the test: the client's FIN is (local_eof_atom, hdl), its
// reset a connection_closed_msg, the OS acknowledging writes a
// data_transferred_msg. Our FIN and a reset towards the client act on the
// real descriptor named by the connection handle (shutdown_write,
// reset_on_close), so each handle is one end of a socketpair: the other end
// shows whether the channel sent FIN, and SO_LINGER whether it asked for a
// reset.
#include "actors/channel/channel.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/network/test_multiplexer.hpp>

#include "actors/actors.hpp"
#include "actors/channel/protocol/sniffer.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/preamble.hpp"
#include "proto/tunnel.pb.h"

using namespace p2proxy;
using namespace std::chrono_literals;

namespace {

constexpr int64_t stream_id = 4;

struct channel_test_config : caf::actor_system_config {
  channel_test_config() {
    load<caf::io::middleman>();
    set("scheduler.policy", caf::atom("testing"));
    set("logger.verbosity", caf::atom("quiet"));
    set("middleman.network-backend", caf::atom("testing"));
    set("middleman.manual-multiplexing", true);
    set("middleman.heartbeat-interval", caf::timespan{0});
    set("middleman.workers", size_t{0});
  }
};

/// What the fakes saw.
struct record {
  caf::actor channel;
  // PEER SESSION
  std::vector<std::pair<std::string, bool>> writes; // bytes, fin
  std::vector<uint64_t> resets;
  uint64_t consumed = 0;
  // SUPERVISOR
  caf::error open_error; // answers (open_atom) with it when set
  bool ended = false;    // (channel_end_atom, connected, in, out) came
  bool connected = false;
  // LISTENER
  std::vector<caf::error> refusals;

  /// Everything the channel wrote on the stream, FINs aside.
  std::string stream_bytes() const {
    std::string s;
    for (auto& [b, fin] : writes)
      s += b;
    return s;
  }
  bool stream_fin() const {
    for (auto& [b, fin] : writes)
      if (fin)
        return true;
    return false;
  }
};

caf::behavior fake_session(caf::event_based_actor*,
                           std::shared_ptr<record> rec) {
  return {
    [=](stream_open_atom, caf::actor) -> int64_t { return stream_id; },
    [=](stream_write_atom, int64_t, std::string& bytes, bool fin) {
      rec->writes.emplace_back(std::move(bytes), fin);
    },
    [=](stream_consumed_atom, int64_t, uint64_t n) { rec->consumed += n; },
    [=](stream_reset_atom, int64_t, uint64_t code) {
      rec->resets.push_back(code);
    },
  };
}

caf::behavior fake_supervisor(caf::event_based_actor*,
                              std::shared_ptr<record> rec, caf::actor session) {
  return {
    [=](lookup_atom, const std::string&) {
      return std::vector<std::string>{"node-b"};
    },
    [=](resolve_atom, const std::string&) {
      return std::vector<std::string>{"node-b"};
    },
    [=](open_atom, const std::string&) -> caf::result<caf::actor> {
      if (rec->open_error)
        return rec->open_error;
      return session;
    },
    [=](channel_atom) {},
    [=](channel_end_atom, bool connected, uint64_t, uint64_t) {
      rec->ended = true;
      rec->connected = connected;
    },
  };
}

class channel_test : public ::testing::Test {
protected:
  channel_test() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
      ADD_FAILURE() << "socketpair failed";
    local_fd = fds[0];
    client_fd = fds[1];
    hdl = caf::io::connection_handle::from_int(local_fd);
  }

  ~channel_test() override {
    for (auto& a : {supervisor, session, listener})
      if (a)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    if (rec->channel)
      caf::anon_send_exit(rec->channel, caf::exit_reason::user_shutdown);
    drive();
    // Timers still pending (open and drain deadlines) hold their actors:
    // drop them, so every actor is destroyed before the system is.
    sched.clock().cancel_all();
    drive();
    ::close(local_fd);
    ::close(client_fd);
  }

  /// Runs actors, the multiplexer's runnables and pending reads until
  /// nothing is left to do.
  void drive() {
    while (sched.try_run_once() || mpx.try_exec_runnable() || mpx.read_data())
      ;
  }

  void advance(caf::timespan d) {
    sched.advance_time(d);
    drive();
  }

  /// A LISTENER stand-in that forks a client channel for `hdl`.
  void start(const std::string& protocol, const std::string& resource) {
    session = sys.spawn(fake_session, rec);
    supervisor = sys.spawn(fake_supervisor, rec, session);
    auto r = rec;
    auto h = hdl;
    auto sup = supervisor;
    auto* m = &mpx;
    listener = mm.spawn_broker([=](caf::io::broker* self) -> caf::behavior {
      self->add_scribe(m->new_scribe(h));
      client_channel_args a;
      a.resource = resource;
      a.protocol = protocol;
      a.client_address = "127.0.0.1:5555";
      a.supervisor = sup;
      a.listener = caf::actor_cast<listener_actor>(self);
      r->channel = caf::actor_cast<caf::actor>(
        fork_client_channel(self, h, std::move(a)));
      return {
        [=](refused_atom, const caf::error& why) {
          r->refusals.push_back(why);
        },
      };
    });
    drive();
    ASSERT_TRUE(rec->channel);
  }

  /// The client sends `bytes`.
  void client_sends(const std::string& bytes) {
    auto& buf = mpx.virtual_network_buffer(hdl);
    buf.insert(buf.end(), bytes.begin(), bytes.end());
    drive();
  }

  /// What the channel wrote to the client so far (taken).
  std::string client_receives() {
    auto& buf = mpx.output_buffer(hdl);
    std::string s(buf.begin(), buf.end());
    buf.clear();
    return s;
  }

  /// The client's socket confirms every byte written to it as sent.
  void ack_writes() {
    auto n = unacked;
    n += mpx.output_buffer(hdl).size();
    unacked = 0;
    client_receives();
    if (n > 0)
      to_channel(caf::io::data_transferred_msg{hdl, n, 0});
  }

  template <class... Ts>
  void to_channel(Ts&&... xs) {
    caf::anon_send(rec->channel, std::forward<Ts>(xs)...);
    drive();
  }

  /// The other end of the stream sends `bytes`.
  void peer_sends(const std::string& bytes, bool fin = false) {
    to_channel(stream_data_atom::value, stream_id, bytes, fin);
  }

  /// The exporting node answers the StreamOpen.
  void peer_answers(tunnel::StreamOpenResult::Code code,
                    const std::string& text = {}) {
    tunnel::StreamOpenResult r;
    r.set_code(code);
    r.set_text(text);
    peer_sends(encode_frame(r.SerializeAsString()));
  }

  /// A tcp client channel whose tunnel is up, with `credit` on its stream.
  void connected_tcp(uint64_t credit = 1 << 20) {
    start("tcp", "web");
    to_channel(stream_credit_atom::value, stream_id, credit);
    peer_answers(tunnel::StreamOpenResult::OK);
    ASSERT_EQ(rec->writes.size(), 1u); // the preamble
    rec->writes.clear();
    rec->consumed = 0; // (the StreamOpenResult)
  }

  /// True once the channel sent its FIN on the client's socket.
  bool client_got_fin() {
    char c;
    return ::recv(client_fd, &c, 1, MSG_DONTWAIT) == 0;
  }

  /// True if the channel asked for the client's socket to be reset.
  bool reset_requested() {
    linger l{0, 0};
    socklen_t len = sizeof l;
    ::getsockopt(local_fd, SOL_SOCKET, SO_LINGER, &l, &len);
    return l.l_onoff != 0 && l.l_linger == 0;
  }

  channel_test_config cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched
    = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  caf::io::middleman& mm = sys.middleman();
  caf::io::network::test_multiplexer& mpx
    = dynamic_cast<caf::io::network::test_multiplexer&>(mm.backend());
  std::shared_ptr<record> rec = std::make_shared<record>();
  caf::actor session, supervisor, listener;
  int local_fd = -1, client_fd = -1;
  caf::io::connection_handle hdl;
  size_t unacked = 0;
};

} // namespace

TEST_F(channel_test, client_half_closes_first) {
  connected_tcp();
  client_sends("request");
  to_channel(local_eof_atom::value, hdl);
  EXPECT_EQ(rec->stream_bytes(), "request");
  EXPECT_TRUE(rec->stream_fin()) << "the client's FIN went on the stream";
  EXPECT_FALSE(rec->ended) << "the answer still comes";
  peer_sends("answer", true);
  EXPECT_EQ(mpx.output_buffer(hdl).size(), 6u);
  EXPECT_FALSE(client_got_fin()) << "our FIN waits for the answer's bytes";
  EXPECT_FALSE(rec->ended);
  ack_writes();
  EXPECT_TRUE(client_got_fin());
  EXPECT_EQ(rec->consumed, 6u) << "consumed once written";
  EXPECT_TRUE(rec->ended) << "both sides closed";
  EXPECT_TRUE(rec->connected);
  EXPECT_FALSE(reset_requested());
  EXPECT_TRUE(rec->resets.empty());
}

TEST_F(channel_test, peer_half_closes_first) {
  connected_tcp();
  peer_sends("greeting", true);
  EXPECT_EQ(client_receives(), "greeting");
  unacked = 8;
  EXPECT_FALSE(client_got_fin());
  ack_writes();
  EXPECT_TRUE(client_got_fin()) << "the stream's FIN reached the client";
  EXPECT_FALSE(rec->ended) << "the client may still send";
  client_sends("late words");
  EXPECT_EQ(rec->stream_bytes(), "late words");
  EXPECT_FALSE(rec->stream_fin());
  to_channel(local_eof_atom::value, hdl);
  EXPECT_TRUE(rec->stream_fin());
  EXPECT_TRUE(rec->ended);
  EXPECT_TRUE(rec->resets.empty());
}

TEST_F(channel_test, our_fin_crosses_the_peers_reset) {
  connected_tcp();
  to_channel(local_eof_atom::value, hdl);
  EXPECT_TRUE(rec->stream_fin());
  // The peer reset before it saw our FIN: the client must not mistake the
  // cut-off answer for a complete one.
  to_channel(stream_reset_atom::value, stream_id, uint64_t{0});
  EXPECT_TRUE(reset_requested());
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, the_clients_reset_crosses_the_peers_fin) {
  connected_tcp();
  peer_sends("all of it", true);
  client_receives();
  // The client resets before it had our FIN: the stream is reset, not
  // finished, so the exporting side can tell.
  to_channel(caf::io::connection_closed_msg{hdl});
  EXPECT_FALSE(rec->stream_fin());
  ASSERT_EQ(rec->resets.size(), 1u);
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, a_peer_that_stops_reading_after_its_fin_is_drained) {
  connected_tcp();
  peer_sends("done", true);
  unacked = 4;
  client_receives();
  // STOP_SENDING after the peer's FIN: its bytes are complete, the client
  // gets our FIN (not a reset) and is read on until its FIN, at most 2 s.
  to_channel(stream_reset_atom::value, stream_id, uint64_t{0});
  ack_writes();
  EXPECT_TRUE(client_got_fin());
  EXPECT_FALSE(reset_requested());
  EXPECT_FALSE(rec->ended);
  client_sends("dropped");
  EXPECT_EQ(rec->stream_bytes(), "") << "nothing more goes on the stream";
  advance(2s);
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, credit_stalls_and_resumes_the_client) {
  connected_tcp(64 * 1024);         // enough for one read only
  std::string first(4 * 1024, 'a'); // fills the first (4 KiB) read
  std::string second(1000, 'b');
  client_sends(first);
  EXPECT_EQ(rec->stream_bytes(), first);
  client_sends(second);
  EXPECT_EQ(rec->stream_bytes(), first)
    << "no credit for another 64 KiB read: the client waits";
  to_channel(stream_credit_atom::value, stream_id, uint64_t{64 * 1024});
  EXPECT_EQ(rec->stream_bytes(), first + second)
    << "credit resumed the paused socket (read_more through the multiplexer)";
}

TEST_F(channel_test, a_client_that_names_no_resource_times_out) {
  start("http", "");
  client_sends("GET /r/web/ HTTP/1.1\r\n"); // no end of head
  EXPECT_TRUE(rec->refusals.empty());
  advance(sniff_timeout - 1s);
  EXPECT_TRUE(rec->refusals.empty());
  advance(1s);
  EXPECT_EQ(client_receives().rfind("HTTP/1.1 408 ", 0), 0u);
  ASSERT_EQ(rec->refusals.size(), 1u);
  EXPECT_EQ(rec->refusals[0], caf::error{sniff_error::timeout});
  EXPECT_TRUE(rec->ended);
  EXPECT_FALSE(rec->connected);
}

TEST_F(channel_test, a_denied_open_is_answered_in_the_clients_protocol) {
  start("http", "");
  client_sends("GET /r/web/index.html HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_FALSE(rec->writes.empty()) << "the preamble and the request";
  peer_answers(tunnel::StreamOpenResult::DENIED, "not for you");
  EXPECT_EQ(client_receives().rfind("HTTP/1.1 403 ", 0), 0u);
  ASSERT_EQ(rec->refusals.size(), 1u);
  EXPECT_TRUE(is_error(rec->refusals[0], ec::denied));
  EXPECT_TRUE(rec->ended);
  EXPECT_FALSE(rec->connected);
}

TEST_F(channel_test, a_target_that_refuses_is_told_to_a_socks5_client) {
  start("socks5", "");
  client_sends(std::string{"\x05\x01\x00", 3});
  EXPECT_EQ(client_receives(), std::string("\x05\x00", 2));
  client_sends(std::string{"\x05\x01\x00\x03\x03web\x00\x50", 10});
  peer_answers(tunnel::StreamOpenResult::TARGET_REFUSED, "refused");
  auto reply = client_receives();
  ASSERT_GE(reply.size(), 2u);
  EXPECT_EQ(reply[1], '\x05') << "SOCKS5: connection refused";
  ASSERT_EQ(rec->refusals.size(), 1u);
  EXPECT_TRUE(is_error(rec->refusals[0], ec::target_refused));
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, an_offline_peer_is_refused_with_its_code) {
  rec->open_error = make_error(ec::peer_offline, "node-b is not online");
  start("tcp", "web");
  ASSERT_EQ(rec->refusals.size(), 1u);
  EXPECT_TRUE(is_error(rec->refusals[0], ec::peer_offline));
  EXPECT_TRUE(rec->writes.empty());
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, a_tcp_client_that_finished_early_is_relayed_once_up) {
  start("tcp", "web");
  to_channel(stream_credit_atom::value, stream_id, uint64_t{1} << 20);
  client_sends("early");
  to_channel(local_eof_atom::value, hdl);
  ASSERT_EQ(rec->writes.size(), 1u) << "only the preamble before the answer";
  EXPECT_FALSE(rec->ended);
  peer_answers(tunnel::StreamOpenResult::OK);
  ASSERT_EQ(rec->writes.size(), 3u);
  EXPECT_EQ(rec->writes[1].first, "early");
  EXPECT_TRUE(rec->writes[2].second) << "then our FIN";
  peer_sends("late answer", true);
  ack_writes();
  EXPECT_TRUE(client_got_fin());
  EXPECT_TRUE(rec->ended);
}

TEST_F(channel_test, a_tcp_client_that_leaves_before_the_tunnel_abandons_it) {
  start("tcp", "web");
  to_channel(local_eof_atom::value, hdl);
  ASSERT_EQ(rec->resets.size(), 1u) << "the stream opened for it is reset";
  EXPECT_TRUE(rec->ended);
  EXPECT_FALSE(rec->connected);
}

TEST_F(channel_test, an_http_request_for_another_resource_gets_421_last) {
  start("http", "");
  client_sends("GET /r/web/a HTTP/1.1\r\nHost: x\r\n\r\n");
  to_channel(stream_credit_atom::value, stream_id, uint64_t{1} << 20);
  peer_answers(tunnel::StreamOpenResult::OK);
  auto before = rec->stream_bytes();
  client_sends("GET /r/other/b HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(rec->stream_bytes(), before) << "nothing of the second request";
  EXPECT_TRUE(rec->stream_fin()) << "the target answers what it has";
  std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  peer_sends(ok, true);
  auto got = client_receives();
  EXPECT_EQ(got.rfind(ok, 0), 0u) << "the earlier response first";
  EXPECT_NE(got.find("HTTP/1.1 421 "), std::string::npos);
  EXPECT_FALSE(rec->ended) << "closed once the 421 is out";
  unacked = got.size();
  ack_writes();
  EXPECT_TRUE(rec->ended);
  EXPECT_FALSE(client_got_fin()) << "closed, not half-closed";
}

// --- the export CHANNEL before its target: allow list and connect ----------

namespace {

/// A loopback port nobody listens on.
uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

} // namespace

class export_channel_test : public channel_test {
protected:
  /// An export CHANNEL for "web" at `target`, opened by node-a with `first`.
  void start_export(std::vector<std::string> allow, endpoint target,
                    const std::string& first) {
    session = sys.spawn(fake_session, rec);
    export_channel_args a;
    a.session = caf::actor_cast<session_streams_actor>(session);
    a.stream_id = stream_id;
    a.peer = "node-a";
    a.ex = export_entry{"web", std::move(target), "tcp", std::move(allow)};
    a.first_bytes = first;
    rec->channel
      = caf::actor_cast<caf::actor>(spawn_export_channel(sys, std::move(a)));
    drive();
  }

  /// The channel has quit.
  bool ended() const {
    return rec->channel->getf(caf::abstract_actor::is_terminated_flag);
  }

  /// The StreamOpenResult the channel wrote on the stream.
  tunnel::StreamOpenResult answer() {
    preamble_reader r;
    tunnel::StreamOpenResult res;
    if (r.feed(rec->stream_bytes()) == preamble_reader::status::complete)
      res.ParseFromString(r.payload());
    return res;
  }
};

TEST_F(export_channel_test, a_peer_the_allow_list_does_not_name_is_denied) {
  start_export({"node-c"}, endpoint{"127.0.0.1", closed_port()}, "GET /");
  ASSERT_EQ(rec->writes.size(), 1u);
  EXPECT_TRUE(rec->stream_fin());
  EXPECT_EQ(answer().code(), tunnel::StreamOpenResult::DENIED);
  EXPECT_EQ(answer().text(), "node node-a is not allowed to use 'web'");
  EXPECT_EQ(rec->consumed, 5u) << "the bytes it held are consumed";
  peer_sends("more");
  EXPECT_EQ(rec->consumed, 9u) << "and what follows";
  EXPECT_FALSE(ended());
  to_channel(stream_closed_atom::value, stream_id);
  EXPECT_TRUE(ended());
}

TEST_F(export_channel_test,
       a_target_that_refuses_is_answered_without_its_address) {
  start_export({"*"}, endpoint{"127.0.0.1", closed_port()}, "GET /");
  // The connect runs on a worker thread: wait for its word.
  for (int i = 0; i < 5000 && rec->writes.empty(); ++i) {
    std::this_thread::sleep_for(1ms);
    drive();
  }
  ASSERT_EQ(rec->writes.size(), 1u);
  EXPECT_TRUE(rec->stream_fin());
  EXPECT_EQ(answer().code(), tunnel::StreamOpenResult::TARGET_REFUSED);
  EXPECT_EQ(answer().text().rfind("'web': ", 0), 0u) << answer().text();
  EXPECT_EQ(answer().text().find("127.0.0.1"), std::string::npos)
    << "the target's address stays on the exporting node";
  EXPECT_EQ(rec->consumed, 5u);
  to_channel(stream_reset_atom::value, stream_id, uint64_t{0});
  EXPECT_TRUE(ended());
  EXPECT_TRUE(rec->resets.empty()) << "refused: nothing to reset";
}
