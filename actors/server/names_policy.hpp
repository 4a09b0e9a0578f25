// Who may export a name on the signaling server: the operator's policy file
// (`p2proxy signal --names FILE`) and where the server keeps the owners it
// learned (`--state-dir DIR`). The DIRECTORY applies both; docs/security.md
// ("Who owns a name") says what that means for each party.
//
// The policy file is TOML:
//
//   [names]
//   web = ["<node id>", "<node id>"]   # these nodes, and only these
//   "cam.1" = ["<node id>"]            # moves cam.1 to this node
//
// A name the policy lists may be exported by the listed nodes alone. Any
// other name belongs to the first node that registers it.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace p2proxy {

/// Where the DIRECTORY finds its policy and keeps its owners. Both empty:
/// owners are kept in memory only and no policy applies.
struct names_options {
  std::string state_dir;   // holds owners.toml (owners); empty: memory only
  std::string policy_file; // the operator's policy; empty: none
};

struct names_policy {
  /// Name -> node ids allowed to export it (sorted, unique, non-empty).
  std::map<std::string, std::vector<std::string>> allowed;

  /// The ids allowed to export `name`, or nullptr when the policy is silent.
  const std::vector<std::string>* find(const std::string& name) const;

  /// Reads and checks a policy file. Throws std::runtime_error whose text
  /// starts with "FILE:LINE: " for a file that cannot be used as a whole.
  static names_policy load(const std::string& path);
};

} // namespace p2proxy
