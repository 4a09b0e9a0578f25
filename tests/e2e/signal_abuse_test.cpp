// A real `p2proxy signal` process with two real `p2proxy node` processes
// logged in, attacked by raw TLS clients that speak (or mangle) the
// signaling protocol of proto/signal.proto inside TLS 1.3 (the server speaks
// nothing else; tests/e2e/tls_conn.hpp). Each refusal must come with the
// right Error code and a closed connection; the real nodes must not notice.
//
// Every raw client connects from its own loopback address (127.0.0.N), so
// the server's per-source login rate limit (10 per minute) never refuses a
// test connection.
#include <gtest/gtest.h>

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>

#include <sys/stat.h>

#include "actors/identity/identity.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"
#include "actors/signal/tls_channel.hpp"
#include "tests/e2e/process.hpp"
#include "tests/e2e/tls_conn.hpp"

namespace {

namespace fs = std::filesystem;
namespace pb = ::p2proxy::signal;
namespace admin = ::p2proxy::admin;
using namespace p2proxy::e2e;
using namespace std::chrono_literals;
using p2proxy::bound_login_challenge;
using p2proxy::identity;

constexpr auto max_wait = 15s;
const std::string network_token = "e2e-abuse-network-token";

template <class Message>
std::optional<Message> parse_json(const std::string& json) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  Message msg;
  if (!google::protobuf::util::JsonStringToMessage(json, &msg, opts).ok())
    return std::nullopt;
  return msg;
}

std::string write_text(const fs::path& path, const std::string& text) {
  std::ofstream out{path};
  out << text;
  return path.string();
}

std::string code_name(pb::ErrorCode code) {
  return pb::ErrorCode_Name(code);
}

// --- the lab: server + two nodes, shared by the suite ------------------------

struct lab {
  fs::path dir;
  uint16_t signal_port = 0;
  uint16_t signal_admin = 0;
  child_process server;
  struct node {
    std::string name;
    uint16_t admin = 0;
    child_process proc;
    std::string id;
    uint64_t logins_at_start = 0;
  };
  node a, b;
  int next_source = 10; // 127.0.0.10, .11, ...
  bool keep_dir = std::getenv("P2PROXY_E2E_KEEP") != nullptr;

