// node.toml's typed structs (node/config.hpp) turned into the settings the
// actors take: the one place that knows both.
#pragma once

#include "actors/node/node_settings.hpp"
#include "node/config.hpp"

namespace p2proxy {

/// The NODE SUPERVISOR's settings for a loaded, validated configuration.
node_settings make_node_settings(const node_config& cfg);

} // namespace p2proxy
