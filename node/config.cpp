#include "node/config.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "actors/identity/identity.hpp"
#include "actors/quic/quic_connection.hpp"

namespace p2proxy {

namespace {

std::string compose(const std::string& file, int line, const std::string& key,
                    const std::string& reason) {
  std::string out = file;
  if (line > 0)
    out += fmt::format(":{}", line);
  out += ": ";
  if (!key.empty())
    out += key + ": ";
  out += reason;
  return out;
}

} // namespace

config_error::config_error(std::string file_, int line_, std::string key_,
                           std::string what)
  : std::runtime_error(compose(file_, line_, key_, what)),
    file(std::move(file_)), line(line_), key(std::move(key_)),
    reason(std::move(what)) {}

bool parse_duration(std::string_view text, std::chrono::milliseconds& out) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
    ++digits;
  if (digits == 0 || digits == text.size())
    return false;
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, n);
  if (ec != std::errc{} || ptr != text.data() + digits)
    return false;
  auto unit = text.substr(digits);
  uint64_t scale;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60 * 1000;
  else if (unit == "h")
    scale = 60 * 60 * 1000;
  else
    return false;
  using rep = std::chrono::milliseconds::rep;
  if (n > static_cast<uint64_t>(std::numeric_limits<rep>::max()) / scale)
    return false;
  out = std::chrono::milliseconds{static_cast<rep>(n * scale)};
  return true;
}

