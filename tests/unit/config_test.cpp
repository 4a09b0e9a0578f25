#include "node/config.hpp"

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include <sys/stat.h>

using namespace p2proxy;
using std::chrono::milliseconds;

namespace {

const std::string id_a(52, 'a');
const std::string id_b = std::string(51, 'b') + "q";

// Two lines every test starts from, so line numbers below count from 3.
const std::string base = "[signal]\n"
                         "server = \"127.0.0.1:7000\"\n";

config_error error_of(const std::string& text,
                      const std::string& name = "test.toml") {
  try {
    parse_node_config(text, name);
  } catch (const config_error& e) {
    return e;
  }
  ADD_FAILURE() << "no config_error for:\n" << text;
  return config_error{name, -1, "", "(no error)"};
}

// The three things every message must carry: file, line and dotted key.
void expect_error(const std::string& text, int line, const std::string& key,
                  const std::string& reason_part) {
  auto e = error_of(text);
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(e.line, line) << e.what();
  EXPECT_EQ(e.key, key) << e.what();
  std::string what = e.what();
  auto prefix = line > 0 ? "test.toml:" + std::to_string(line) + ": "
                         : std::string{"test.toml: "};
  if (!key.empty())
    prefix += key + ": ";
  EXPECT_EQ(what.rfind(prefix, 0), 0u) << what;
  EXPECT_NE(what.find(reason_part), std::string::npos) << what;
}

struct config_files : ::testing::Test {
  std::filesystem::path dir;

  void SetUp() override {
    char tmpl[] = "/tmp/p2proxy-config-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    std::filesystem::remove_all(dir);
  }
  std::string write(const char* name, const std::string& text) {
    auto p = (dir / name).string();
    std::ofstream{p} << text;
    return p;
  }
};

} // namespace

