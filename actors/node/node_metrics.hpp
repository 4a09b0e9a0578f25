// The NODE SUPERVISOR's Prometheus text (GET /metrics), built from the
// same admin::NodeStatus the JSON status shows.
#pragma once

#include <string>

#include "actors/node/node_supervisor.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

std::string metrics_text(node_supervisor_actor* self,
                         const admin::NodeStatus& ns);

} // namespace p2proxy