  ~lab() {
    // Nodes first so they do not log their lost server at length.
    a.proc.kill_and_reap();
    b.proc.kill_and_reap();
    server.kill_and_reap();
    if (dir.empty())
      return;
    if (keep_dir) {
      std::fprintf(stderr, "e2e: logs and keys kept in %s\n", dir.c_str());
    } else {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  }

  std::string next_source_address() {
    if (next_source > 250)
      next_source = 10;
    return "127.0.0." + std::to_string(next_source++);
  }

  std::optional<admin::ServerStatus> server_status() {
    int code = 0;
    auto body = http_get(signal_admin, "/v1/status", &code);
    if (!body || code != 200)
      return std::nullopt;
    return parse_json<admin::ServerStatus>(*body);
  }

  std::optional<admin::NodeStatus> node_status(const node& n) {
    int code = 0;
    auto body = http_get(n.admin, "/v1/status", &code);
    if (!body || code != 200)
      return std::nullopt;
    return parse_json<admin::NodeStatus>(*body);
  }

  bool online(const node& n) {
    auto st = node_status(n);
    return st && st->signal().state() == "online";
  }

  bool server_lists(const std::string& id) {
    auto st = server_status();
    if (!st)
      return false;
    for (auto& n : st->nodes())
      if (n.node_id() == id)
        return true;
    return false;
  }

  /// Everything a failing assertion should show.
  std::string diag(size_t lines = 30) {
    std::string out = "\n--- signal server (" + server.exit_text()
                      + "), log tail (" + server.log_path() + "):\n"
                      + server.log_tail(lines);
    int code = 0;
    auto body = http_get(signal_admin, "/v1/status", &code);
    out += "--- server GET /v1/status: "
           + (body ? std::to_string(code) + "\n" + *body : "no answer") + "\n";
    for (auto* n : {&a, &b})
      if (!n->name.empty())
        out += "--- " + n->name + " (" + n->proc.exit_text() + "), log tail:\n"
               + n->proc.log_tail(10);
    return out;
  }

  void start_node(node& n, const std::string& name) {
    n.name = name;
    n.admin = free_port();
    auto cfg = write_text(
      dir / (name + ".toml"),
      "[node]\nkey = \"" + (dir / (name + ".key")).string() + "\"\n"
        + "[signal]\nserver = \"127.0.0.1:" + std::to_string(signal_port)
        + "\"\ntoken = \"" + network_token + "\"\n"
        + "[admin]\nlisten = \"127.0.0.1:" + std::to_string(n.admin) + "\"\n"
        + "[[export]]\nname = \"" + name
        + "-svc\"\ntarget = \"127.0.0.1:9\"\nprotocol = \"tcp\"\n"
          "allow = [\"*\"]\n");
    n.proc.start({p2proxy_bin(), "node", "--config", cfg},
                 (dir / (name + ".log")).string());
  }

  /// Starts everything; "" on success, else what went wrong.
  std::string start() {
    auto bin = p2proxy_bin();
    if (bin.empty() || ::access(bin.c_str(), X_OK) != 0)
      return "P2PROXY_BIN is not set to an executable p2proxy (is '" + bin
             + "')";
    char tmpl[] = "/tmp/p2proxy-e2e-abuse-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      return std::string{"mkdtemp: "} + std::strerror(errno);
    dir = tmpl;
    auto token_file = write_text(dir / "token", network_token + "\n");
    ::chmod(token_file.c_str(), 0600); // refused otherwise
    signal_port = free_port();
    signal_admin = free_port();
    server.start({bin, "signal", "--listen",
                  "127.0.0.1:" + std::to_string(signal_port), "--key",
                  (dir / "signal.key").string(), "--token-file", token_file,
                  "--admin", "127.0.0.1:" + std::to_string(signal_admin)},
                 (dir / "signal.log").string());
    wait_until(max_wait,
               [&] { return server_status().has_value() || !server.alive(); });
    if (!server_status())
      return "the signaling server's admin port did not answer (server "
             + server.exit_text() + ")" + diag();
    start_node(a, "node-a");
    start_node(b, "node-b");
    for (auto* n : {&a, &b}) {
      wait_until(max_wait, [&] { return online(*n) || !n->proc.alive(); });
      if (!online(*n))
        return n->name + " was not online within 15 s" + diag();
      auto st = node_status(*n);
      if (!st)
        return n->name + " status vanished" + diag();
      n->id = st->node_id();
      n->logins_at_start = st->signal().logins_count();
    }
    if (!wait_until(max_wait,
                    [&] { return server_lists(a.id) && server_lists(b.id); }))
      return "the server never listed both nodes" + diag();
    return {};
  }
};

// --- raw protocol helpers ----------------------------------------------------

std::string serialize(const pb::Envelope& env) {
  return env.SerializeAsString();
}

std::string login_payload(const std::string& node_id,
                          const std::string& public_key,
                          const std::string& signature,
                          const std::string& token) {
  pb::Envelope env;
  auto login = env.mutable_login();
  login->set_node_id(node_id);
  login->set_public_key(public_key);
  login->set_signature(signature);
  login->set_token(token);
  login->set_client_version("e2e-abuse-test");
  return serialize(env);
}

std::string describe(const pb::Envelope& env) {
  if (env.has_error())
    return "Error{" + code_name(env.error().code()) + ", \""
           + env.error().text() + "\"}";
  std::string out = env.ShortDebugString();
  return out.empty() ? "(empty Envelope)" : out;
}

/// What the server did with a connection after some abuse.
struct outcome {
  std::vector<pb::Envelope> frames; // everything decoded after the Hello
  std::optional<pb::Error> error;   // the first Error among them
  bool closed = false;
  std::string how; // "end of stream", "Connection reset..."
  std::chrono::milliseconds elapsed{0};

  std::string text() const {
    std::string out = "frames: [";
    for (auto& f : frames)
      out += describe(f) + "; ";
    out += "], " + (closed ? "closed (" + how + ")" : std::string{"still open"})
           + " after " + std::to_string(elapsed.count()) + " ms";
    return out;
  }
};

outcome await_close(tls_conn& conn,
                    std::chrono::milliseconds timeout = max_wait) {
  outcome res;
  auto t0 = steady::now();
  std::vector<std::string> raw;
  res.closed = conn.wait_closed(timeout, &raw);
  res.elapsed
    = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
  res.how = conn.last_error();
  for (auto& bytes : raw) {
    pb::Envelope env;
    if (!env.ParseFromString(bytes)) {
      env.mutable_error()->set_text("(undecodable frame from the server)");
    } else if (env.has_error() && !res.error) {
      res.error = env.error();
    }
    res.frames.push_back(std::move(env));
  }
  return res;
}

class SignalAbuse : public ::testing::Test {
protected:
  static inline std::unique_ptr<lab> lab_;
  static inline std::string setup_error_;

