// `p2proxy status`: the client side of the admin port. It asks a running
// node (or signaling server) for GET /v1/status and prints the document for
// a person or as raw JSON. The ADMIN SERVER (actors/admin) is the other end.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace p2proxy {

/// Fetches /v1/status from `admin` (HOST:PORT) and prints it for a person,
/// or the raw JSON with `json`. Returns the exit code: 0 printed, 1 the port
/// answered but not with a status document, 2 the port could not be reached
/// (or `admin` is not HOST:PORT).
int run_status_command(const std::string& admin, bool json);

/// The summary `p2proxy status` prints for the JSON of an admin::NodeStatus
/// (or, when it has no node id, an admin::ServerStatus). nullopt with `why`
/// set when `json` is not such a document.
std::optional<std::string> describe_status(std::string_view json,
                                           std::string& why);

} // namespace p2proxy
