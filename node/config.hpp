// node.toml read into typed structs (ARCHITECTURE §9, docs/configuration.md).
// Every mistake is reported as "FILE:LINE: KEY: what is wrong, what to do";
// unknown keys are mistakes too, so a typo never silently falls back to a
// default.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/common/endpoint.hpp"
#include "actors/common/log.hpp"
#include "actors/ice/interface_filter.hpp"

namespace p2proxy {

struct config_error : std::runtime_error {
  config_error(std::string file, int line, std::string key, std::string what);
  std::string file;
  int line;        // 0 when the mistake has no single line (a missing key)
  std::string key; // dotted, e.g. "signal.server" or "export[2].target"
  std::string reason;
};

struct turn_config {
  endpoint server;
  std::string user;
  std::string password;
};

struct export_config {
  std::string name;
  endpoint target;
  std::string protocol = "tcp";   // rtsp | http | tcp | udp
  std::vector<std::string> allow; // node ids or "*"; empty = deny all
  std::chrono::milliseconds udp_idle{60000}; // udp: a silent flow ends
  std::string rtsp_transport = "tcp"; // rtsp: to the camera, for UDP clients
};

struct listen_config {
  endpoint bind;
  std::string protocol = "tcp";              // rtsp | http | socks5 | tcp | udp
  std::string resource;                      // required for tcp and udp
  std::string peer;                          // optional pinned node id
  std::chrono::milliseconds udp_idle{60000}; // udp: a silent flow ends
  uint64_t max_flows = 256;                  // udp: flows at once
};

struct node_config {
  std::string source; // the file it came from
  // [node]
  std::string key_file = "node.key"; // relative paths: to the config file
  // [signal]
  endpoint signal_server; // the first of signal_servers
  /// server = "HOST:PORT" or a list of a cluster's servers (docs/cluster.md).
  std::vector<endpoint> signal_servers;
  std::string server_id;     // pinned server key id; empty: trust on first use
  std::string token;         // from token or token_file
  bool token_inline = false; // token = "..." (not token_file)
  std::chrono::milliseconds heartbeat{15000};
  std::chrono::milliseconds dead_after{45000};
  std::chrono::milliseconds backoff_first{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds lookup_timeout{5000};
  // [ice]
  std::vector<endpoint> stun;
  std::vector<turn_config> turn;
  std::vector<std::string> interfaces; // empty: every interface
  std::vector<std::string> exclude = default_interface_excludes();
  // [session]
  std::chrono::milliseconds idle_linger{30000};
  std::chrono::milliseconds connect_timeout{20000}; // ICE + handshake
  std::chrono::milliseconds idle_timeout{30000}; // QUIC: silence that ends it
  std::chrono::milliseconds keepalive{10000};    // QUIC PING when idle
  uint64_t stream_window = 16ull << 20;          // bytes
  uint64_t connection_window = 64ull << 20;      // bytes
  std::string congestion_control = "bbr";        // bbr | bbr2 | cubic
  // A relayed session's first probe for a direct pair.
  std::chrono::milliseconds upgrade_first{10000};
  // [debug]
  bool test_resources = false; // built-in echo / discard / source
  // [admin]
  bool admin_enabled = false;
  endpoint admin_listen;
  std::string admin_token; // from token_file; needed unless listen is loopback
  // [log]
  log::level log_level = log::level::info;
  std::vector<export_config> exports;
  std::vector<listen_config> listens;
};

/// Reads and validates `path`; throws config_error.
node_config load_node_config(const std::string& path);
/// Same, from text (tests); `name` stands for the file name in errors.
node_config parse_node_config(const std::string& text, const std::string& name);

/// Reads a network token file, trimmed; throws std::runtime_error naming
/// `path` when it cannot be read, is empty, or is readable by group or
/// others (with a `chmod 600` hint, as for key files).
std::string read_token_file(const std::string& path);

/// The admin port's bearer token: a token file, read and checked like
/// the network token's (read_token_file).
std::string read_admin_token_file(const std::string& path);

/// True for a literal loopback address (127.0.0.0/8, ::1) and "localhost".
/// Host names are not resolved: any other name counts as reachable.
bool is_loopback_host(std::string_view host);

/// "30s", "1500ms", "2m", "1h"; false when malformed.
bool parse_duration(std::string_view text, std::chrono::milliseconds& out);

} // namespace p2proxy