TEST(config, full_example_parses_into_the_expected_values) {
  auto text = "[node]\n"
              "key = \"keys/node.key\"\n"
              "[signal]\n"
              "server = \"198.18.0.10:7000\"\n"
              "token = \"network-secret\"\n"
              "heartbeat = \"10s\"\n"
              "dead_after = \"2m\"\n"
              "lookup_timeout = \"500ms\"\n"
              "backoff_first = \"2s\"\n"
              "backoff_max = \"1h\"\n"
              "[ice]\n"
              "stun = [\"198.18.0.10:3478\", \"[::1]:3479\"]\n"
              "turn = [{ server = \"198.18.0.10:3478\", user = \"u\", "
              "password = \"p\" }]\n"
              "[session]\n"
              "idle_linger = \"0s\"\n"
              "congestion_control = \"bbr2\"\n"
              "[admin]\n"
              "listen = \"127.0.0.1:7070\"\n"
              "[log]\n"
              "level = \"debug\"\n"
              "[[export]]\n"
              "name = \"cam1\"\n"
              "target = \"192.168.1.10:554\"\n"
              "protocol = \"rtsp\"\n"
              "allow = [\"*\"]\n"
              "[[export]]\n"
              "name = \"web.v-2_x\"\n"
              "target = \"localhost:80\"\n"
              "protocol = \"http\"\n"
              "allow = [\""
              + id_a + "\", \"" + id_b
              + "\"]\n"
                "[[export]]\n"
                "name = \"ssh\"\n"
                "target = \"127.0.0.1:22\"\n"
                "[[listen]]\n"
                "bind = \"127.0.0.1:8554\"\n"
                "protocol = \"rtsp\"\n"
                "resource = \"cam1\"\n"
                "peer = \""
              + id_a
              + "\"\n"
                "[[listen]]\n"
                "bind = \"127.0.0.1:1080\"\n"
                "protocol = \"socks5\"\n"
                "[[listen]]\n"
                "bind = \"127.0.0.1:2222\"\n"
                "resource = \"ssh\"\n";
  auto cfg = parse_node_config(text, "/etc/p2proxy/node.toml");
  EXPECT_EQ(cfg.source, "/etc/p2proxy/node.toml");
  EXPECT_EQ(cfg.key_file, "/etc/p2proxy/keys/node.key");
  EXPECT_EQ(cfg.signal_server.host, "198.18.0.10");
  EXPECT_EQ(cfg.signal_server.port, 7000);
  EXPECT_EQ(cfg.token, "network-secret");
  EXPECT_EQ(cfg.heartbeat, milliseconds{10000});
  EXPECT_EQ(cfg.dead_after, milliseconds{120000});
  EXPECT_EQ(cfg.lookup_timeout, milliseconds{500});
  EXPECT_EQ(cfg.backoff_first, milliseconds{2000});
  EXPECT_EQ(cfg.backoff_max, milliseconds{3600000});
  ASSERT_EQ(cfg.stun.size(), 2u);
  EXPECT_EQ(cfg.stun[0].to_string(), "198.18.0.10:3478");
  EXPECT_EQ(cfg.stun[1].host, "::1");
  ASSERT_EQ(cfg.turn.size(), 1u);
  EXPECT_EQ(cfg.turn[0].server.to_string(), "198.18.0.10:3478");
  EXPECT_EQ(cfg.turn[0].user, "u");
  EXPECT_EQ(cfg.turn[0].password, "p");
  EXPECT_EQ(cfg.idle_linger, milliseconds{0});
  EXPECT_EQ(cfg.congestion_control, "bbr2");
  EXPECT_TRUE(cfg.admin_enabled);
  EXPECT_EQ(cfg.admin_listen.to_string(), "127.0.0.1:7070");
  EXPECT_EQ(cfg.log_level, log::level::debug);
  ASSERT_EQ(cfg.exports.size(), 3u);
  EXPECT_EQ(cfg.exports[0].name, "cam1");
  EXPECT_EQ(cfg.exports[0].target.to_string(), "192.168.1.10:554");
  EXPECT_EQ(cfg.exports[0].protocol, "rtsp");
  EXPECT_EQ(cfg.exports[0].allow, std::vector<std::string>{"*"});
  EXPECT_EQ(cfg.exports[1].name, "web.v-2_x");
  EXPECT_EQ(cfg.exports[1].protocol, "http");
  EXPECT_EQ(cfg.exports[1].allow, (std::vector<std::string>{id_a, id_b}));
  EXPECT_EQ(cfg.exports[2].protocol, "tcp");
  EXPECT_TRUE(cfg.exports[2].allow.empty());
  ASSERT_EQ(cfg.listens.size(), 3u);
  EXPECT_EQ(cfg.listens[0].bind.to_string(), "127.0.0.1:8554");
  EXPECT_EQ(cfg.listens[0].protocol, "rtsp");
  EXPECT_EQ(cfg.listens[0].resource, "cam1");
  EXPECT_EQ(cfg.listens[0].peer, id_a);
  EXPECT_EQ(cfg.listens[1].protocol, "socks5");
  EXPECT_EQ(cfg.listens[1].resource, "");
  EXPECT_EQ(cfg.listens[2].protocol, "tcp");
  EXPECT_EQ(cfg.listens[2].resource, "ssh");
}

TEST(config, minimal_file_gets_the_defaults) {
  auto cfg = parse_node_config(base, "conf/node.toml");
  EXPECT_EQ(cfg.key_file, "conf/node.key");
  EXPECT_EQ(cfg.token, "");
  EXPECT_EQ(cfg.heartbeat, milliseconds{15000});
  EXPECT_EQ(cfg.dead_after, milliseconds{45000});
  EXPECT_EQ(cfg.lookup_timeout, milliseconds{5000});
  EXPECT_EQ(cfg.idle_linger, milliseconds{30000});
  EXPECT_EQ(cfg.congestion_control, "bbr");
  EXPECT_FALSE(cfg.admin_enabled);
  EXPECT_EQ(cfg.log_level, log::level::info);
  EXPECT_TRUE(cfg.stun.empty());
  EXPECT_TRUE(cfg.exports.empty());
  EXPECT_TRUE(cfg.listens.empty());
}