  static void SetUpTestSuite() {
    lab_ = std::make_unique<lab>();
    setup_error_ = lab_->start();
    if (!setup_error_.empty())
      lab_->keep_dir = true;
  }

  static void TearDownTestSuite() {
    lab_.reset(); // kills and reaps every process
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  void TearDown() override {
    if (HasFailure() && lab_)
      lab_->keep_dir = true; // the logs named in the messages stay readable
  }

  lab& L() {
    return *lab_;
  }

  std::string diag() {
    return L().diag();
  }

  /// Connects from a fresh loopback address.
  void connect(tls_conn& conn) {
    auto source = L().next_source_address();
    auto why = conn.connect(L().signal_port, source);
    ASSERT_TRUE(why.empty()) << why << diag();
  }

  /// Connects and reads the Hello; returns its nonce in `nonce`.
  void connect_and_hello(tls_conn& conn, std::string& nonce) {
    ASSERT_NO_FATAL_FAILURE(connect(conn));
    std::string payload;
    auto r = conn.read_frame(max_wait, payload);
    ASSERT_EQ(r, tls_conn::result::frame)
      << "no Hello from the server within 15 s ("
      << (r == tls_conn::result::closed ? "closed: " + conn.last_error()
                                        : std::string{"timeout"})
      << ")" << diag();
    pb::Envelope env;
    ASSERT_TRUE(env.ParseFromString(payload))
      << "the server's first frame is not an Envelope" << diag();
    ASSERT_TRUE(env.has_hello()) << "the server's first frame is "
                                 << describe(env) << ", not a Hello" << diag();
    nonce = env.hello().nonce();
    ASSERT_EQ(nonce.size(), 32u)
      << "Hello nonce of " << nonce.size() << " bytes" << diag();
  }

  /// Asserts the connection ended with Error{code} and a close.
  void expect_refusal(tls_conn& conn, pb::ErrorCode code,
                      outcome* out = nullptr) {
    auto res = await_close(conn);
    EXPECT_TRUE(res.error.has_value())
      << "expected Error " << code_name(code) << "; " << res.text() << diag();
    if (res.error) {
      EXPECT_EQ(code_name(res.error->code()), code_name(code))
        << "text: \"" << res.error->text() << "\"; " << res.text() << diag();
    }
    EXPECT_TRUE(res.closed)
      << "the server did not close the connection within 15 s after "
      << code_name(code) << "; " << res.text() << diag();
    if (out != nullptr)
      *out = res;
  }

  /// A node's link counters must not have moved: it was never knocked off.
  void expect_undisturbed(const lab::node& n) {
    auto st = L().node_status(n);
    ASSERT_TRUE(st.has_value())
      << n.name << " admin port does not answer" << diag();
    EXPECT_EQ(st->signal().state(), "online")
      << n.name << " is " << st->signal().state() << ", last error \""
      << st->signal().last_error() << "\"" << diag();
    EXPECT_EQ(st->signal().logins_count(), n.logins_at_start)
      << n.name << " had to log in again (its link was dropped); last error \""
      << st->signal().last_error() << "\"" << diag();
    EXPECT_TRUE(L().server_lists(n.id))
      << "the server no longer lists " << n.name << " (" << n.id << ")"
      << diag();
  }
};

// --- the tests ---------------------------------------------------------------

TEST_F(SignalAbuse, CorrectLoginByRawClientGetsLoginOk) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  auto me = identity::generate();
  ASSERT_TRUE(conn.send_frame(login_payload(
    me.node_id(), me.public_key(),
    me.sign(bound_login_challenge(conn.binding(), nonce, me.node_id())),
    network_token)))
    << conn.last_error() << diag();
  std::string payload;
  auto r = conn.read_frame(max_wait, payload);
  ASSERT_EQ(r, tls_conn::result::frame)
    << "no answer to a correct Login within 15 s: " << conn.last_error()
    << diag();
  pb::Envelope env;
  ASSERT_TRUE(env.ParseFromString(payload)) << diag();
  ASSERT_TRUE(env.has_login_ok())
    << "a correct Login was answered with " << describe(env) << diag();
  EXPECT_EQ(env.login_ok().node_id(), me.node_id());
  EXPECT_NE(env.login_ok().observed_address().find("127.0.0."),
            std::string::npos)
    << "observed address " << env.login_ok().observed_address();
  EXPECT_GT(env.login_ok().heartbeat_seconds(), 0u);

