// What every long-running p2proxy command shares: the actor system's
// settings, stop signals, and starting and ending top-level actors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/error.hpp>

#include "actors/identity/identity.hpp"

namespace p2proxy {

/// CAF's settings for a p2proxy process: the middleman loaded, CAF's own
/// logger quiet, the sharing scheduler.
struct system_config : caf::actor_system_config {
  system_config();
};

/// Blocks SIGINT/SIGTERM in every thread (call before any thread starts) so
/// wait_for_stop can take them with sigtimedwait.
void block_stop_signals();

/// Waits until a stop signal arrives or one of `watched` ends. Returns the
/// error a watched actor ended with (none for a signal or a clean end).
caf::error wait_for_stop(caf::actor_system& sys,
                         const std::vector<caf::actor>& watched,
                         bool& by_signal);

/// Sends (stop_atom) to each actor and waits up to 10 s for all to end.
void stop_all(caf::actor_system& sys, const std::vector<caf::actor>& actors,
              const std::string& reason);

/// The node key in `key_file`, created (and logged) when there is none.
std::shared_ptr<const identity> node_identity(const std::string& key_file);

} // namespace p2proxy
