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

/// A Register listing `names` is on its way (or the link starts): every
/// one of them is pending until the server answers, except one the server
/// refused, which stays refused until it answers otherwise; names no
/// longer listed are dropped.
void registrations_pending(admin::SignalLinkStatus& status,
                           const std::vector<std::string>& names);

/// Applies the server's answer to the names still listed (an answer to an
/// older Register may name others) and logs each whose state changed: a
/// refusal as a warning naming the code and the owners.
void apply_register_result(admin::SignalLinkStatus& status,
                           const signal::RegisterResult& result);

/// The look-up answer a node acts on: `ids` (every online owner the server
/// named, this node included) without `self_id`, and `self_id` first when
/// this node exports `name` itself and the server did not refuse it. A node
/// serves its own export to its own clients through its LOCAL SESSION and
/// never opens a session to itself; a name the server refused it (another
/// node owns it) goes to the owners.
std::vector<std::string> lookup_answer(std::vector<std::string> ids,
                                       const std::string& self_id,
                                       const admin::SignalLinkStatus& status,
                                       const std::string& name);

/// Whether this node exports `name` and the server has not refused it.
bool serves_itself(const admin::SignalLinkStatus& status,
                   const std::string& name);

} // namespace p2proxy
