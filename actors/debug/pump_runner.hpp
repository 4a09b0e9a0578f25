// PUMP RUNNER: one debug transfer for the admin port (`GET
// /v1/debug/pump/NODE-ID`): opens or reuses the session to the peer through
// the PEER MANAGER, runs K STREAM PUMPs to a test resource, and answers one
// JSON document with the totals, the SHA-256s and the session's row. It ends
// itself when it has answered.
#pragma once

#include <caf/actor.hpp>
#include <caf/stateful_actor.hpp>

namespace p2proxy {

struct pump_runner_state;
caf::behavior pump_runner(caf::stateful_actor<pump_runner_state>* self,
                          const caf::actor& manager);

struct pump_runner_state {
  static inline const char* name = "pump_runner";
};

} // namespace p2proxy
