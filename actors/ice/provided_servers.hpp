// STUN and TURN servers the signaling server hands out at login (and again
// when it refreshes TURN credentials). The SIGNAL LINK's callback stores
// them here (node/wiring.cpp); the ICE driver reads them whenever it opens an
// agent, for each kind a node's own [ice] settings leave empty. Agents keep
// the servers they opened with.
#pragma once

#include <mutex>
#include <vector>

#include "actors/ice/ice_driver.hpp"

namespace p2proxy {

class provided_servers {
public:
  struct snapshot {
    std::vector<endpoint> stun;
    std::vector<ice_turn_server> turn;
  };

  void set(snapshot s) {
    std::lock_guard<std::mutex> guard{mtx_};
    current_ = std::move(s);
  }

  snapshot get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return current_;
  }

private:
  mutable std::mutex mtx_;
  snapshot current_;
};

/// The servers an agent opens with: the node's own, kind by kind, else the
/// ones the signaling server provided.
inline provided_servers::snapshot effective_servers(const ice_settings& s) {
  provided_servers::snapshot out{s.stun, s.turn};
  if (s.provided) {
    auto p = s.provided->get();
    if (out.stun.empty())
      out.stun = std::move(p.stun);
    if (out.turn.empty())
      out.turn = std::move(p.turn);
  }
  return out;
}

} // namespace p2proxy
