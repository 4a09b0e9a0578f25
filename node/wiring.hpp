// node.toml's typed structs (node/config.hpp) turned into the settings the
// actors take: the one place that knows both.
#pragma once

#include "actors/ice/provided_servers.hpp"
#include "actors/node/node_settings.hpp"
#include "node/config.hpp"

namespace p2proxy {

/// The NODE SUPERVISOR's settings for a loaded, validated configuration.
node_settings make_node_settings(const node_config& cfg);

/// The servers of a login's IceServers; ":PORT" entries name
/// `server_host`, the signaling server's host as the node reaches it.
/// Malformed entries are skipped with a warning.
provided_servers::snapshot servers_from_login(const signal::IceServers& servers,
                                              const std::string& server_host);

} // namespace p2proxy
