#include "actors/peer/peer_manager.hpp"

#include <random>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/actors.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "peer_manager";

caf::actor spawn_session(peer_manager_actor* self, const std::string& peer,
                         uint64_t session_id, bool controlling,
                         const std::string& ufrag = {},
                         const std::string& pwd = {}) {
  auto& st = self->state;
  session_args args;
  args.session_id = session_id;
  args.peer = peer;
  args.controlling = controlling;
  args.me = st.cfg.me;
  args.ice = st.cfg.ice;
  args.link = st.cfg.link;
  args.manager = caf::actor{self};
  args.handler = st.cfg.handler;
  args.settings = st.cfg.settings;
  args.remote_ufrag = ufrag;
  args.remote_pwd = pwd;
  auto s = self->spawn(peer_session, std::move(args));
  self->monitor(s);
  st.by_addr[s.address()] = peer;
  auto& e = st.peers[peer];
  e.session = s;
  e.session_id = session_id;
  e.controlling = controlling;
  e.ready = false;
  e.stopped_for = caf::error{};
  return s;
}

/// The class of a failed open, for the metrics (open_failures): what to
/// look at first. The labels are part of the status and metrics.
const char* open_failure_label(const caf::error& why) {
  for (auto code : {ec::ice_failed, ec::identity_mismatch, ec::timeout,
                    ec::peer_offline, ec::handshake_failed})
    if (is_error(why, code))
      return to_string(code);
  return "other";
}

void fail_waiting(peer_manager_state::entry& e, const caf::error& why) {
  for (auto& rp : e.waiting)
    rp.deliver(why);
  e.waiting.clear();
}

void on_offer(peer_manager_actor* self, const signal::Signal& sig) {
  auto& st = self->state;
  auto& peer = sig.from();
  auto i = st.peers.find(peer);
  if (i != st.peers.end()) {
    auto& e = i->second;
    if (e.session_id == sig.session_id())
      return; // a duplicate of the offer that made this session
    if (e.controlling && !e.ready) {
      // Glare: both sides opened at once.
      ++st.glare_resolved;
      if (st.cfg.me->node_id() > peer) {
        log::debug(subject, "keeps its session to {} (glare, higher id)", peer);
        return; // the peer drops its own session when it sees our offer
      }
      log::debug(subject, "adopts {}'s session (glare, lower id)", peer);
      auto waiting = std::move(e.waiting);
      st.by_addr.erase(e.session.address());
      self->demonitor(e.session);
      self->send(e.session, stop_atom::value,
                 std::string{"glare: the peer's session wins"});
      spawn_session(self, peer, sig.session_id(), false, sig.offer().ufrag(),
                    sig.offer().pwd());
      st.peers[peer].waiting = std::move(waiting);
      return;
    }
    // The peer started over (e.g. it restarted): the old session is stale.
    log::info(subject, "replaces its session to {}: the peer opened a new one",
              peer);
    auto waiting = std::move(e.waiting);
    st.by_addr.erase(e.session.address());
    self->demonitor(e.session);
    self->send(e.session, stop_atom::value,
               std::string{"replaced by a new session from the peer"});
    spawn_session(self, peer, sig.session_id(), false, sig.offer().ufrag(),
                  sig.offer().pwd());
    st.peers[peer].waiting = std::move(waiting);
    return;
  }
  ++st.accepted;
  spawn_session(self, peer, sig.session_id(), false, sig.offer().ufrag(),
                sig.offer().pwd());
}

/// The cached owners of `name` that have a live, ready session (their id
/// is the one the session's handshake proved).
std::vector<std::string> live_owners(peer_manager_actor* self,
                                     const std::string& name) {
  auto& st = self->state;
  std::vector<std::string> live;
  for (auto& id : st.names.get(name, self->clock().now())) {
    auto i = st.peers.find(id);
    if (i != st.peers.end() && i->second.ready)
      live.push_back(id);
  }
  return live;
}

/// What the look-up answered: cached and passed on. An empty answer while
/// a cached owner has a live session (the server restarted and that node
/// has not registered again yet) keeps the entry and answers that owner.
std::vector<std::string> resolved(peer_manager_actor* self,
                                  const std::string& name,
                                  std::vector<std::string> ids) {
  auto& st = self->state;
  if (ids.empty()) {
    auto live = live_owners(self, name);
    if (!live.empty()) {
      ++st.resolved_from_cache;
      log::info(subject,
                "resolves '{}' from its cache to {} (live session; the "
                "server knows no owner yet)",
                name, live.front());
      return live;
    }
  }
  st.names.put(name, ids, self->clock().now());
  return ids;
}

