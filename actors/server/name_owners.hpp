// NAME OWNERS: the export name -> node id bindings the signaling server
// learned (the first node to register a name owns it), kept in
// STATE_DIR/owners.toml so a restart keeps them. Not an actor: the DIRECTORY
// owns one and is the only one to use it.
//
// Writes are atomic: a temporary file in the same directory, fsync, rename
// over owners.toml, fsync of the directory. A crash leaves the old file or
// the new one, never a mix.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace p2proxy {

class name_owners {
public:
  /// `state_dir` empty: owners live in memory only.
  explicit name_owners(std::string state_dir = {});

  /// Creates the state directory (mode 0700) if needed and reads
  /// owners.toml if there is one. Throws std::runtime_error ("FILE:LINE: ..."
  /// for a file that does not parse) so a server never starts with owners
  /// it could not read, which would hand every name to the first comer.
  void load();

  /// The owner of `name`, if any.
  std::optional<std::string> owner(const std::string& name) const;

  /// Makes `id` the owner of `name`, in memory; save() writes it.
  void set(const std::string& name, const std::string& id);

  /// Writes every binding to the file (one write for a whole Register, not
  /// one per name). Throws std::runtime_error when it cannot; the bindings
  /// then hold in memory only, until a later save succeeds.
  void save() const;

  size_t size() const {
    return owners_.size();
  }
  /// STATE_DIR/owners.toml, or empty in memory-only mode.
  std::string file() const;

private:
  std::string dir_;
  std::map<std::string, std::string> owners_;
};

} // namespace p2proxy
