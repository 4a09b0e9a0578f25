// A fake ICE driver behind the ICE seam: agents find each other by ufrag,
// "connect" once both sides have credentials and a candidate, and carry
// datagrams as messages. Under the test_coordinator everything it posts is
// queued, so sessions built on it run deterministically on virtual time.
#pragma once

#include <map>
#include <memory>
#include <random>
#include <string>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/ice/ice_driver.hpp"

namespace p2proxy::test {

struct fake_ice_network;

class fake_agent : public ice_agent,
                   public std::enable_shared_from_this<fake_agent> {
public:
  fake_agent(fake_ice_network* net, caf::actor owner, uint64_t tag,
             std::string ufrag)
    : owner_(std::move(owner)), net_(net), tag_(tag), ufrag_(std::move(ufrag)) {
  }
  std::string local_ufrag() const override {
    return ufrag_;
  }
  std::string local_pwd() const override {
    return "pwd-" + ufrag_;
  }
  void gather() override;
  void set_remote_credentials(std::string ufrag, std::string) override {
    remote_ufrag_ = std::move(ufrag);
    maybe_connect();
  }
  void add_remote_candidate(std::string) override {
    has_remote_ = true;
    maybe_connect();
  }
  void remote_gathering_done() override {}
  void send(std::vector<std::string> datagrams) override;
  void close() override {
    closed_ = true;
  }
  bool closed() const {
    return closed_;
  }
  /// Its path is dead: what it sends and what is sent to it is lost;
  /// `report` also has it say "failed" to its owner.
  void cut(bool report) {
    cut_ = true;
    if (report && connected_ && !closed_)
      caf::anon_send(owner_, ice_state_atom::value, tag_,
                     std::string{"failed"});
  }
  caf::actor owner_;

private:
  void maybe_connect();
  fake_ice_network* net_;
  uint64_t tag_;
  std::string ufrag_;
  std::string remote_ufrag_;
  bool gathered_ = false;
  bool has_remote_ = false;
  bool connected_ = false;
  bool closed_ = false;
  bool cut_ = false;
  uint64_t index_ = 0; // its number in the network: its pair's port
  friend struct fake_ice_network;
  friend class fake_ice_driver;
};

struct fake_ice_network {
  std::map<std::string, std::weak_ptr<fake_agent>> agents;
  bool fail = false;      // every agent reaches "failed"
  bool hold = false;      // checks never finish (stays connecting)
  int loss_per_mille = 0; // datagrams dropped in the pipe
  /// One-way delay of every datagram. 0 delivers within the same run() at
  /// the same virtual instant, so QUIC sees a zero RTT and ngtcp2 takes no
  /// bandwidth samples (see quic_pipe::delay in quic_pipe.hpp): give tests
  /// that depend on congestion control (loss, pacing) a delay.
  caf::timespan delay{0};
  std::mt19937 rng{7};
  uint64_t next = 0;
  uint64_t datagrams = 0;

  std::shared_ptr<fake_agent> find(const std::string& ufrag) {
    auto i = agents.find(ufrag);
    return i == agents.end() ? nullptr : i->second.lock();
  }
  /// Cuts every agent there is now (new ones connect as usual).
  void cut(bool report) {
    for (auto& [u, w] : agents)
      if (auto a = w.lock(); a && !a->closed())
        a->cut(report);
  }
  size_t open_agents() {
    size_t n = 0;
    for (auto& [u, w] : agents)
      if (auto a = w.lock(); a && !a->closed())
        ++n;
    return n;
  }
};

inline void fake_agent::gather() {
  caf::anon_send(owner_, ice_cand_atom::value, tag_,
                 "candidate:1 1 UDP 2130706431 198.18.1.1 40000 typ host "
                   + ufrag_);
  caf::anon_send(owner_, ice_gathered_atom::value, tag_);
  gathered_ = true;
  maybe_connect();
}

inline void fake_agent::maybe_connect() {
  if (connected_ || closed_ || !gathered_ || remote_ufrag_.empty()
      || !has_remote_ || net_->hold)
    return;
  connected_ = true;
  if (net_->fail) {
    caf::anon_send(owner_, ice_state_atom::value, tag_, std::string{"failed"});
    return;
  }
  auto port = std::to_string(40000 + index_);
  caf::anon_send(owner_, ice_pair_atom::value, tag_, std::string{"host"},
                 "198.18.1.1:" + port, std::string{"host"},
                 "198.18.2.1:" + port);
  caf::anon_send(owner_, ice_state_atom::value, tag_, std::string{"ready"});
}

inline void fake_agent::send(std::vector<std::string> datagrams) {
  if (closed_ || !connected_ || net_->fail || cut_)
    return;
  auto peer = net_->find(remote_ufrag_);
  if (!peer || peer->closed_ || peer->cut_)
    return;
  if (net_->loss_per_mille > 0) {
    std::vector<std::string> kept;
    for (auto& d : datagrams)
      if (static_cast<int>(net_->rng() % 1000) >= net_->loss_per_mille)
        kept.push_back(std::move(d));
    datagrams = std::move(kept);
  }
  net_->datagrams += datagrams.size();
  if (net_->delay.count() > 0)
    caf::delayed_anon_send(peer->owner_, net_->delay, ice_data_atom::value,
                           peer->tag_, std::move(datagrams));
  else
    caf::anon_send(peer->owner_, ice_data_atom::value, peer->tag_,
                   std::move(datagrams));
}

class fake_ice_driver : public ice_driver {
public:
  explicit fake_ice_driver(std::shared_ptr<fake_ice_network> net,
                           std::string name)
    : net_(std::move(net)), name_(std::move(name)) {}
  std::shared_ptr<ice_agent> create_agent(bool, caf::actor owner,
                                          uint64_t tag) override {
    auto ufrag = name_ + std::to_string(++net_->next);
    auto a
      = std::make_shared<fake_agent>(net_.get(), std::move(owner), tag, ufrag);
    a->index_ = net_->next;
    net_->agents[ufrag] = a;
    return a;
  }
  void shutdown() override {}

private:
  std::shared_ptr<fake_ice_network> net_;
  std::string name_;
};

} // namespace p2proxy::test