TEST(config, parse_duration_accepts_units_and_rejects_the_rest) {
  milliseconds d{0};
  EXPECT_TRUE(parse_duration("15s", d));
  EXPECT_EQ(d, milliseconds{15000});
  EXPECT_TRUE(parse_duration("500ms", d));
  EXPECT_EQ(d, milliseconds{500});
  EXPECT_TRUE(parse_duration("2m", d));
  EXPECT_EQ(d, milliseconds{120000});
  EXPECT_TRUE(parse_duration("1h", d));
  EXPECT_EQ(d, milliseconds{3600000});
  for (auto bad : {"", "15", "s", "15 s", "-1s", "1.5s", "15sec", "1d",
                   "99999999999999999999s", "9223372036854775807h"})
    EXPECT_FALSE(parse_duration(bad, d)) << bad;
}

TEST(config, unknown_top_level_key) {
  // Top-level keys must precede the first table in TOML.
  expect_error("colour = \"red\"\n" + base, 1, "colour",
               "unknown key 'colour' (known: node, signal, ice, session, "
               "admin, log, export, listen, debug)");
}

TEST(config, unknown_top_level_table) {
  expect_error(base + "[sesion]\nidle_linger = \"1s\"\n", 3, "sesion",
               "unknown key 'sesion'");
}

TEST(config, unknown_key_in_signal) {
  expect_error(base + "sever = \"x\"\n", 3, "signal.sever",
               "unknown key 'sever' (known: server, token, token_file, "
               "heartbeat");
}

TEST(config, unknown_key_in_an_export) {
  expect_error(
    base
      + "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.4:554\"\n"
        "[[export]]\nname = \"cam2\"\ntraget = \"1.2.3.4:554\"\n",
    8, "export[2].traget",
    "unknown key 'traget' (known: name, target, protocol, allow, udp_idle, "
    "rtsp_transport)");
}

TEST(config, missing_signal_server_names_the_signal_table_line) {
  expect_error("[node]\nkey = \"a.key\"\n[signal]\ntoken = \"t\"\n", 3,
               "signal.server", "missing");
}

TEST(config, missing_signal_table_has_no_line) {
  auto e = error_of("[node]\nkey = \"a.key\"\n");
  EXPECT_EQ(e.line, 0);
  EXPECT_EQ(e.key, "signal.server");
  EXPECT_EQ(std::string{e.what()}.rfind("test.toml: signal.server: ", 0), 0u)
    << e.what();
}

TEST(config, bad_host_port) {
  expect_error("[signal]\nserver = \"127.0.0.1\"\n", 2, "signal.server",
               "missing port");
}

TEST(config, port_out_of_range) {
  expect_error(base
                 + "[ice]\nstun = [\"1.2.3.4:3478\",\n  \"1.2.3.4:70000\"]\n",
               5, "ice.stun[2]", "out of range");
}

TEST(config, bad_duration) {
  expect_error(base + "heartbeat = \"15 seconds\"\n", 3, "signal.heartbeat",
               "invalid duration \"15 seconds\"");
}

TEST(config, dead_after_must_exceed_heartbeat) {
  expect_error(base + "heartbeat = \"10s\"\ndead_after = \"5s\"\n", 4,
               "signal.dead_after", "longer than heartbeat");
}

TEST(config, bad_protocol) {
  expect_error(base
                 + "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.4:554\"\n"
                   "protocol = \"ftp\"\n",
               6, "export[1].protocol",
               "unknown protocol \"ftp\" (known: rtsp, http, tcp, udp)");
}

TEST(config, socks5_is_a_listen_protocol_but_not_an_export_protocol) {
  expect_error(base
                 + "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.4:554\"\n"
                   "protocol = \"socks5\"\n",
               6, "export[1].protocol", "unknown protocol");
}

TEST(config, tcp_listen_without_resource) {
  expect_error(base + "[[listen]]\nbind = \"127.0.0.1:2222\"\n", 3,
               "listen[1].resource", "missing");
}

