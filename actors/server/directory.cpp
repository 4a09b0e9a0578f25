#include "actors/server/directory.hpp"

#include <algorithm>
#include <optional>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr std::string_view subject = "directory";

std::string join(const std::vector<std::string>& ids) {
  std::string out;
  for (auto& id : ids)
    out += (out.empty() ? "" : ", ") + id;
  return out;
}

/// Whether `id` may export `name`; if not, `owners` says who may.
bool may_export(const directory_state& st, const std::string& id,
                const std::string& name, std::vector<std::string>& owners) {
  if (auto listed = st.policy.find(name)) {
    if (std::binary_search(listed->begin(), listed->end(), id))
      return true;
    owners = *listed;
    return false;
  }
  auto owner = st.owners.owner(name);
  if (!owner || *owner == id)
    return true;
  owners = {*owner};
  return false;
}

/// Records `id` as the owner of `name` when nobody (allowed) owns it yet: a
/// name the policy moved to `id` stays with it once the policy forgets it.
/// True when the owners changed.
bool claim(directory_state& st, const std::string& id,
           const std::string& name) {
  auto owner = st.owners.owner(name);
  if (owner == id)
    return false;
  auto listed = st.policy.find(name);
  if (owner && listed == nullptr)
    return false; // may_export let it through only for the owner
  if (owner && std::binary_search(listed->begin(), listed->end(), *owner))
    return false; // several may export it; the first keeps it
  st.owners.set(name, id);
  log::info(subject, "node {} now owns '{}'", id, name);
  return true;
}

// The policy as the CLUSTER carries it: name, "id,id,...", name, ...
std::vector<std::string> flatten(const names_policy& policy) {
  std::vector<std::string> flat;
  for (auto& [name, ids] : policy.allowed) {
    flat.push_back(name);
    std::string joined;
    for (auto& id : ids)
      joined += (joined.empty() ? "" : ",") + id;
    flat.push_back(std::move(joined));
  }
  return flat;
}

names_policy unflatten(const std::vector<std::string>& flat) {
  names_policy policy;
  for (size_t i = 0; i + 1 < flat.size(); i += 2) {
    std::vector<std::string> ids;
    std::string rest = flat[i + 1];
    while (!rest.empty()) {
      auto comma = rest.find(',');
      ids.push_back(rest.substr(0, comma));
      rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    policy.allowed[flat[i]] = std::move(ids);
  }
  return policy;
}

void push_result(directory_actor* self, const std::string& id) {
  auto& st = self->state;
  auto& e = st.nodes.at(id);
  signal::Envelope env;
  *env.mutable_register_result() = st.decide_all(id);
  self->send(e.client, deliver_atom::value, env.SerializeAsString());
  if (!st.cluster)
    return;
  // A name the policy lists was not claimed in Redis beforehand: if the
  // decision gave it to `id`, Redis learns it now.
  for (auto& name : e.exports)
    if (st.policy.find(name) != nullptr && st.owners.owner(name) == id)
      self->send(st.cluster, claim_atom::value, name, id);
  self->send(st.cluster, exports_atom::value, id, e.exports);
}

// In a cluster: the owners of the names come from Redis first (claiming
// the unowned ones there, atomically across servers), then the decision is
// the same as alone. Without an answer it decides from the owners last seen.
void register_clustered(directory_actor* self, const std::string& id) {
  auto& st = self->state;
  auto& e = st.nodes.at(id);
  auto gen = ++e.register_gen;
  std::vector<std::string> claim;
  std::vector<std::string> read;
  for (auto& name : e.requested)
    (st.policy.find(name) != nullptr ? read : claim).push_back(name);
  auto finish = [=] {
    auto& st = self->state;
    auto i = st.nodes.find(id);
    if (i == st.nodes.end() || i->second.register_gen != gen)
      return; // gone, or a newer Register is on its way
    push_result(self, id);
    log::info(subject, "node {} exports {} of {} name(s)", id,
              i->second.exports.size(), i->second.requested.size());
  };
  self
    ->request(st.cluster, std::chrono::seconds(5), owners_atom::value, id,
              claim, read)
    .then(
      [=](const std::vector<std::string>& owners) {
        auto& st = self->state;
        for (size_t i = 0; i < owners.size(); ++i) {
          auto& name = i < claim.size() ? claim[i] : read[i - claim.size()];
          if (!owners[i].empty())
            st.owners.set(name, owners[i]);
        }
        finish();
      },
      [=](caf::error& err) {
        log::warn(subject,
                  "decides node {}'s names from the owners it last saw: {}", id,
                  error_text(err));
        finish();
      });
}

} // namespace