/// The look-up failed (the signaling server is unreachable): the cached
/// owners of `name` with a live, ready session, or the look-up's error.
caf::expected<std::vector<std::string>>
resolve_offline(peer_manager_actor* self, const std::string& name,
                const caf::error& err) {
  auto& st = self->state;
  auto live = live_owners(self, name);
  if (!live.empty()) {
    ++st.resolved_from_cache;
    log::info(subject,
              "resolves '{}' from its cache to {} (live session; the "
              "look-up failed: {})",
              name, live.front(), error_text(err));
    return live;
  }
  auto code = ec::unspecified;
  for (auto c : {ec::not_online, ec::link_down, ec::timeout})
    if (is_error(err, c))
      code = c;
  return make_error(code, fmt::format("{}; no live session to a node known "
                                      "to export '{}'",
                                      error_text(err), name));
}

/// Logged in again: look every cached name up anew.
void revalidate(peer_manager_actor* self) {
  auto& st = self->state;
  auto names = st.names.names(self->clock().now());
  if (names.empty())
    return;
  log::info(subject, "re-validates {} cached look-up{}", names.size(),
            names.size() == 1 ? "" : "s");
  for (auto& name : names)
    self
      ->request(st.cfg.link, std::chrono::seconds(10), lookup_atom::value, name)
      .then(
        [=](std::vector<std::string>& ids) {
          ++self->state.revalidations;
          resolved(self, name, std::move(ids));
        },
        [](caf::error&) {}); // kept: the next login or look-up decides
}

} // namespace