TEST(config, bad_resource_name) {
  expect_error(base
                 + "[[listen]]\nbind = \"127.0.0.1:2222\"\n"
                   "resource = \"Cam 1\"\n",
               5, "listen[1].resource", "invalid resource name");
}

TEST(config, bad_peer_id) {
  expect_error(base
                 + "[[listen]]\nbind = \"127.0.0.1:8554\"\n"
                   "protocol = \"rtsp\"\npeer = \"NODE-ID\"\n",
               6, "listen[1].peer", "\"NODE-ID\" is not a node id");
}

TEST(config, bad_allow_entry) {
  expect_error(base
                 + "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.4:554\"\n"
                   "allow = [\""
                 + id_a + "\", \"everyone\"]\n",
               6, "export[1].allow[2]", "\"everyone\" is not a node id");
}

TEST(config, duplicate_export_name) {
  expect_error(base
                 + "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.4:554\"\n"
                   "[[export]]\nname = \"cam1\"\ntarget = \"1.2.3.5:554\"\n",
               7, "export[2].name",
               "duplicate export name \"cam1\" (first at "
               "line 4)");
}

TEST(config, duplicate_listen_bind) {
  expect_error(base
                 + "[[listen]]\nbind = \"127.0.0.1:1080\"\nprotocol = "
                   "\"socks5\"\n"
                   "[[listen]]\nbind = \"127.0.0.1:1080\"\nprotocol = "
                   "\"http\"\n",
               7, "listen[2].bind", "duplicate bind address");
}

TEST(config, token_and_token_file_together) {
  expect_error(base + "token = \"t\"\ntoken_file = \"t.txt\"\n", 4,
               "signal.token_file", "both set");
}

TEST(config, wrong_type) {
  expect_error("[signal]\nserver = 7000\n", 2, "signal.server",
               "expected a string like \"127.0.0.1:7000\", got an integer");
}

TEST(config, export_written_as_a_single_table) {
  expect_error(base + "[export]\nname = \"cam1\"\n", 3, "export",
               "expected [[export]] entries, got a table");
}

TEST(config, turn_entry_without_user) {
  expect_error(base
                 + "[ice]\nturn = [\n  { server = \"1.2.3.4:3478\", "
                   "password = \"p\" },\n]\n",
               5, "ice.turn[1].user", "missing");
}

TEST(config, toml_syntax_error_reports_toml_line) {
  auto e = error_of(base + "[log]\nlevel = \"info\n");
  EXPECT_EQ(e.line, 4) << e.what();
  EXPECT_EQ(e.file, "test.toml");
  EXPECT_EQ(std::string{e.what()}.rfind("test.toml:4: ", 0), 0u) << e.what();
}

TEST(config, upgrade_first_sets_the_relayed_sessions_first_probe) {
  EXPECT_EQ(parse_node_config(base, "t.toml").upgrade_first,
            milliseconds{10000});
  auto cfg = parse_node_config(base + "[session]\nupgrade_first = \"10m\"\n",
                               "t.toml");
  EXPECT_EQ(cfg.upgrade_first, milliseconds{600000});
  expect_error(base + "[session]\nupgrade_first = \"0s\"\n", 4,
               "session.upgrade_first", "must be longer than 0");
}

TEST(config, unknown_congestion_control) {
  expect_error(base + "[session]\ncongestion_control = \"reno\"\n", 4,
               "session.congestion_control",
               "unknown controller \"reno\" (known: bbr, bbr2, cubic)");
}

TEST(config, bad_log_level) {
  expect_error(base + "[log]\nlevel = \"verbose\"\n", 4, "log.level",
               "unknown level \"verbose\" (known: trace, debug, info, warn, "
               "error, off)");
}

TEST_F(config_files, token_file_is_relative_to_the_config_and_trimmed) {
  ::chmod(write("network.token", "  s3cret\n\n").c_str(), 0600);
  auto p = write("node.toml", base + "token_file = \"network.token\"\n");
  auto cfg = load_node_config(p);
  EXPECT_EQ(cfg.token, "s3cret");
  EXPECT_EQ(cfg.key_file, (dir / "node.key").string());
}

