// The configuration loader's shared part: a reader that walks node.toml
// once, checking each value where it is, so that every mistake becomes one
// config_error with the file, the line and the dotted key. Its members are
// defined per part of the file: value checks (config_reader.cpp), the tables
// (config_sections.cpp), the [[export]] and [[listen]] entries
// (config_entries.cpp). Private to node/config.*.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "actors/common/endpoint.hpp"
#include "node/config.hpp"

namespace p2proxy::config_detail {

using std::chrono::milliseconds;

inline constexpr const char* endpoint_like = "a string like \"127.0.0.1:7000\"";
inline constexpr const char* duration_like = "a duration string like \"15s\"";

/// 1-63 characters a-z, 0-9, '-', '_', '.', starting with a letter or digit.
bool is_resource_name(std::string_view s);
/// "a string", "an integer", ... for error messages.
std::string type_name(const toml::node& n);
int line_of(const toml::node& n);
std::string join(const std::vector<std::string_view>& xs);
std::string dotted(const std::string& prefix, std::string_view name);

class reader {
public:
  reader(std::string file, std::filesystem::path dir)
    : file_(std::move(file)), dir_(std::move(dir)) {}

  /// Reads every table and entry of `root` into `cfg`.
  void read(const toml::table& root, node_config& cfg);

private:
  // --- value checks (config_reader.cpp)
  [[noreturn]] void fail(int line, const std::string& key,
                         const std::string& reason) const;

  // Makes typos loud: a misspelled key would otherwise fall back to a default.
  void check_keys(const toml::table& t, const std::string& prefix,
                  const std::vector<std::string_view>& known) const;

  const toml::table* table_at(const toml::table& root, std::string_view name);

  [[noreturn]] void missing(const toml::table* t, const std::string& key,
                            const std::string& hint) const;

  std::string string_of(const toml::node& n, const std::string& key,
                        const std::string& like) const;

  // Binds may use port 0 (the system picks one); peers and servers may not.
  endpoint endpoint_of(const toml::node& n, const std::string& key,
                       bool allow_port_zero = false) const;

  milliseconds duration_of(const toml::node& n, const std::string& key,
                           bool allow_zero) const;

  /// A size in bytes: an integer, or a string like "16MiB", "512KiB".
  uint64_t size_of(const toml::node& n, const std::string& key) const;

  const toml::array& array_of(const toml::node& n, const std::string& key,
                              const std::string& like) const;

  std::string protocol_of(const toml::node& n, const std::string& key,
                          const std::vector<std::string_view>& known) const;

  std::string resource_of(const toml::node& n, const std::string& key) const;

  std::string node_id_of(const toml::node& n, const std::string& key,
                         bool allow_star) const;

  std::string resolve(const std::string& p) const;

  const toml::table* entry_table(const toml::node& n, const std::string& key,
                                 const std::string& like) const;

  const toml::array* entries(const toml::table& root, const char* name) const;

  // --- tables (config_sections.cpp)
  void read_node(const toml::table* t, node_config& cfg);

  void read_signal(const toml::table* t, node_config& cfg);

  std::string read_token_file(const toml::node& n);

  void read_ice(const toml::table* t, node_config& cfg);

  // --- entries (config_entries.cpp)
  void read_exports(const toml::table& root, node_config& cfg);

  void read_listens(const toml::table& root, node_config& cfg);

  std::string file_;
  std::filesystem::path dir_;
};

} // namespace p2proxy::config_detail
