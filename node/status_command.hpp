// `p2proxy status`: the client side of the admin port. It asks a running
// node (or signaling server) for GET /v1/status and prints the document for
// a person or as raw JSON. The ADMIN SERVER (actors/admin) is the other end.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace p2proxy {

/// Fetches /v1/status from `admin` (HOST:PORT) and prints it for a person,
/// or the raw JSON with `json`. With `token_file` (mode 0600, like the
/// node's [admin] token_file) it sends `Authorization: Bearer TOKEN`.
/// Returns the exit code: 0 printed, 1 the port answered but not with a
/// status document (401 included), 2 the port could not be reached (or
/// `admin` is not HOST:PORT, or the token file cannot be used).
int run_status_command(const std::string& admin, bool json,
                       const std::string& token_file = {});

/// The summary `p2proxy status` prints for the JSON of an admin::NodeStatus
/// (or, when it has no node id, an admin::ServerStatus). nullopt with `why`
/// set when `json` is not such a document.
std::optional<std::string> describe_status(std::string_view json,
                                           std::string& why);

} // namespace p2proxy
