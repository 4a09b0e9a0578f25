// The ICE seam. A PEER SESSION talks to ICE only through these two
// interfaces: the real driver runs libnice agents on one GLib thread
// (actors/ice/nice_driver.*); actor tests use a fake that wires two sessions
// together in memory.
//
// Every method is thread-safe and non-blocking: send() hands datagrams to
// the socket at once (like a UDP send), the others post work to the
// driver's thread. Events come back as messages to the owner actor given at
// creation, each carrying the agent's tag (see actors/actors.hpp, ICE):
//   (ice_cand_atom, tag, std::string candidate)     a local candidate (trickle)
//   (ice_gathered_atom, tag)                        local gathering finished
//   (ice_state_atom, tag, std::string state)        "checking" | "connected" |
//                                                   "ready" | "failed" |
//                                                   "disconnected"
//   (ice_pair_atom, tag, std::string local_type, std::string local_addr,
//    std::string remote_type, std::string remote_addr)  the selected pair
//   (ice_data_atom, tag, std::vector<std::string> datagrams)  unless a
//                                                   datagram_sink is attached
// After close() returns, no further event is posted for that agent.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "actors/common/endpoint.hpp"
#include "actors/ice/interface_filter.hpp"

namespace p2proxy {

/// std::chrono::steady_clock (CLOCK_MONOTONIC) in nanoseconds: the clock of
/// ice_agent::wake_at() and of QUIC's times.
inline uint64_t steady_clock_ns() {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now().time_since_epoch())
      .count());
}

/// How long libnice 0.1.21's keepalive checks go unanswered before it
/// reports the selected pair "failed" (fixed in libnice). A session's silence
/// limit (session.idle_timeout) must stay below it, or ICE ends sessions
/// that QUIC would keep.
inline constexpr std::chrono::seconds ice_pair_silence_limit{50};

struct ice_turn_server {
  endpoint server;
  std::string user;
  std::string password;
};

class provided_servers; // actors/ice/provided_servers.hpp

struct ice_settings {
  std::vector<endpoint> stun;
  std::vector<ice_turn_server> turn;
  /// The selected pair's keepalives are STUN binding requests the peer
  /// answers (every 4-6 s; libnice fails the pair after 50 s without an
  /// answer, ice_pair_silence_limit), not unanswered indications.
  bool consent_checks = true;
  /// Host candidates only on these IP addresses when not empty. libnice never
  /// gathers on loopback by itself, so same-host tests pass {"127.0.0.1"}; a
  /// machine whose only interface is loopback falls back to it anyway.
  std::vector<std::string> local_addresses;
  /// Otherwise each agent gathers on the machine's addresses that match
  /// `interfaces` (all when empty) and no pattern of `exclude`
  /// (actors/ice/interface_filter.hpp), listed when it opens.
  std::vector<std::string> interfaces;
  std::vector<std::string> exclude = default_interface_excludes();
  /// Connectivity-check pacing, 0 = libnice's default (first retransmission
  /// after 500 ms, 3 retransmissions). Tests shorten it so that a dead pair
  /// fails fast.
  unsigned stun_initial_timeout_ms = 0;
  unsigned stun_max_retransmissions = 0;
  /// How long an agent whose checks have all failed still waits for late
  /// candidates before it reports "failed"; 0 = libnice's 5 s.
  unsigned idle_timeout_ms = 0;
  /// Port mappings through a UPnP IGD router. Off by default: libnice then
  /// holds back every end of gathering by 200 ms and multicasts per agent.
  bool upnp = false;
  /// Servers the signaling server hands out; used for each kind (STUN,
  /// TURN) that `stun` / `turn` above leave empty. May be null.
  std::shared_ptr<provided_servers> provided;
};

/// Takes an agent's datagrams on the driver's thread instead of as
/// ice_data_atom messages to the owner (ice_agent::attach).
class datagram_sink {
public:
  virtual ~datagram_sink() = default;
  /// One received datagram; `data` is valid during the call only.
  virtual void on_datagram(const uint8_t* data, size_t size) = 0;
  /// Every datagram that was ready has been passed on.
  virtual void on_datagrams_done() = 0;
  /// The time last given to ice_agent::wake_at() has come.
  virtual void on_wakeup() = 0;
};

class ice_agent {
public:
  virtual ~ice_agent() = default;
  /// This agent's ICE username fragment and password (known at creation).
  virtual std::string local_ufrag() const = 0;
  virtual std::string local_pwd() const = 0;
  /// Starts gathering local candidates (host, server-reflexive, relayed).
  virtual void gather() = 0;
  virtual void set_remote_credentials(std::string ufrag, std::string pwd) = 0;
  /// One remote candidate in SDP attribute form ("candidate:..." without
  /// "a="); malformed ones are ignored and logged.
  virtual void add_remote_candidate(std::string candidate) = 0;
  /// The peer has sent all its candidates.
  virtual void remote_gathering_done() = 0;
  /// Sends datagrams on the selected pair; dropped (like UDP) before one is
  /// selected.
  virtual void send(std::vector<std::string> datagrams) = 0;
  /// Ends the agent; no event is posted after this returns.
  virtual void close() = 0;
  /// From now on received datagrams go to `sink` on the driver's thread
  /// (call it before gather()). False: this driver cannot; datagrams keep
  /// coming as ice_data_atom. The agent holds `sink` until it is closed.
  virtual bool attach(const std::shared_ptr<datagram_sink>& /*sink*/) {
    return false;
  }
  /// Calls the attached sink's on_wakeup() on the driver's thread at
  /// `steady_ns` (std::chrono::steady_clock, nanoseconds; UINT64_MAX:
  /// never), replacing the time given before.
  virtual void wake_at(uint64_t steady_ns) {
    (void)steady_ns;
  }
  /// The IP address (text, no port) the selected pair's packets leave from:
  /// its local candidate's base (for a server- or peer-reflexive candidate
  /// the host address behind the NAT). Empty before a pair is selected, or
  /// when this driver cannot tell. Any thread.
  virtual std::string selected_base() const {
    return {};
  }
};

class ice_driver {
public:
  virtual ~ice_driver() = default;
  virtual std::shared_ptr<ice_agent>
  create_agent(bool controlling, caf::actor owner, uint64_t tag) = 0;
  /// Like create_agent(), without TURN: its pairs are direct or none (the
  /// session's probe for a direct path while it runs relayed). A driver
  /// without TURN gives a plain agent.
  virtual std::shared_ptr<ice_agent>
  create_direct_agent(bool controlling, caf::actor owner, uint64_t tag) {
    return create_agent(controlling, std::move(owner), tag);
  }
  /// Ends every agent and the driver's thread. Call after the actors that
  /// own agents are gone.
  virtual void shutdown() = 0;
};

} // namespace p2proxy
