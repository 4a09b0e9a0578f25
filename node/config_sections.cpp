#include "node/config_reader.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "actors/common/log.hpp"
#include "actors/ice/ice_driver.hpp"
#include "actors/identity/identity.hpp"
#include "actors/quic/quic_connection.hpp"

namespace p2proxy::config_detail {

namespace {

/// session.idle_timeout's upper bound: below ICE's own limit for a silent
/// pair, so the session's setting, not ICE, decides when silence ends it.
constexpr std::chrono::milliseconds max_idle_timeout{45000};

} // namespace

void reader::read(const toml::table& root, node_config& cfg) {
  check_keys(root, "",
             {"node", "signal", "ice", "session", "admin", "log", "export",
              "listen", "debug"});
  read_node(table_at(root, "node"), cfg);
  read_signal(table_at(root, "signal"), cfg);
  read_ice(table_at(root, "ice"), cfg);
  if (auto t = table_at(root, "session")) {
    check_keys(*t, "session",
               {"idle_linger", "connect_timeout", "idle_timeout", "keepalive",
                "stream_window", "connection_window", "congestion_control",
                "upgrade_first"});
    if (auto n = t->get("idle_linger"))
      cfg.idle_linger = duration_of(*n, "session.idle_linger", true);
    if (auto n = t->get("connect_timeout"))
      cfg.connect_timeout = duration_of(*n, "session.connect_timeout", false);
    if (auto n = t->get("idle_timeout"))
      cfg.idle_timeout = duration_of(*n, "session.idle_timeout", false);
    if (auto n = t->get("keepalive"))
      cfg.keepalive = duration_of(*n, "session.keepalive", false);
    if (auto n = t->get("stream_window"))
      cfg.stream_window = size_of(*n, "session.stream_window");
    if (auto n = t->get("connection_window"))
      cfg.connection_window = size_of(*n, "session.connection_window");
    if (auto n = t->get("upgrade_first"))
      cfg.upgrade_first = duration_of(*n, "session.upgrade_first", false);
    if (auto n = t->get("congestion_control")) {
      auto text
        = string_of(*n, "session.congestion_control", "a string like \"bbr\"");
      congestion_control cc;
      if (!parse_congestion_control(text, cc))
        fail(line_of(*n), "session.congestion_control",
             fmt::format("unknown controller \"{}\" (known: bbr, bbr2, "
                         "cubic)",
                         text));
      cfg.congestion_control = text;
    }
    if (cfg.idle_timeout > max_idle_timeout)
      fail(line_of(*t), "session.idle_timeout",
           fmt::format("must be at most {} s: ICE gives up a path whose "
                       "checks go unanswered for {} s",
                       max_idle_timeout.count() / 1000,
                       ice_pair_silence_limit.count()));
    if (cfg.keepalive >= cfg.idle_timeout)
      fail(line_of(*t), "session.keepalive",
           "must be shorter than session.idle_timeout, or the session ends "
           "before its keepalive is sent");
    if (cfg.connection_window < cfg.stream_window)
      fail(line_of(*t), "session.connection_window",
           "must not be smaller than session.stream_window");
  }
  if (auto t = table_at(root, "debug")) {
    check_keys(*t, "debug", {"test_resources"});
    if (auto n = t->get("test_resources")) {
      if (!n->is_boolean())
        fail(line_of(*n), "debug.test_resources",
             fmt::format("expected true or false, got {}", type_name(*n)));
      cfg.test_resources = n->as_boolean()->get();
    }
  }
  if (auto t = table_at(root, "admin")) {
    check_keys(*t, "admin", {"listen", "token_file"});
    auto n = t->get("listen");
    if (n == nullptr)
      missing(t, "admin.listen",
              "add listen = \"127.0.0.1:7070\" or remove [admin]");
    cfg.admin_listen = endpoint_of(*n, "admin.listen", true);
    cfg.admin_enabled = true;
    if (auto f = t->get("token_file")) {
      auto path = resolve(
        string_of(*f, "admin.token_file", "a path like \"admin.token\""));
      try {
        cfg.admin_token = read_admin_token_file(path);
      } catch (const std::runtime_error& e) {
        fail(line_of(*f), "admin.token_file", e.what());
      }
    }
    // Status, look-ups and probes are for the operator only: reachable from
    // other hosts they need a bearer token.
    if (cfg.admin_token.empty() && !is_loopback_host(cfg.admin_listen.host))
      fail(line_of(*n), "admin.listen",
           fmt::format("{} is not a loopback address; add token_file = "
                       "\"admin.token\" (a mode 0600 file holding a bearer "
                       "token) under [admin], or listen on 127.0.0.1",
                       cfg.admin_listen.host));
  }
  if (auto t = table_at(root, "log")) {
    check_keys(*t, "log", {"level"});
    if (auto n = t->get("level")) {
      auto text = string_of(*n, "log.level", "a string like \"info\"");
      if (!log::parse_level(text, cfg.log_level))
        fail(line_of(*n), "log.level",
             fmt::format("unknown level \"{}\" (known: trace, debug, info, "
                         "warn, error, off)",
                         text));
    }
  }
  read_exports(root, cfg);
  read_listens(root, cfg);
}

void reader::read_node(const toml::table* t, node_config& cfg) {
  if (t != nullptr) {
    check_keys(*t, "node", {"key"});
    if (auto n = t->get("key")) {
      cfg.key_file = string_of(*n, "node.key", "a path like \"node.key\"");
      if (cfg.key_file.empty())
        fail(line_of(*n), "node.key", "must not be empty");
    }
  }
  cfg.key_file = resolve(cfg.key_file);
}

void reader::read_signal(const toml::table* t, node_config& cfg) {
  if (t == nullptr)
    missing(nullptr, "signal.server",
            "add a [signal] table with server = \"HOST:PORT\"");
  check_keys(*t, "signal",
             {"server", "token", "token_file", "heartbeat", "dead_after",
              "lookup_timeout", "backoff_first", "backoff_max", "server_id"});
  auto server = t->get("server");
  if (server == nullptr)
    missing(t, "signal.server", "add server = \"HOST:PORT\" under [signal]");
  if (auto list = server->as_array()) {
    if (list->empty())
      fail(line_of(*server), "signal.server",
           "the list is empty; give one server or several, like "
           "[\"a.example:7000\", \"b.example:7000\"]");
    for (size_t i = 0; i < list->size(); ++i)
      cfg.signal_servers.push_back(
        endpoint_of((*list)[i], fmt::format("signal.server[{}]", i + 1)));
  } else {
    cfg.signal_servers.push_back(endpoint_of(*server, "signal.server"));
  }
  cfg.signal_server = cfg.signal_servers.front();
  if (auto n = t->get("server_id")) {
    cfg.server_id = string_of(*n, "signal.server_id",
                              "a server id (`p2proxy id --key server.key`)");
    if (!looks_like_node_id(cfg.server_id))
      fail(line_of(*n), "signal.server_id",
           fmt::format("\"{}\" is not a server id (52 characters a-z, 2-7, "
                       "as `p2proxy id --key server.key` prints)",
                       cfg.server_id));
  }
  auto token = t->get("token");
  auto token_file = t->get("token_file");
  if (token != nullptr && token_file != nullptr)
    fail(line_of(*token_file), "signal.token_file",
         "token and token_file are both set; keep one of them");
  if (token != nullptr) {
    cfg.token = string_of(*token, "signal.token", "a string");
    if (cfg.token.empty())
      fail(line_of(*token), "signal.token",
           "must not be empty; set the network token or remove the key");
    cfg.token_inline = true;
  }
  if (token_file != nullptr)
    cfg.token = read_token_file(*token_file);
  struct duration_key {
    const char* name;
    milliseconds* out;
  };
  for (auto [name, out] : {duration_key{"heartbeat", &cfg.heartbeat},
                           duration_key{"dead_after", &cfg.dead_after},
                           duration_key{"lookup_timeout", &cfg.lookup_timeout},
                           duration_key{"backoff_first", &cfg.backoff_first},
                           duration_key{"backoff_max", &cfg.backoff_max}})
    if (auto n = t->get(name))
      *out = duration_of(*n, dotted("signal", name), false);
  // A link declared dead before its next heartbeat is due would flap.
  if (cfg.dead_after <= cfg.heartbeat) {
    auto n = t->get("dead_after");
    fail(n != nullptr ? line_of(*n) : line_of(*t), "signal.dead_after",
         fmt::format("must be longer than heartbeat ({} ms), e.g. three "
                     "heartbeats",
                     cfg.heartbeat.count()));
  }
  if (cfg.backoff_max < cfg.backoff_first) {
    auto n = t->get("backoff_max");
    fail(n != nullptr ? line_of(*n) : line_of(*t), "signal.backoff_max",
         fmt::format("must not be shorter than backoff_first ({} ms)",
                     cfg.backoff_first.count()));
  }
}

std::string reader::read_token_file(const toml::node& n) {
  auto rel = string_of(n, "signal.token_file", "a path like \"network.token\"");
  try {
    return p2proxy::read_token_file(resolve(rel));
  } catch (const std::runtime_error& e) {
    fail(line_of(n), "signal.token_file", e.what());
  }
}

void reader::read_ice(const toml::table* t, node_config& cfg) {
  if (t == nullptr)
    return;
  check_keys(*t, "ice", {"stun", "turn", "interfaces", "exclude"});
  auto patterns = [&](const char* key) {
    std::vector<std::string> out;
    auto name = fmt::format("ice.{}", key);
    auto& arr = array_of(*t->get(key), name,
                         "a list of strings like [\"eth0\", \"wl*\", "
                         "\"10.0.0.0/8\"]");
    for (size_t i = 0; i < arr.size(); ++i) {
      auto item = fmt::format("{}[{}]", name, i + 1);
      auto text = string_of(arr[i], item, "an interface name or an address");
      if (auto why = interface_pattern_error(text); !why.empty())
        fail(line_of(arr[i]), item, why);
      out.push_back(std::move(text));
    }
    return out;
  };
  if (t->get("interfaces") != nullptr)
    cfg.interfaces = patterns("interfaces");
  if (t->get("exclude") != nullptr)
    cfg.exclude = patterns("exclude");
  if (auto n = t->get("stun")) {
    auto& arr = array_of(*n, "ice.stun",
                         "a list of strings like [\"198.18.0.10:3478\"]");
    for (size_t i = 0; i < arr.size(); ++i)
      cfg.stun.push_back(
        endpoint_of(arr[i], fmt::format("ice.stun[{}]", i + 1)));
  }
  if (auto n = t->get("turn")) {
    auto& arr = array_of(*n, "ice.turn",
                         "a list of tables like [{ server = \"HOST:PORT\", "
                         "user = \"u\", password = \"p\" }]");
    for (size_t i = 0; i < arr.size(); ++i) {
      auto key = fmt::format("ice.turn[{}]", i + 1);
      auto e = entry_table(arr[i], key, "a table { server, user, password }");
      check_keys(*e, key, {"server", "user", "password"});
      turn_config turn;
      auto require = [&](const char* name) -> const toml::node& {
        auto v = e->get(name);
        if (v == nullptr)
          missing(e, dotted(key, name),
                  fmt::format("every TURN server needs server, user and "
                              "password; add {}",
                              name));
        return *v;
      };
      turn.server = endpoint_of(require("server"), dotted(key, "server"));
      turn.user = string_of(require("user"), dotted(key, "user"), "a string");
      turn.password
        = string_of(require("password"), dotted(key, "password"), "a string");
      cfg.turn.push_back(std::move(turn));
    }
  }
}

} // namespace p2proxy::config_detail