caf::behavior peer_manager(peer_manager_actor* self, peer_manager_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.next_session = st.cfg.seed ? st.cfg.seed : std::random_device{}();
  st.names = name_cache{st.cfg.name_cache_size, st.cfg.name_cache_ttl};
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    auto a = st.by_addr.find(dm.source);
    if (a == st.by_addr.end())
      return; // a session we already replaced
    auto peer = a->second;
    st.by_addr.erase(a);
    auto i = st.peers.find(peer);
    if (i != st.peers.end() && i->second.session.address() == dm.source) {
      auto why = st.last_reason.count(peer)
                   ? st.last_reason[peer]
                   : make_error(ec::session_lost, "session ended");
      fail_waiting(i->second, why);
      st.peers.erase(i);
    }
    if (st.stopping && st.by_addr.empty())
      self->quit();
  });
  return {
    [=](open_atom, const std::string& peer) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (peer == st.cfg.me->node_id()) {
        rp.deliver(make_error(
          ec::unspecified, "refusing to open a session to this node itself"));
        return rp;
      }
      auto i = st.peers.find(peer);
      if (i != st.peers.end() && i->second.ready) {
        rp.deliver(i->second.session);
        return rp;
      }
      if (i == st.peers.end()) {
        ++st.opened;
        spawn_session(self, peer, ++st.next_session, true);
        i = st.peers.find(peer);
      }
      i->second.waiting.push_back(rp);
      return rp;
    },
    [=](resolve_atom, const std::string& name) {
      auto rp = self->make_response_promise();
      self
        ->request(self->state.cfg.link, std::chrono::seconds(10),
                  lookup_atom::value, name)
        .then(
          [=](std::vector<std::string>& ids) mutable {
            rp.deliver(resolved(self, name, std::move(ids)));
          },
          [=](caf::error& err) mutable {
            auto r = resolve_offline(self, name, err);
            if (r)
              rp.deliver(std::move(*r));
            else
              rp.deliver(r.error());
          });
      return rp;
    },
    [=](online_atom) {
      revalidate(self);
      // A restart a session sent while the link was down was lost.
      for (auto& [peer, e] : self->state.peers)
        self->send(e.session, online_atom::value);
    },
    [=](net_change_atom, const std::vector<std::string>& added,
        const std::vector<std::string>& removed) {
      auto& st = self->state;
      ++st.network_changes;
      for (auto& [peer, e] : st.peers)
        self->send(e.session, net_change_atom::value, added, removed);
    },
    [=](ready_atom, uint64_t session_id) {
      auto& st = self->state;
      auto a = st.by_addr.find(
        caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (a == st.by_addr.end())
        return;
      auto& e = st.peers[a->second];
      if (e.session_id != session_id)
        return;
      e.ready = true;
      for (auto& rp : e.waiting)
        rp.deliver(e.session);
      e.waiting.clear();
    },
    [=](failed_atom, uint64_t, const caf::error& reason,
        const std::string& final_row) {
      auto& st = self->state;
      admin::SessionStatus row;
      if (row.ParseFromString(final_row)) {
        for (auto& change : row.path_history())
          ++st.path_changes_closed[change.reason()];
        st.recently_closed.push_back(std::move(row));
        while (st.recently_closed.size() > 16)
          st.recently_closed.pop_front();
      }
      auto a = st.by_addr.find(
        caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (a == st.by_addr.end())
        return;
      auto i = st.peers.find(a->second);
      // A session this manager stopped (its reason comes back as text only,
      // ec::unspecified) ended for the manager's reason.
      auto why = i != st.peers.end() && i->second.stopped_for
                     && is_error(reason, ec::unspecified)
                   ? i->second.stopped_for
                   : reason;
      st.last_reason[a->second] = why;
      if (i != st.peers.end() && !i->second.ready && !st.stopping)
        ++st.open_failures[open_failure_label(why)];
      // An ending session is never handed out again: an open from now on
      // (e.g. an owner whose held open failed as the session closed) starts
      // a new one. The down_msg that follows finds nothing left to do.
      if (i != st.peers.end()
          && i->second.session.address()
               == caf::actor_cast<caf::actor_addr>(self->current_sender())) {
        fail_waiting(i->second, why);
        st.peers.erase(i);
      }
    },
    [=](signal_atom, const std::string& serialized) {
      auto& st = self->state;
      signal::Signal sig;
      if (!sig.ParseFromString(serialized) || sig.from().empty())
        return;
      if (sig.has_offer()) {
        on_offer(self, sig);
        return;
      }
      auto i = st.peers.find(sig.from());
      if (i == st.peers.end() || i->second.session_id != sig.session_id()) {
        log::debug(subject, "drops a signal for unknown session {} of {}",
                   sig.session_id(), sig.from());
        return;
      }
      self->send(i->second.session, signal_atom::value, serialized);
    },
    [=](peer_off_atom, const std::string& peer, uint64_t session_id,
        const std::string& text) {
      auto& st = self->state;
      auto i = st.peers.find(peer);
      if (i == st.peers.end() || i->second.session_id != session_id
          || i->second.ready)
        return;
      auto why = make_error(ec::peer_offline,
                            "peer offline: node " + peer
                              + " is not logged in to the signaling server");
      st.last_reason[peer] = why;
      i->second.stopped_for = why;
      fail_waiting(i->second, why);
      self->send(i->second.session, stop_atom::value, error_text(why));
    },
    [=](get_atom) {
      // Collect each session's row.
      auto& st = self->state;
      auto rp = self->make_response_promise<std::string>();
      auto list = std::make_shared<admin::SessionList>();
      for (auto& [k, v] : st.open_failures)
        (*list->mutable_open_failures())[k] = v;
      list->set_opened(st.opened);
      list->set_accepted(st.accepted);
      list->set_glare_resolved(st.glare_resolved);
      list->set_network_changes(st.network_changes);
      for (auto& [k, v] : st.path_changes_closed)
        (*list->mutable_path_changes_closed())[k] = v;
      for (auto& row : st.recently_closed)
        *list->add_recently_closed() = row;
      auto pending = std::make_shared<size_t>(st.peers.size());
      if (*pending == 0) {
        rp.deliver(list->SerializeAsString());
        return rp;
      }
      for (auto& [peer, e] : st.peers) {
        self->request(e.session, std::chrono::seconds(2), get_atom::value)
          .then(
            [=](const std::string& row) mutable {
              list->add_sessions()->ParseFromString(row);
              if (--*pending == 0)
                rp.deliver(list->SerializeAsString());
            },
            [=](caf::error&) mutable {
              if (--*pending == 0)
                rp.deliver(list->SerializeAsString());
            });
      }
      return rp;
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus as;
      as.set_name(peer_manager_state::name);
      as.set_state(st.stopping ? "stopping" : "running");
      auto& f = *as.mutable_fields();
      f["sessions"] = std::to_string(st.peers.size());
      f["opened"] = std::to_string(st.opened);
      f["accepted"] = std::to_string(st.accepted);
      f["glare_resolved"] = std::to_string(st.glare_resolved);
      f["name_cache"] = std::to_string(st.names.size());
      f["resolved_from_cache"] = std::to_string(st.resolved_from_cache);
      f["revalidations"] = std::to_string(st.revalidations);
      f["network_changes"] = std::to_string(st.network_changes);
      return as.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      auto& st = self->state;
      st.stopping = true;
      for (auto& [peer, e] : st.peers) {
        fail_waiting(e,
                     make_error(ec::unspecified, "the node is shutting down"));
        self->send(e.session, stop_atom::value, reason);
      }
      if (st.by_addr.empty())
        self->quit();
    },
  };
}

} // namespace p2proxy