  // Logged in, it is listed and answers a Ping like any node.
  EXPECT_TRUE(
    wait_until(max_wait, [&] { return L().server_lists(me.node_id()); }))
    << "the server does not list the raw client after LoginOk" << diag();
  pb::Envelope ping;
  ping.mutable_ping()->set_seq(42);
  ASSERT_TRUE(conn.send_frame(serialize(ping))) << conn.last_error();
  ASSERT_EQ(conn.read_frame(max_wait, payload), tls_conn::result::frame)
    << "no Pong within 15 s: " << conn.last_error() << diag();
  pb::Envelope pong;
  ASSERT_TRUE(pong.ParseFromString(payload)) << diag();
  ASSERT_TRUE(pong.has_pong()) << "Ping answered with " << describe(pong);
  EXPECT_EQ(pong.pong().seq(), 42u);
}

TEST_F(SignalAbuse, WrongTokenIsRefusedWithBadToken) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  auto me = identity::generate();
  ASSERT_TRUE(conn.send_frame(login_payload(
    me.node_id(), me.public_key(),
    me.sign(bound_login_challenge(conn.binding(), nonce, me.node_id())),
    "not-the-token")))
    << conn.last_error() << diag();
  outcome res;
  ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::BAD_TOKEN, &res));
  if (res.error) {
    auto text = res.error->text();
    for (auto& c : text)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_NE(text.find("token"), std::string::npos)
      << "the refusal does not mention the token: \"" << res.error->text()
      << "\"";
    EXPECT_TRUE(text.find("wrong") != std::string::npos
                || text.find("invalid") != std::string::npos
                || text.find("incorrect") != std::string::npos)
      << "the refusal does not say the token is wrong: \"" << res.error->text()
      << "\"";
  }
  EXPECT_FALSE(L().server_lists(me.node_id()))
    << "a node with a wrong token is listed" << diag();
}

TEST_F(SignalAbuse, ForgedNodeIdIsRefusedAndTheVictimStaysOnline) {
  auto& victim = L().a;
  ASSERT_TRUE(L().online(victim)) << diag();
  auto before = L().server_status();
  ASSERT_TRUE(before.has_value()) << diag();
  std::string since_before;
  for (auto& n : before->nodes())
    if (n.node_id() == victim.id)
      since_before = n.since();

  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  auto thief = identity::generate();
  // Claims A's id, proves possession of another key.
  ASSERT_TRUE(conn.send_frame(login_payload(
    victim.id, thief.public_key(),
    thief.sign(bound_login_challenge(conn.binding(), nonce, victim.id)),
    network_token)))
    << conn.last_error() << diag();
  ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::ID_MISMATCH));

  ASSERT_NO_FATAL_FAILURE(expect_undisturbed(victim));
  auto after = L().server_status();
  ASSERT_TRUE(after.has_value()) << diag();
  for (auto& n : after->nodes()) {
    if (n.node_id() == victim.id) {
      EXPECT_EQ(n.since(), since_before)
        << "the server's entry for node A was replaced" << diag();
    }
  }
}

TEST_F(SignalAbuse, SignatureOverAnotherNonceIsRefusedWithBadSignature) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  auto me = identity::generate();
  std::string other_nonce = nonce;
  for (auto& c : other_nonce)
    c = static_cast<char>(c ^ 0x5a);
  ASSERT_NE(other_nonce, nonce);
  ASSERT_TRUE(conn.send_frame(login_payload(
    me.node_id(), me.public_key(),
    me.sign(bound_login_challenge(conn.binding(), other_nonce, me.node_id())),
    network_token)))
    << conn.last_error() << diag();
  ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::BAD_SIGNATURE));
  EXPECT_FALSE(L().server_lists(me.node_id()))
    << "a node with a replayed signature is listed" << diag();
}

TEST_F(SignalAbuse, LoginSignedOverAnotherTlsSessionIsRefused) {
  // A relay that terminates TLS holds two sessions: the node signs the
  // binding of its session with the relay, never that of the relay's own
  // session with the server.
  tls_conn relay_side;
  std::string relay_nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(relay_side, relay_nonce));
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  ASSERT_NE(relay_side.binding(), conn.binding());
  auto me = identity::generate();
  ASSERT_TRUE(conn.send_frame(login_payload(
    me.node_id(), me.public_key(),
    me.sign(bound_login_challenge(relay_side.binding(), nonce, me.node_id())),
    network_token)))
    << conn.last_error() << diag();
  ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::BAD_SIGNATURE));
  EXPECT_FALSE(L().server_lists(me.node_id()))
    << "a login bound to another TLS session is listed" << diag();
}