TEST_F(config_files, missing_token_file) {
  auto p = write("node.toml", base + "token_file = \"absent.token\"\n");
  try {
    load_node_config(p);
    FAIL() << "no error";
  } catch (const config_error& e) {
    std::string what = e.what();
    EXPECT_EQ(what.rfind(p + ":3: signal.token_file: ", 0), 0u) << what;
    EXPECT_NE(what.find((dir / "absent.token").string()), std::string::npos)
      << what;
  }
}

TEST_F(config_files, missing_config_file_names_it) {
  auto p = (dir / "nope.toml").string();
  try {
    load_node_config(p);
    FAIL() << "no error";
  } catch (const config_error& e) {
    EXPECT_EQ(std::string{e.what()}.rfind(p + ": ", 0), 0u) << e.what();
  }
}

TEST(config, udp_export_and_listener_with_their_settings) {
  auto cfg = parse_node_config(
    base
      + "[[export]]\nname = \"dns\"\ntarget = \"127.0.0.1:53\"\n"
        "protocol = \"udp\"\nallow = [\"*\"]\nudp_idle = \"20s\"\n"
        "[[listen]]\nbind = \"127.0.0.1:5353\"\nprotocol = \"udp\"\n"
        "resource = \"dns\"\nudp_idle = \"5s\"\nmax_flows = 16\n"
        "[[listen]]\nbind = \"127.0.0.1:5354\"\nprotocol = \"udp\"\n"
        "resource = \"dns\"\n",
    "node.toml");
  ASSERT_EQ(cfg.exports.size(), 1u);
  EXPECT_EQ(cfg.exports[0].protocol, "udp");
  EXPECT_EQ(cfg.exports[0].udp_idle, std::chrono::seconds(20));
  ASSERT_EQ(cfg.listens.size(), 2u);
  EXPECT_EQ(cfg.listens[0].protocol, "udp");
  EXPECT_EQ(cfg.listens[0].udp_idle, std::chrono::seconds(5));
  EXPECT_EQ(cfg.listens[0].max_flows, 16u);
  EXPECT_EQ(cfg.listens[1].udp_idle, std::chrono::seconds(60));
  EXPECT_EQ(cfg.listens[1].max_flows, 256u);
}

TEST(config, udp_listen_without_resource) {
  expect_error(base
                 + "[[listen]]\nbind = \"127.0.0.1:2222\"\n"
                   "protocol = \"udp\"\n",
               3, "listen[1].resource", "a udp listener");
}

TEST(config, bad_max_flows) {
  expect_error(base
                 + "[[listen]]\nbind = \"127.0.0.1:2222\"\n"
                   "protocol = \"udp\"\nresource = \"dns\"\n"
                   "max_flows = 0\n",
               7, "listen[1].max_flows", "from 1 to 65536");
}

TEST(config, signal_server_may_list_a_clusters_servers) {
  auto cfg = parse_node_config(
    "[signal]\nserver = [\"a.example:7000\", \"198.18.0.2:7001\"]\n",
    "test.toml");
  ASSERT_EQ(cfg.signal_servers.size(), 2u);
  EXPECT_EQ(cfg.signal_servers[0].host, "a.example");
  EXPECT_EQ(cfg.signal_servers[1].port, 7001);
  EXPECT_EQ(cfg.signal_server.host, "a.example"); // the first
  auto one = parse_node_config("[signal]\nserver = \"b:7000\"\n", "test.toml");
  ASSERT_EQ(one.signal_servers.size(), 1u);
  EXPECT_EQ(one.signal_server.host, "b");
  expect_error("[signal]\nserver = []\n", 2, "signal.server", "empty");
  expect_error("[signal]\nserver = [\"a:7000\", \"b\"]\n", 2,
               "signal.server[2]", "");
}
