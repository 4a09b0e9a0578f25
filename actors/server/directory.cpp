#include "actors/server/directory.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/endpoint.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr std::string_view subject = "directory";

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

caf::behavior directory(directory_actor* self) {
  // A client normally logs out; the monitor covers one that ended otherwise.
  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    for (auto& [id, e] : st.nodes)
      if (e.client.address() == dm.source) {
        log::info(subject, "node {} went offline (client ended)", id);
        st.erase(id);
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
      st.nodes[id] = directory_state::entry{
        client, address, std::chrono::system_clock::now(), {}};
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
    },
    [=](register_atom, const std::string& id, std::vector<std::string>& names) {
      auto& st = self->state;
      auto i = st.nodes.find(id);
      // Only the current client of `id` may change its exports.
      if (i == st.nodes.end()
          || i->second.client
               != caf::actor_cast<caf::actor>(self->current_sender()))
        return;
      log::info(subject, "node {} exports {} name(s)", id, names.size());
      st.set_exports(id, std::move(names));
    },
    [=](lookup_atom, const std::string& name) {
      auto& st = self->state;
      std::vector<std::string> ids;
      if (auto i = st.by_name.find(name); i != st.by_name.end())
        ids.assign(i->second.begin(), i->second.end());
      return ids;
    },
    [=](route_atom, const std::string& to, std::string& envelope) {
      auto& st = self->state;
      auto i = st.nodes.find(to);
      if (i == st.nodes.end())
        return false;
      self->send(i->second.client, deliver_atom::value, std::move(envelope));
      return true;
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
      self->quit();
    },
  };
}

} // namespace p2proxy