TEST_F(SignalAbuse, ServerPresentsTheKeyItsIdNames) {
  tls_conn conn;
  ASSERT_NO_FATAL_FAILURE(connect(conn));
  auto key = identity::load((L().dir / "signal.key").string());
  EXPECT_EQ(conn.server_id(), key.node_id()) << diag();
}

TEST_F(SignalAbuse, GarbageBytesGetTheConnectionClosed) {
  tls_conn conn;
  ASSERT_NO_FATAL_FAILURE(connect(conn));
  std::mt19937 rng{20240611};
  std::string garbage(4096, '\0');
  for (auto& c : garbage)
    c = static_cast<char>(rng());
  garbage[0] = static_cast<char>(0xa5); // the "length" is far above 64 KiB
  // A reset while sending is as good as a close.
  conn.send_raw(garbage);
  auto res = await_close(conn);
  EXPECT_TRUE(res.closed)
    << "4 KiB of garbage did not get the connection closed within 15 s; "
    << res.text() << diag();
  if (res.error) {
    EXPECT_NE(res.error->code(), pb::LOGIN_TIMEOUT)
      << "closed by the login timer, not for the garbage; " << res.text()
      << diag();
  }
  EXPECT_LT(res.elapsed.count(), 5000)
    << "garbage should end the connection at once, not at the login "
       "deadline; "
    << res.text() << diag();
}

TEST_F(SignalAbuse, OversizeFrameHeaderGetsTheConnectionClosed) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  std::string header{"\x00\x10\x00\x00", 4}; // 1 MiB announced
  conn.send_raw(header + std::string(1024, 'x'));
  auto res = await_close(conn);
  EXPECT_TRUE(res.closed)
    << "a 1 MiB frame header did not get the connection closed within 15 s; "
    << res.text() << diag();
  if (res.error) {
    EXPECT_TRUE(res.error->code() == pb::FRAME_TOO_LARGE
                || res.error->code() == pb::BAD_FRAME)
      << "unexpected error for an oversize frame; " << res.text() << diag();
  }
  EXPECT_LT(res.elapsed.count(), 5000)
    << "an oversize header should end the connection at once, not at the "
       "login deadline; "
    << res.text() << diag();
}

TEST_F(SignalAbuse, UndecodableEnvelopeIsRefusedWithBadFrame) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  // Field 1 with wire type 7 (no such type), then noise.
  std::string payload{"\x0f\xff\xff\xff\xff\xff\x01\x02\x03", 9};
  {
    pb::Envelope probe;
    ASSERT_FALSE(probe.ParseFromString(payload))
      << "test bug: the payload decodes";
  }
  ASSERT_TRUE(conn.send_frame(payload)) << conn.last_error() << diag();
  auto res = await_close(conn);
  EXPECT_TRUE(res.closed)
    << "an undecodable Envelope did not get the connection closed within "
       "15 s; "
    << res.text() << diag();
  if (res.error) {
    EXPECT_EQ(code_name(res.error->code()), code_name(pb::BAD_FRAME))
      << res.text() << diag();
  }
  EXPECT_LT(res.elapsed.count(), 5000)
    << "closed late (login deadline?) rather than for the bad frame; "
    << res.text() << diag();
}

TEST_F(SignalAbuse, SilentConnectionGetsLoginTimeoutAfterAboutTenSeconds) {
  tls_conn conn;
  auto t0 = steady::now();
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  // Not before 5 s: nothing may arrive and the connection must stay open.
  std::string payload;
  auto early_until = t0 + 5s;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    early_until - steady::now());
  auto r = conn.read_frame(std::max(left, 0ms), payload);
  auto at
    = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
  if (r == tls_conn::result::frame) {
    pb::Envelope env;
    env.ParseFromString(payload);
    FAIL() << "the server sent " << describe(env) << " after only "
           << at.count() << " ms of silence (login timeout is 10 s)" << diag();
  }
  ASSERT_EQ(r, tls_conn::result::timeout)
    << "the server closed a silent connection after only " << at.count()
    << " ms (" << conn.last_error() << "); the login timeout is 10 s" << diag();
  // By 15 s: Error LOGIN_TIMEOUT and a close.
  auto res
    = await_close(conn, std::chrono::duration_cast<std::chrono::milliseconds>(
                          t0 + max_wait - steady::now()));
  auto total
    = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
  ASSERT_TRUE(res.closed) << "a silent connection was still open "
                          << total.count() << " ms after connecting; "
                          << res.text() << diag();
  ASSERT_TRUE(res.error.has_value())
    << "closed without Error LOGIN_TIMEOUT; " << res.text() << diag();
  EXPECT_EQ(code_name(res.error->code()), code_name(pb::LOGIN_TIMEOUT))
    << res.text() << diag();
  EXPECT_GE(total.count(), 5000)
    << "closed before 5 s of silence; " << res.text() << diag();
}