namespace {

using std::chrono::milliseconds;

constexpr const char* endpoint_like = "a string like \"127.0.0.1:7000\"";
constexpr const char* duration_like = "a duration string like \"15s\"";

bool is_resource_name(std::string_view s) {
  auto first_ok
    = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (s.empty() || s.size() > 63 || !first_ok(s.front()))
    return false;
  for (char c : s)
    if (!first_ok(c) && c != '-' && c != '_' && c != '.')
      return false;
  return true;
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

int line_of(const toml::node& n) {
  return static_cast<int>(n.source().begin.line);
}

std::string join(const std::vector<std::string_view>& xs) {
  std::string out;
  for (auto x : xs) {
    if (!out.empty())
      out += ", ";
    out += x;
  }
  return out;
}

std::string dotted(const std::string& prefix, std::string_view name) {
  if (prefix.empty())
    return std::string{name};
  return prefix + "." + std::string{name};
}

// Walks the parsed document once; every check knows the file, the line and
// the dotted key, so each mistake becomes one precise config_error.
class reader {
public:
  reader(std::string file, std::filesystem::path dir)
    : file_(std::move(file)), dir_(std::move(dir)) {}

  [[noreturn]] void fail(int line, const std::string& key,
                         const std::string& reason) const {
    throw config_error(file_, line, key, reason);
  }

  // Makes typos loud: a misspelled key would otherwise fall back to a default.
  void check_keys(const toml::table& t, const std::string& prefix,
                  const std::vector<std::string_view>& known) const {
    for (auto&& [k, v] : t) {
      bool ok = false;
      for (auto name : known)
        ok = ok || k.str() == name;
      if (ok)
        continue;
      auto line = static_cast<int>(k.source().begin.line);
      if (line == 0)
        line = line_of(v);
      fail(line, dotted(prefix, k.str()),
           fmt::format("unknown key '{}' (known: {})", k.str(), join(known)));
    }
  }

  const toml::table* table_at(const toml::table& root, std::string_view name) {
    auto n = root.get(name);
    if (n == nullptr)
      return nullptr;
    if (!n->is_table())
      fail(line_of(*n), std::string{name},
           fmt::format("expected a table [{}], got {}", name, type_name(*n)));
    return n->as_table();
  }

  [[noreturn]] void missing(const toml::table* t, const std::string& key,
                            const std::string& hint) const {
    fail(t != nullptr ? line_of(*t) : 0, key, "missing; " + hint);
  }

  std::string string_of(const toml::node& n, const std::string& key,
                        const std::string& like) const {
    if (!n.is_string())
      fail(line_of(n), key,
           fmt::format("expected {}, got {}", like, type_name(n)));
    return n.as_string()->get();
  }

  // Binds may use port 0 (the system picks one); peers and servers may not.
  endpoint endpoint_of(const toml::node& n, const std::string& key,
                       bool allow_port_zero = false) const {
    auto text = string_of(n, key, endpoint_like);
    std::string why;
    auto ep = parse_endpoint(text, why);
    if (!ep)
      fail(line_of(n), key,
           fmt::format("invalid address \"{}\": {}; write it like "
                       "\"127.0.0.1:7000\"",
                       text, why));
    if (ep->port == 0 && !allow_port_zero)
      fail(line_of(n), key,
           fmt::format("invalid address \"{}\": port 0 cannot be connected to",
                       text));
    return *ep;
  }

  milliseconds duration_of(const toml::node& n, const std::string& key,
                           bool allow_zero) const {
    auto text = string_of(n, key, duration_like);
    milliseconds out{0};
    if (!parse_duration(text, out))
      fail(line_of(n), key,
           fmt::format("invalid duration \"{}\"; expected a whole number and "
                       "a unit (ms, s, m, h), like \"500ms\", \"15s\" or "
                       "\"2m\"",
                       text));
    if (out.count() == 0 && !allow_zero)
      fail(line_of(n), key, "must be longer than 0");
    return out;
  }

  /// A size in bytes: an integer, or a string like "16MiB", "512KiB".
  uint64_t size_of(const toml::node& n, const std::string& key) const {
    int64_t value = -1;
    if (n.is_integer()) {
      value = n.as_integer()->get();
    } else if (n.is_string()) {
      auto text = n.as_string()->get();
      size_t pos = 0;
      while (pos < text.size()
             && std::isdigit(static_cast<unsigned char>(text[pos])))
        ++pos;
      auto unit = text.substr(pos);
      int64_t mult = unit == "" || unit == "B" ? 1
                     : unit == "KiB"           ? 1024
                     : unit == "MiB"           ? 1024 * 1024
                     : unit == "GiB"           ? int64_t{1} << 30
                                               : -1;
      if (pos > 0 && pos <= 12 && mult > 0)
        value = std::stoll(text.substr(0, pos)) * mult;
    }
    if (value < 64 * 1024 || value > (int64_t{1} << 32))
      fail(line_of(n), key,
           "expected a size between 64KiB and 4GiB, like \"16MiB\" or "
           "16777216");
    return static_cast<uint64_t>(value);
  }

  const toml::array& array_of(const toml::node& n, const std::string& key,
                              const std::string& like) const {
    if (!n.is_array())
      fail(line_of(n), key,
           fmt::format("expected {}, got {}", like, type_name(n)));
    return *n.as_array();
  }

  std::string protocol_of(const toml::node& n, const std::string& key,
                          const std::vector<std::string_view>& known) const {
    auto text = string_of(n, key, "a string like \"tcp\"");
    for (auto k : known)
      if (text == k)
        return text;
    fail(line_of(n), key,
         fmt::format("unknown protocol \"{}\" (known: {})", text, join(known)));
  }

  std::string resource_of(const toml::node& n, const std::string& key) const {
    auto text = string_of(n, key, "a string like \"cam1\"");
    if (!is_resource_name(text))
      fail(line_of(n), key,
           fmt::format("invalid resource name \"{}\"; use 1-63 characters "
                       "a-z, 0-9, '-', '_', '.', starting with a letter or "
                       "digit",
                       text));
    return text;
  }

  std::string node_id_of(const toml::node& n, const std::string& key,
                         bool allow_star) const {
    auto text = string_of(n, key, "a node id string");
    if (looks_like_node_id(text) || (allow_star && text == "*"))
      return text;
    fail(line_of(n), key,
         fmt::format("\"{}\" is not a node id{} (52 characters a-z and 2-7, as "
                     "printed by `p2proxy id --key node.key`)",
                     text, allow_star ? " or \"*\"" : ""));
  }

  std::string resolve(const std::string& p) const {
    std::filesystem::path path{p};
    if (path.is_relative() && !dir_.empty())
      return (dir_ / path).string();
    return p;
  }

  void read(const toml::table& root, node_config& cfg) {
    check_keys(root, "",
               {"node", "signal", "ice", "session", "admin", "log", "export",
                "listen", "debug"});
    read_node(table_at(root, "node"), cfg);
    read_signal(table_at(root, "signal"), cfg);
    read_ice(table_at(root, "ice"), cfg);
    if (auto t = table_at(root, "session")) {
      check_keys(*t, "session",
                 {"idle_linger", "connect_timeout", "idle_timeout", "keepalive",
                  "stream_window", "connection_window", "congestion_control"});
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
      if (auto n = t->get("congestion_control")) {
        auto text = string_of(*n, "session.congestion_control",
                              "a string like \"bbr\"");
        congestion_control cc;
        if (!parse_congestion_control(text, cc))
          fail(line_of(*n), "session.congestion_control",
               fmt::format("unknown controller \"{}\" (known: bbr, bbr2, "
                           "cubic)",
                           text));
        cfg.congestion_control = text;
      }
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
      check_keys(*t, "admin", {"listen"});
      auto n = t->get("listen");
      if (n == nullptr)
        missing(t, "admin.listen",
                "add listen = \"127.0.0.1:7070\" or remove [admin]");
      cfg.admin_listen = endpoint_of(*n, "admin.listen", true);
      cfg.admin_enabled = true;
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

private:
  void read_node(const toml::table* t, node_config& cfg) {
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

  void read_signal(const toml::table* t, node_config& cfg) {
    if (t == nullptr)
      missing(nullptr, "signal.server",
              "add a [signal] table with server = \"HOST:PORT\"");
    check_keys(*t, "signal",
               {"server", "token", "token_file", "heartbeat", "dead_after",
                "lookup_timeout", "backoff_first", "backoff_max"});
    auto server = t->get("server");
    if (server == nullptr)
      missing(t, "signal.server", "add server = \"HOST:PORT\" under [signal]");
    cfg.signal_server = endpoint_of(*server, "signal.server");
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
    }
    if (token_file != nullptr)
      cfg.token = read_token_file(*token_file);
    struct duration_key {
      const char* name;
      milliseconds* out;
    };
    for (auto [name, out] :
         {duration_key{"heartbeat", &cfg.heartbeat},
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

  std::string read_token_file(const toml::node& n) {
    auto rel
      = string_of(n, "signal.token_file", "a path like \"network.token\"");
    auto path = resolve(rel);
    std::ifstream in{path, std::ios::binary};
    if (!in)
      fail(line_of(n), "signal.token_file",
           fmt::format("cannot read token file {}: {}", path,
                       std::strerror(errno)));
    std::ostringstream buf;
    buf << in.rdbuf();
    auto text = buf.str();
    constexpr const char* space = " \t\r\n";
    auto first = text.find_first_not_of(space);
    if (first == std::string::npos)
      fail(line_of(n), "signal.token_file",
           fmt::format("token file {} is empty", path));
    auto last = text.find_last_not_of(space);
    return text.substr(first, last - first + 1);
  }

  void read_ice(const toml::table* t, node_config& cfg) {
    if (t == nullptr)
      return;
    check_keys(*t, "ice", {"stun", "turn"});
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

  const toml::table* entry_table(const toml::node& n, const std::string& key,
                                 const std::string& like) const {
    if (!n.is_table())
      fail(line_of(n), key,
           fmt::format("expected {}, got {}", like, type_name(n)));
    return n.as_table();
  }

  const toml::array* entries(const toml::table& root, const char* name) const {
    auto n = root.get(name);
    if (n == nullptr)
      return nullptr;
    if (!n->is_array())
      fail(line_of(*n), name,
           fmt::format("expected [[{}]] entries, got {}", name, type_name(*n)));
    return n->as_array();
  }

  void read_exports(const toml::table& root, node_config& cfg) {
    auto arr = entries(root, "export");
    if (arr == nullptr)
      return;
    std::map<std::string, int> first_line;
    for (size_t i = 0; i < arr->size(); ++i) {
      auto key = fmt::format("export[{}]", i + 1);
      auto e = entry_table((*arr)[i], key, "an [[export]] table");
      check_keys(*e, key, {"name", "target", "protocol", "allow"});
      export_config x;
      auto name = e->get("name");
      if (name == nullptr)
        missing(e, dotted(key, "name"), "add name = \"cam1\"");
      x.name = resource_of(*name, dotted(key, "name"));
      if (auto [it, fresh] = first_line.emplace(x.name, line_of(*name)); !fresh)
        fail(line_of(*name), dotted(key, "name"),
             fmt::format("duplicate export name \"{}\" (first at line {}); "
                         "export names must be unique",
                         x.name, it->second));
      auto target = e->get("target");
      if (target == nullptr)
        missing(e, dotted(key, "target"),
                "add target = \"HOST:PORT\" (the service to reach)");
      x.target = endpoint_of(*target, dotted(key, "target"));
      if (auto n = e->get("protocol"))
        x.protocol
          = protocol_of(*n, dotted(key, "protocol"), {"rtsp", "http", "tcp"});
      if (auto n = e->get("allow")) {
        auto akey = dotted(key, "allow");
        auto& list
          = array_of(*n, akey, "a list like [\"*\"] or [\"NODE-ID\", ...]");
        for (size_t j = 0; j < list.size(); ++j)
          x.allow.push_back(
            node_id_of(list[j], fmt::format("{}[{}]", akey, j + 1), true));
      }
      cfg.exports.push_back(std::move(x));
    }
  }

  void read_listens(const toml::table& root, node_config& cfg) {
    auto arr = entries(root, "listen");
    if (arr == nullptr)
      return;
    std::map<std::string, int> first_line;
    for (size_t i = 0; i < arr->size(); ++i) {
      auto key = fmt::format("listen[{}]", i + 1);
      auto e = entry_table((*arr)[i], key, "a [[listen]] table");
      check_keys(*e, key, {"bind", "protocol", "resource", "peer"});
      listen_config x;
      auto bind = e->get("bind");
      if (bind == nullptr)
        missing(e, dotted(key, "bind"), "add bind = \"127.0.0.1:8554\"");
      x.bind = endpoint_of(*bind, dotted(key, "bind"), true);
      // Port 0 picks a fresh port each time, so those never collide.
      if (x.bind.port != 0) {
        auto [it, fresh]
          = first_line.emplace(x.bind.to_string(), line_of(*bind));
        if (!fresh)
          fail(line_of(*bind), dotted(key, "bind"),
               fmt::format("duplicate bind address \"{}\" (first at line {})",
                           x.bind.to_string(), it->second));
      }
      if (auto n = e->get("protocol"))
        x.protocol = protocol_of(*n, dotted(key, "protocol"),
                                 {"rtsp", "http", "socks5", "tcp"});
      if (auto n = e->get("resource"))
        x.resource = resource_of(*n, dotted(key, "resource"));
      else if (x.protocol == "tcp")
        missing(e, dotted(key, "resource"),
                "a tcp listener carries no resource name of its own; add "
                "resource = \"NAME\" (an export name)");
      if (auto n = e->get("peer"))
        x.peer = node_id_of(*n, dotted(key, "peer"), false);
      cfg.listens.push_back(std::move(x));
    }
  }

  std::string file_;
  std::filesystem::path dir_;
};

} // namespace

node_config parse_node_config(const std::string& text,
                              const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw config_error(name, static_cast<int>(e.source().begin.line), "",
                       std::string{e.description()});
  }
  node_config cfg;
  cfg.source = name;
  reader r{name, std::filesystem::path{name}.parent_path()};
  r.read(root, cfg);
  return cfg;
}

node_config load_node_config(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw config_error(path, 0, "",
                       fmt::format("cannot read the configuration file: {}",
                                   std::strerror(errno)));
  std::ostringstream buf;
  buf << in.rdbuf();
  return parse_node_config(buf.str(), path);
}

} // namespace p2proxy
