// The PEER MANAGER's cache of resolved names: which nodes the signaling
// server last said export a name, kept for a while (bounded in entries and
// age) so that a new client of a resource whose node has a live session
// connects while the server is unreachable. An entry is only a hint: the
// manager uses a cached owner only when it has a live session to that node
// id, whose identity the session's QUIC handshake proved.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace p2proxy {

class name_cache {
public:
  using clock = std::chrono::steady_clock;

  name_cache(size_t capacity, std::chrono::milliseconds ttl)
    : capacity_(capacity), ttl_(ttl) {}

  /// What the server answered for `name` now; an empty answer forgets it.
  /// When full, the oldest entry makes room.
  void put(const std::string& name, std::vector<std::string> owners,
           clock::time_point now);
  /// The owners of `name` unless unknown or expired (then empty; an expired
  /// entry is dropped).
  std::vector<std::string> get(const std::string& name, clock::time_point now);
  void erase(const std::string& name);
  /// Every name held (for re-validation); expired ones are dropped first.
  std::vector<std::string> names(clock::time_point now);
  size_t size() const {
    return entries_.size();
  }

private:
  struct entry {
    std::vector<std::string> owners;
    clock::time_point stored;
  };
  void expire(clock::time_point now);

  size_t capacity_;
  std::chrono::milliseconds ttl_;
  std::map<std::string, entry> entries_;
};

} // namespace p2proxy
