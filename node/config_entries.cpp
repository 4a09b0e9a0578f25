#include "node/config_reader.hpp"

#include <map>

#include <fmt/format.h>

namespace p2proxy::config_detail {

void reader::read_exports(const toml::table& root, node_config& cfg) {
  auto arr = entries(root, "export");
  if (arr == nullptr)
    return;
  std::map<std::string, int> first_line;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto key = fmt::format("export[{}]", i + 1);
    auto e = entry_table((*arr)[i], key, "an [[export]] table");
    check_keys(
      *e, key,
      {"name", "target", "protocol", "allow", "udp_idle", "rtsp_transport"});
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
      x.protocol = protocol_of(*n, dotted(key, "protocol"),
                               {"rtsp", "http", "tcp", "udp"});
    if (auto n = e->get("udp_idle"))
      x.udp_idle = duration_of(*n, dotted(key, "udp_idle"), false);
    if (auto n = e->get("rtsp_transport"))
      x.rtsp_transport
        = protocol_of(*n, dotted(key, "rtsp_transport"), {"tcp", "udp"});
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

void reader::read_listens(const toml::table& root, node_config& cfg) {
  auto arr = entries(root, "listen");
  if (arr == nullptr)
    return;
  std::map<std::string, int> first_line;
  for (size_t i = 0; i < arr->size(); ++i) {
    auto key = fmt::format("listen[{}]", i + 1);
    auto e = entry_table((*arr)[i], key, "a [[listen]] table");
    check_keys(
      *e, key,
      {"bind", "protocol", "resource", "peer", "udp_idle", "max_flows"});
    listen_config x;
    auto bind = e->get("bind");
    if (bind == nullptr)
      missing(e, dotted(key, "bind"), "add bind = \"127.0.0.1:8554\"");
    x.bind = endpoint_of(*bind, dotted(key, "bind"), true);
    // Port 0 picks a fresh port each time, so those never collide.
    if (x.bind.port != 0) {
      auto [it, fresh] = first_line.emplace(x.bind.to_string(), line_of(*bind));
      if (!fresh)
        fail(line_of(*bind), dotted(key, "bind"),
             fmt::format("duplicate bind address \"{}\" (first at line {})",
                         x.bind.to_string(), it->second));
    }
    if (auto n = e->get("protocol"))
      x.protocol = protocol_of(*n, dotted(key, "protocol"),
                               {"rtsp", "http", "socks5", "tcp", "udp"});
    if (auto n = e->get("resource"))
      x.resource = resource_of(*n, dotted(key, "resource"));
    else if (x.protocol == "tcp" || x.protocol == "udp")
      missing(e, dotted(key, "resource"),
              fmt::format("a {} listener carries no resource name of its "
                          "own; add resource = \"NAME\" (an export name)",
                          x.protocol));
    if (auto n = e->get("udp_idle"))
      x.udp_idle = duration_of(*n, dotted(key, "udp_idle"), false);
    if (auto n = e->get("max_flows")) {
      auto v = n->is_integer() ? n->as_integer()->get() : int64_t{-1};
      if (v < 1 || v > 65536)
        fail(line_of(*n), dotted(key, "max_flows"),
             "must be a whole number from 1 to 65536 (flows at once)");
      x.max_flows = static_cast<uint64_t>(v);
    }
    if (auto n = e->get("peer"))
      x.peer = node_id_of(*n, dotted(key, "peer"), false);
    cfg.listens.push_back(std::move(x));
  }
}

} // namespace p2proxy::config_detail