void directory_state::erase(const std::string& id) {
  auto i = nodes.find(id);
  if (i == nodes.end())
    return;
  for (auto& name : i->second.exports) {
    auto j = by_name.find(name);
    if (j == by_name.end())
      continue;
    j->second.erase(id);
    if (j->second.empty())
      by_name.erase(j);
  }
  nodes.erase(i);
}

void directory_state::set_exports(const std::string& id,
                                  std::vector<std::string> names) {
  auto& e = nodes.at(id);
  for (auto& name : e.exports) {
    auto j = by_name.find(name);
    if (j != by_name.end() && (j->second.erase(id), j->second.empty()))
      by_name.erase(j);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (auto& name : names)
    by_name[name].insert(id);
  e.exports = std::move(names);
}

signal::RegisterResult directory_state::decide_all(const std::string& id) {
  auto& e = nodes.at(id);
  signal::RegisterResult result;
  std::vector<std::string> accepted;
  std::set<std::string> refused;
  bool claimed = false;
  for (auto& name : e.requested) {
    auto r = result.add_names();
    r->set_name(name);
    std::vector<std::string> owners;
    if (may_export(*this, id, name, owners)) {
      claimed |= claim(*this, id, name);
      accepted.push_back(name);
      continue;
    }
    r->set_code(signal::NAME_TAKEN);
    for (auto& o : owners)
      r->add_owners(o);
    // Logged when it is news: a node repeating its Register cannot flood
    // the log.
    if (e.refused.count(name) == 0)
      log::warn(subject, "node {} may not export '{}': it belongs to {}", id,
                name, join(owners));
    refused.insert(name);
    r->set_text(fmt::format("'{}' belongs to {}", name, join(owners)));
  }
  if (claimed) {
    try {
      owners.save();
    } catch (const std::exception& err) {
      log::error(subject, "keeps the owners of {}'s names in memory only: {}",
                 id, err.what());
    }
  }
  e.refused = std::move(refused);
  set_exports(id, std::move(accepted));
  return result;
}

namespace {

caf::behavior directory_impl(directory_actor* self, names_options opts,
                             std::optional<cluster_options> copts,
                             std::shared_ptr<cluster_metrics> cmetrics) {
  auto& st = self->state;
  st.opts = std::move(opts);
  if (copts)
    st.opts.state_dir.clear(); // the owners live in Redis
  st.owners = name_owners{st.opts.state_dir};
  try {
    st.owners.load();
    if (!st.opts.policy_file.empty())
      st.policy = names_policy::load(st.opts.policy_file);
  } catch (const std::exception& e) {
    log::error(subject, "cannot start: {}", e.what());
    self->quit(make_error(ec::bad_config, e.what()));
    return {};
  }
  log::info(subject, "{} name owner(s) from {}; policy: {}", st.owners.size(),
            copts                       ? "Redis"
            : st.opts.state_dir.empty() ? "memory only (no --state-dir)"
                                        : st.owners.file(),
            st.opts.policy_file.empty()
              ? std::string{"none"}
              : fmt::format("{} name(s) from {}", st.policy.allowed.size(),
                            st.opts.policy_file));
  if (copts) {
    st.cluster_stats = std::move(cmetrics);
    st.cluster
      = self->spawn(cluster, *copts, st.cluster_stats, caf::actor{self});
    self->monitor(st.cluster);
  }
  // A client normally logs out; the monitor covers one that ended otherwise.
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (st.cluster && dm.source == st.cluster.address()) {
      log::error(subject, "cluster link ended: {}; serves its own nodes only",
                 caf::to_string(dm.reason));
      st.cluster = nullptr;
      return;
    }
    for (auto& [id, e] : st.nodes)
      if (e.client.address() == dm.source) {
        log::info(subject, "node {} went offline (client ended)", id);
        st.erase(id);
        if (st.cluster)
          self->send(st.cluster, logout_atom::value, id);
        return;
      }
  });
  return {
    [=](login_atom, const std::string& id, const caf::actor& client,
        const std::string& address) {
      auto& st = self->state;
      auto i = st.nodes.find(id);
      if (i != st.nodes.end() && i->second.client != client) {
        log::info(subject, "node {} logged in again from {}, replacing {}", id,
                  address, i->second.address);
        self->demonitor(i->second.client);
        self->send(i->second.client, replaced_atom::value, address);
        st.erase(id);
      } else {
        log::info(subject, "node {} is online from {}", id, address);
      }
      self->monitor(client);
      directory_state::entry e;
      e.client = client;
      e.address = address;
      e.since = std::chrono::system_clock::now();
      st.nodes[id] = std::move(e);
      if (st.cluster)
        self->send(st.cluster, login_atom::value, id);
      return true;
    },
    [=](logout_atom, const std::string& id, const caf::actor& client) {
      auto& st = self->state;
      auto i = st.nodes.find(id);
      if (i == st.nodes.end() || i->second.client != client)
        return;
      log::info(subject, "node {} went offline", id);
      self->demonitor(client);
      st.erase(id);
      if (st.cluster)
        self->send(st.cluster, logout_atom::value, id);
    },
    [=](exports_atom, const std::string& id, std::vector<std::string>& names) {
      auto& st = self->state;
      auto i = st.nodes.find(id);
      // Only the current client of `id` may change its exports.
      if (i == st.nodes.end()
          || i->second.client
               != caf::actor_cast<caf::actor>(self->current_sender()))
        return;
      // Kept in the node's order, each name once: the answer follows it.
      std::vector<std::string> requested;
      for (auto& name : names)
        if (std::find(requested.begin(), requested.end(), name)
            == requested.end())
          requested.push_back(std::move(name));
      i->second.requested = std::move(requested);
      if (st.cluster) {
        register_clustered(self, id);
        return;
      }
      push_result(self, id);
      log::info(subject, "node {} exports {} of {} name(s)", id,
                i->second.exports.size(), i->second.requested.size());
    },
    [=](reload_atom) {
      auto& st = self->state;
      if (st.opts.policy_file.empty()) {
        log::info(subject, "has no --names file to reload");
        return;
      }
      try {
        st.policy = names_policy::load(st.opts.policy_file);
      } catch (const std::exception& e) {
        log::error(subject, "keeps the previous names policy: {}", e.what());
        return;
      }
      log::info(subject, "reloaded the names policy: {} name(s) from {}",
                st.policy.allowed.size(), st.opts.policy_file);
      if (st.cluster)
        self->send(st.cluster, policy_atom::value, flatten(st.policy));
      for (auto& [id, e] : st.nodes)
        if (!e.requested.empty())
          push_result(self, id);
    },
    [=](lookup_atom, const std::string& name) {
      auto& st = self->state;
      auto rp = self->make_response_promise<std::vector<std::string>>();
      std::set<std::string> ids;
      if (auto i = st.by_name.find(name); i != st.by_name.end())
        ids = i->second;
      if (!st.cluster) {
        rp.deliver(std::vector<std::string>(ids.begin(), ids.end()));
        return rp;
      }
      // The nodes of the other servers join the answer; without Redis the
      // answer is this server's own.
      self
        ->request(st.cluster, std::chrono::seconds(5), lookup_atom::value, name)
        .then(
          [=](const std::vector<std::string>& remote) mutable {
            auto all = ids;
            all.insert(remote.begin(), remote.end());
            rp.deliver(std::vector<std::string>(all.begin(), all.end()));
          },
          [=](caf::error&) mutable {
            rp.deliver(std::vector<std::string>(ids.begin(), ids.end()));
          });
      return rp;
    },
    [=](route_atom, const std::string& to, std::string& envelope) {
      auto& st = self->state;
      auto rp = self->make_response_promise<bool>();
      auto i = st.nodes.find(to);
      if (i != st.nodes.end()) {
        self->send(i->second.client, deliver_atom::value, std::move(envelope));
        if (st.cluster_stats)
          ++st.cluster_stats->routed_local;
        rp.deliver(true);
        return rp;
      }
      if (!st.cluster) {
        rp.deliver(false);
        return rp;
      }
      self
        ->request(st.cluster, std::chrono::seconds(5), route_atom::value, to,
                  std::move(envelope))
        .then([=](bool delivered) mutable { rp.deliver(delivered); },
              [=](caf::error&) mutable { rp.deliver(false); });
      return rp;
    },
    // The cluster's policy, from Redis (the CLUSTER checked every id).
    [=](policy_atom, const std::vector<std::string>& flat) {
      auto& st = self->state;
      auto policy = unflatten(flat);
      if (policy.allowed == st.policy.allowed)
        return;
      st.policy = std::move(policy);
      log::info(subject, "applies the cluster's names policy: {} name(s)",
                st.policy.allowed.size());
      for (auto& [id, e] : st.nodes)
        if (!e.requested.empty())
          push_result(self, id);
    },
    // From another server, through the CLUSTER.
    [=](deliver_atom, const std::string& to, std::string& envelope) {
      auto& st = self->state;
      auto i = st.nodes.find(to);
      if (i == st.nodes.end()) {
        log::debug(subject, "drops an envelope for {}: not held here", to);
        return;
      }
      self->send(i->second.client, deliver_atom::value, std::move(envelope));
    },
    [=](replaced_atom, const std::string& id, const std::string& by) {
      auto& st = self->state;
      auto i = st.nodes.find(id);
      if (i == st.nodes.end())
        return;
      log::info(subject, "node {} logged in on {}: lets go of it", id, by);
      self->demonitor(i->second.client);
      self->send(i->second.client, replaced_atom::value, by);
      st.erase(id);
      if (st.cluster)
        self->send(st.cluster, logout_atom::value, id);
    },
    [=](nodes_atom) {
      admin::ServerStatus status;
      for (auto& [id, e] : self->state.nodes) {
        auto node = status.add_nodes();
        node->set_node_id(id);
        node->set_address(e.address);
        node->set_since(rfc3339(e.since));
        for (auto& name : e.exports)
          node->add_exports(name);
        for (auto& name : e.refused)
          node->add_refused(name);
      }
      return status.SerializeAsString();
    },
    [=](status_atom) {
      admin::ActorStatus status;
      status.set_name("directory");
      status.set_state("running");
      (*status.mutable_fields())["nodes"]
        = std::to_string(self->state.nodes.size());
      (*status.mutable_fields())["names"]
        = std::to_string(self->state.by_name.size());
      return status.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      log::debug(subject, "directory stopped: {}", reason);
      if (self->state.cluster)
        self->send(self->state.cluster, stop_atom::value, reason);
      self->quit();
    },
  };
}

} // namespace

caf::behavior directory(directory_actor* self, names_options opts) {
  return directory_impl(self, std::move(opts), std::nullopt, nullptr);
}

caf::behavior clustered_directory(directory_actor* self, names_options opts,
                                  cluster_options copts,
                                  std::shared_ptr<cluster_metrics> metrics) {
  return directory_impl(self, std::move(opts), std::move(copts),
                        std::move(metrics));
}

} // namespace p2proxy
