// The SIGNAL LINK's view of its export names as the signaling server
// answered them (proto/signal.proto RegisterResult), and the one rule for
// look-up answers on a node: never itself. Plain functions over the link's
// status document; the link calls them, the node's `status` shows the result
// (admin::SignalLinkStatus.registrations, merged into NodeStatus.exports).
#pragma once

#include <string>
#include <vector>

#include "proto/admin.pb.h"
#include "proto/signal.pb.h"

namespace p2proxy {

/// A Register listing `names` is on its way: every one of them is pending
/// until the server answers; names no longer listed are dropped.
void registrations_pending(admin::SignalLinkStatus& status,
                           const std::vector<std::string>& names);

/// Applies the server's answer to the names still listed (an answer to an
/// older Register may name others) and logs each whose state changed: a
/// refusal as a warning naming the code and the owners.
void apply_register_result(admin::SignalLinkStatus& status,
                           const signal::RegisterResult& result);

/// `ids` without `self_id`. A node serves its own exports itself and never
/// opens a session to itself, so a look-up that a CHANNEL acts on must not
/// offer it (the server answers every online owner, this node included).
std::vector<std::string> other_nodes(std::vector<std::string> ids,
                                     const std::string& self_id);

} // namespace p2proxy