TEST_F(SignalAbuse, PingBeforeLoginIsRefusedWithNotLoggedIn) {
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  pb::Envelope ping;
  ping.mutable_ping()->set_seq(7);
  ASSERT_TRUE(conn.send_frame(serialize(ping))) << conn.last_error() << diag();
  outcome res;
  ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::NOT_LOGGED_IN, &res));
  for (auto& f : res.frames)
    EXPECT_FALSE(f.has_pong())
      << "a Ping before login was answered: " << res.text();
}

// Runs last in the suite; it also brings its own round of abuse so it means
// something when ctest runs it alone.
TEST_F(SignalAbuse, AfterAllTheAbuseServerAndBothNodesAreStillFine) {
  auto before = L().server_status();
  ASSERT_TRUE(before.has_value()) << diag();

  int refusals = 0;
  {
    tls_conn conn; // garbage
    ASSERT_NO_FATAL_FAILURE(connect(conn));
    conn.send_raw(std::string("\x7f\xff\xff\xff garbage", 12));
    EXPECT_TRUE(await_close(conn).closed) << diag();
  }
  {
    tls_conn conn; // forged id of node B
    std::string nonce;
    ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
    auto thief = identity::generate();
    conn.send_frame(login_payload(
      L().b.id, thief.public_key(),
      thief.sign(bound_login_challenge(conn.binding(), nonce, L().b.id)),
      network_token));
    ASSERT_NO_FATAL_FAILURE(expect_refusal(conn, pb::ID_MISMATCH));
    ++refusals;
  }
  {
    tls_conn conn; // undecodable
    std::string nonce;
    ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
    conn.send_frame(std::string("\x0f\x01", 2));
    EXPECT_TRUE(await_close(conn).closed) << diag();
  }
  {
    tls_conn conn; // half a frame, then gone
    std::string nonce;
    ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
    conn.send_raw(std::string("\x00\x00\x01\x00partial", 11));
  }

  ASSERT_TRUE(L().server.alive())
    << "the signaling server died: " << L().server.exit_text() << diag();
  for (auto* n : {&L().a, &L().b}) {
    ASSERT_TRUE(n->proc.alive())
      << n->name << " died: " << n->proc.exit_text() << diag();
    ASSERT_NO_FATAL_FAILURE(expect_undisturbed(*n));
  }
  auto after = L().server_status();
  ASSERT_TRUE(after.has_value())
    << "the server's admin port stopped answering" << diag();
  std::vector<std::string> listed;
  for (auto& n : after->nodes())
    listed.push_back(n.node_id());
  EXPECT_NE(std::find(listed.begin(), listed.end(), L().a.id), listed.end())
    << diag();
  EXPECT_NE(std::find(listed.begin(), listed.end(), L().b.id), listed.end())
    << diag();
  EXPECT_GE(after->login_failures(), before->login_failures() + refusals)
    << "loginFailures did not count the refusals" << diag();
  EXPECT_GT(after->dropped_connections(), before->dropped_connections())
    << "droppedConnections did not count the closed connections" << diag();

  // And the server still accepts an honest login.
  tls_conn conn;
  std::string nonce;
  ASSERT_NO_FATAL_FAILURE(connect_and_hello(conn, nonce));
  auto me = identity::generate();
  conn.send_frame(login_payload(
    me.node_id(), me.public_key(),
    me.sign(bound_login_challenge(conn.binding(), nonce, me.node_id())),
    network_token));
  std::string payload;
  ASSERT_EQ(conn.read_frame(max_wait, payload), tls_conn::result::frame)
    << conn.last_error() << diag();
  pb::Envelope env;
  ASSERT_TRUE(env.ParseFromString(payload)) << diag();
  EXPECT_TRUE(env.has_login_ok())
    << "an honest login after the abuse got " << describe(env) << diag();
}

} // namespace
