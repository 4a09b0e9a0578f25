#include "actors/cluster/cluster.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/cluster/redis_loop.hpp"
#include "actors/common/error.hpp"
#include "actors/common/log.hpp"
#include "actors/identity/identity.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

namespace {

constexpr std::string_view subject = "cluster";
const std::string prefix = "p2proxy:";

std::string node_key(const std::string& id) {
  return prefix + "node:" + id;
}
std::string name_key(const std::string& name) {
  return prefix + "name:" + name;
}
std::string owner_key(const std::string& name) {
  return prefix + "owner:" + name;
}
std::string channel_of(const std::string& instance) {
  return prefix + "inst:" + instance;
}
const std::string policy_key = prefix + "policy";
// Every server listens here: "P" says the names policy in Redis changed.
const std::string all_channel = prefix + "all";

// Refreshes a presence only if it is ours or gone (Redis restarted or the
// key expired); otherwise answers who holds the node now.
const std::string refresh_script
  = "local v = redis.call('GET', KEYS[1]) "
    "if (not v) or v == ARGV[1] then "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "return v";
// Deletes a presence only if it is still ours.
const std::string release_script
  = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0";

std::string ttl_ms(const cluster_state& st) {
  return std::to_string(3 * st.opts.heartbeat.count());
}

void set_link(cluster_actor* self, int link) {
  self->state.link = link;
  self->state.metrics->link = link;
}

// Logs a value of one of our keys that makes no sense, once per value.
void garbage(cluster_actor* self, const std::string& key,
             const std::string& value) {
  auto& st = self->state;
  ++st.metrics->garbage_ignored;
  if (st.garbage_logged.size() > 1024)
    st.garbage_logged.clear();
  if (!st.garbage_logged.insert(key + '\n' + value).second)
    return;
  auto shown = value.substr(0, 64);
  for (auto& c : shown)
    if (c < 0x20 || c > 0x7e)
      c = '?';
  log::warn(subject, "ignores a value in Redis that is not ours: {} = \"{}\"",
            key, shown);
}

// Sends one command; `then` runs on this actor with the reply.
void command(cluster_actor* self, std::vector<std::string> argv,
             std::function<void(const redis_reply&)> then = nullptr) {
  auto& st = self->state;
  auto tag = ++st.next_tag;
  if (then)
    st.pending.emplace(tag, std::move(then));
  auto me = caf::actor{self};
  st.loop->command(std::move(argv), [me, tag](const redis_reply& r) {
    std::string present;
    for (bool p : r.present)
      present += p ? '1' : '0';
    caf::anon_send(me, redis_reply_atom::value, tag,
                   static_cast<int32_t>(r.kind), r.str, r.number, r.items,
                   present);
  });
}

void refresh(cluster_actor* self, const std::string& id) {
  auto& st = self->state;
  command(
    self,
    {"EVAL", refresh_script, "1", node_key(id), st.opts.instance, ttl_ms(st)},
    [=](const redis_reply& r) {
      if (r.kind != redis_reply::string)
        return; // 1: ours; an error: the next refresh retries
      auto& st = self->state;
      if (st.held.count(id) == 0)
        return;
      if (!looks_like_instance_id(r.str)) {
        garbage(self, node_key(id), r.str);
        command(self,
                {"SET", node_key(id), st.opts.instance, "PX", ttl_ms(st)});
        return;
      }
      log::info(subject, "node {} is held by instance {} now", id, r.str);
      self->send(st.directory, replaced_atom::value, id, "instance " + r.str);
    });
}

void index_names(cluster_actor* self, const std::string& id,
                 const std::vector<std::string>& names) {
  for (auto& name : names) {
    command(self, {"SADD", name_key(name), id});
    command(self, {"SET", owner_key(name), id, "NX"});
  }
}

// After every link up: Redis may have restarted empty, or lost our writes.
void resync(cluster_actor* self) {
  auto& st = self->state;
  for (auto& [id, names] : st.held) {
    refresh(self, id);
    index_names(self, id, names);
  }
  log::info(subject, "resynchronised {} node(s) with Redis", st.held.size());
}

void ping(cluster_actor* self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  if (st.ping_sent) {
    if (now - *st.ping_sent > 2 * st.opts.heartbeat)
      st.loop->disconnect("Redis did not answer a PING in time");
    return;
  }
  st.ping_sent = now;
  command(self, {"PING"}, [=](const redis_reply& r) {
    auto& st = self->state;
    if (!st.ping_sent)
      return;
    auto rtt = std::chrono::steady_clock::now() - *st.ping_sent;
    st.ping_sent.reset();
    if (r.kind == redis_reply::error)
      return;
    st.metrics->latency_us
      = std::chrono::duration_cast<std::chrono::microseconds>(rtt).count();
  });
}

void connect(cluster_actor* self) {
  auto& st = self->state;
  ++st.gen;
  set_link(self, cluster_metrics::connecting);
  st.ping_sent.reset();
  st.loop->connect(st.opts.redis.host, st.opts.redis.port, st.opts.redis.db,
                   {channel_of(st.opts.instance), all_channel});
  self->delayed_send(self, st.opts.connect_timeout, timeout_atom::value,
                     st.gen);
}

// Reads the names policy from Redis and hands it to the DIRECTORY, flat:
// name, "id,id,...", name, ... Entries that make no sense are dropped.
void read_policy(cluster_actor* self) {
  command(self, {"HGETALL", policy_key}, [=](const redis_reply& r) {
    if (r.kind != redis_reply::array)
      return; // an error: the next link up or change reads it again
    std::vector<std::string> flat;
    for (size_t i = 0; i + 1 < r.items.size(); i += 2) {
      auto& name = r.items[i];
      std::vector<std::string> ids;
      std::string rest = r.items[i + 1];
      bool bad = name.empty() || name.size() > 255;
      while (!bad && !rest.empty()) {
        auto comma = rest.find(',');
        auto id = rest.substr(0, comma);
        rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
        bad = !looks_like_node_id(id);
        ids.push_back(id);
      }
      if (bad || ids.empty()) {
        auto key = policy_key;
        key.append(" ").append(name);
        garbage(self, key, r.items[i + 1]);
        continue;
      }
      flat.push_back(name);
      flat.push_back(r.items[i + 1]);
    }
    self->send(self->state.directory, policy_atom::value, std::move(flat));
  });
}

// Replaces the policy in Redis with this server's (from its --names file)
// and tells every server to read it.
void write_policy(cluster_actor* self) {
  auto& st = self->state;
  if (!st.own_policy)
    return;
  command(self, {"MULTI"});
  command(self, {"DEL", policy_key});
  if (!st.own_policy->empty()) {
    std::vector<std::string> argv{"HSET", policy_key};
    argv.insert(argv.end(), st.own_policy->begin(), st.own_policy->end());
    command(self, std::move(argv));
  }
  command(self, {"EXEC"});
  command(self, {"PUBLISH", all_channel, "P"});
}

void on_message(cluster_actor* self, const std::string& channel,
                const std::string& payload) {
  auto& st = self->state;
  if (channel == all_channel) {
    if (payload == "P")
      read_policy(self);
    else
      garbage(self, all_channel, payload);
    return;
  }
  auto nl = payload.find('\n');
  if (payload.size() < 2 || nl == std::string::npos) {
    garbage(self, channel_of(st.opts.instance), payload);
    return;
  }
  auto id = payload.substr(1, nl - 1);
  auto rest = payload.substr(nl + 1);
  if (!looks_like_node_id(id)) {
    garbage(self, channel_of(st.opts.instance), payload);
    return;
  }
  if (payload[0] == 'R') {
    ++st.metrics->routed_in;
    self->send(st.directory, deliver_atom::value, id, std::move(rest));
  } else if (payload[0] == 'K' && looks_like_instance_id(rest)) {
    if (rest != st.opts.instance && st.held.count(id) != 0)
      self->send(st.directory, replaced_atom::value, id, "instance " + rest);
  } else {
    garbage(self, channel_of(st.opts.instance), payload);
  }
}

// Valid node ids of a set; garbage is logged and dropped from the set.
std::vector<std::string> node_ids(cluster_actor* self, const std::string& key,
                                  const redis_reply& r) {
  std::vector<std::string> ids;
  for (auto& item : r.items) {
    if (looks_like_node_id(item)) {
      ids.push_back(item);
    } else {
      garbage(self, key, item);
      command(self, {"SREM", key, item});
    }
  }
  return ids;
}

void lookup(cluster_actor* self, const std::string& name,
            caf::typed_response_promise<std::vector<std::string>> rp) {
  auto key = name_key(name);
  command(self, {"SMEMBERS", key}, [=](const redis_reply& r) mutable {
    if (r.kind != redis_reply::array) {
      rp.deliver(std::vector<std::string>{});
      return;
    }
    auto ids = node_ids(self, key, r);
    if (ids.empty()) {
      rp.deliver(std::vector<std::string>{});
      return;
    }
    std::vector<std::string> argv{"MGET"};
    for (auto& id : ids)
      argv.push_back(node_key(id));
    command(self, std::move(argv), [=](const redis_reply& r) mutable {
      std::vector<std::string> online;
      for (size_t i = 0; i < ids.size() && i < r.items.size(); ++i) {
        if (!r.present[i]) {
          // Gone from every server: the index forgets it.
          command(self, {"SREM", key, ids[i]});
        } else if (looks_like_instance_id(r.items[i])) {
          online.push_back(ids[i]);
        } else {
          garbage(self, node_key(ids[i]), r.items[i]);
        }
      }
      rp.deliver(std::move(online));
    });
  });
}

void route(cluster_actor* self, const std::string& to,
           const std::string& envelope, caf::typed_response_promise<bool> rp) {
  command(self, {"GET", node_key(to)}, [=](const redis_reply& r) mutable {
    auto& st = self->state;
    if (r.kind != redis_reply::string) {
      rp.deliver(false);
      return;
    }
    if (!looks_like_instance_id(r.str)) {
      garbage(self, node_key(to), r.str);
      rp.deliver(false);
      return;
    }
    if (r.str == st.opts.instance) {
      rp.deliver(false); // ours, yet not held: a stale presence
      return;
    }
    command(self, {"PUBLISH", channel_of(r.str), "R" + to + "\n" + envelope},
            [=](const redis_reply& r) mutable {
              bool delivered = r.kind == redis_reply::integer && r.number > 0;
              if (delivered)
                ++self->state.metrics->routed_out;
              rp.deliver(delivered);
            });
  });
}

// Owners of `claim` (set to `id` where nobody owned them) then of `read`.
void owners(cluster_actor* self, const std::string& id,
            const std::vector<std::string>& claim,
            const std::vector<std::string>& read,
            caf::typed_response_promise<std::vector<std::string>> rp) {
  auto total = claim.size() + read.size();
  auto out = std::make_shared<std::vector<std::string>>(total);
  auto left = std::make_shared<size_t>(total);
  if (total == 0) {
    rp.deliver(std::vector<std::string>{});
    return;
  }
  auto done = [=](size_t i, std::string owner) mutable {
    (*out)[i] = std::move(owner);
    if (--*left == 0)
      rp.deliver(std::move(*out));
  };
  for (size_t i = 0; i < total; ++i) {
    bool claiming = i < claim.size();
    auto name = claiming ? claim[i] : read[i - claim.size()];
    auto key = owner_key(name);
    std::vector<std::string> argv{"GET", key};
    if (claiming)
      argv = {"SET", key, id, "NX", "GET"};
    command(self, std::move(argv), [=](const redis_reply& r) mutable {
      if (r.kind == redis_reply::string && looks_like_node_id(r.str)) {
        done(i, r.str);
        return;
      }
      if (r.kind == redis_reply::string)
        garbage(self, key, r.str);
      if (claiming && r.kind != redis_reply::error) {
        // Nobody owned it (or only garbage did): now `id` does.
        if (r.kind == redis_reply::string)
          command(self, {"SET", key, id});
        done(i, id);
        return;
      }
      done(i, {}); // unknown: the DIRECTORY decides from what it knew
    });
  }
}

} // namespace

caf::behavior cluster(cluster_actor* self, cluster_options opts,
                      std::shared_ptr<cluster_metrics> metrics,
                      caf::actor directory) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.metrics = std::move(metrics);
  st.directory = std::move(directory);
  st.retry = backoff{st.opts.backoff_first, st.opts.backoff_max};
  auto me = caf::actor{self};
  // The loop's callbacks run on its thread: they only send messages.
  redis_loop::callbacks cb;
  cb.link = [me](bool up, const std::string& why) {
    caf::anon_send(me, redis_link_atom::value, up, why);
  };
  cb.message = [me](std::string channel, std::string payload) {
    caf::anon_send(me, redis_msg_atom::value, std::move(channel),
                   std::move(payload));
  };
  st.loop = std::make_shared<redis_loop>(std::move(cb));
  log::info(subject, "instance {} uses Redis at {}", st.opts.instance,
            st.opts.redis.to_string());
  connect(self);
  self->delayed_send(self, st.opts.heartbeat, tick_atom::value, uint64_t{0});
  return {
    [=](redis_link_atom, bool up, const std::string& why) {
      auto& st = self->state;
      if (up) {
        if (st.link != cluster_metrics::connecting)
          return;
        set_link(self, cluster_metrics::up);
        st.retry.reset();
        ++st.gen; // the connect timeout no longer applies
        log::info(subject, "Redis link up ({})", st.opts.redis.to_string());
        if (st.ever_up)
          ++st.metrics->redis_reconnects;
        st.ever_up = true;
        ping(self); // the latency is known at once
        resync(self);
        if (st.own_policy)
          write_policy(self); // Redis may have lost it; all read it again
        else
          read_policy(self);
        return;
      }
      if (st.link == cluster_metrics::down)
        return;
      bool was_up = st.link == cluster_metrics::up;
      set_link(self, cluster_metrics::down);
      st.metrics->latency_us = -1;
      st.ping_sent.reset();
      auto delay = st.retry.next();
      ++st.gen;
      if (was_up)
        log::error(subject,
                   "Redis link down: {}; keeps serving its {} node(s), "
                   "reconnects in {} ms",
                   why, st.held.size(), delay.count());
      else
        log::warn(subject, "Redis unreachable: {}; retries in {} ms", why,
                  delay.count());
      self->delayed_send(self, delay, retry_atom::value, st.gen);
    },
    [=](retry_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == st.gen && st.link == cluster_metrics::down)
        connect(self);
    },
    [=](timeout_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen == st.gen && st.link == cluster_metrics::connecting)
        st.loop->disconnect(fmt::format("no answer within {} ms",
                                        st.opts.connect_timeout.count()));
    },
    [=](tick_atom, uint64_t) {
      auto& st = self->state;
      if (st.link == cluster_metrics::up) {
        ping(self);
        for (auto& [id, names] : st.held)
          refresh(self, id);
      }
      self->delayed_send(self, st.opts.heartbeat, tick_atom::value,
                         uint64_t{0});
    },
    [=](redis_reply_atom, uint64_t tag, int32_t kind, std::string& str,
        int64_t number, std::vector<std::string>& items,
        const std::string& present) {
      auto& st = self->state;
      auto i = st.pending.find(tag);
      if (i == st.pending.end())
        return;
      auto then = std::move(i->second);
      st.pending.erase(i);
      redis_reply r;
      r.kind = static_cast<redis_reply::kind_t>(kind);
      r.str = std::move(str);
      r.number = number;
      r.items = std::move(items);
      for (auto c : present)
        r.present.push_back(c == '1');
      r.present.resize(r.items.size(), false);
      if (r.kind == redis_reply::error && st.link == cluster_metrics::up)
        log::debug(subject, "Redis answered an error: {}", r.str);
      then(r);
    },
    [=](redis_msg_atom, const std::string& channel,
        const std::string& payload) { on_message(self, channel, payload); },
    [=](policy_atom, std::vector<std::string>& flat) {
      // This server's --names file: it becomes the cluster's policy.
      self->state.own_policy = std::move(flat);
      if (self->state.link == cluster_metrics::up)
        write_policy(self);
    },
    [=](login_atom, const std::string& id) {
      auto& st = self->state;
      st.held[id];
      st.metrics->nodes_held = st.held.size();
      command(self,
              {"SET", node_key(id), st.opts.instance, "PX", ttl_ms(st), "GET"},
              [=](const redis_reply& r) {
                auto& st = self->state;
                if (r.kind != redis_reply::string || r.str == st.opts.instance)
                  return;
                if (!looks_like_instance_id(r.str)) {
                  garbage(self, node_key(id), r.str);
                  return;
                }
                // The node left that server for this one: it lets go.
                command(self, {"PUBLISH", channel_of(r.str),
                               "K" + id + "\n" + st.opts.instance});
              });
    },
    [=](logout_atom, const std::string& id) {
      auto& st = self->state;
      auto i = st.held.find(id);
      if (i == st.held.end())
        return;
      for (auto& name : i->second)
        command(self, {"SREM", name_key(name), id});
      st.held.erase(i);
      st.metrics->nodes_held = st.held.size();
      command(self,
              {"EVAL", release_script, "1", node_key(id), st.opts.instance});
    },
    [=](exports_atom, const std::string& id, std::vector<std::string>& names) {
      auto& st = self->state;
      auto i = st.held.find(id);
      if (i == st.held.end())
        return;
      for (auto& old : i->second)
        if (std::find(names.begin(), names.end(), old) == names.end())
          command(self, {"SREM", name_key(old), id});
      for (auto& name : names)
        command(self, {"SADD", name_key(name), id});
      i->second = std::move(names);
    },
    [=](owners_atom, const std::string& id,
        const std::vector<std::string>& claim,
        const std::vector<std::string>& read) {
      auto rp = self->make_response_promise<std::vector<std::string>>();
      if (self->state.link != cluster_metrics::up)
        rp.deliver(make_error(ec::link_down, "the Redis link is down"));
      else
        owners(self, id, claim, read, rp);
      return rp;
    },
    [=](claim_atom, const std::string& name, const std::string& id) {
      command(self, {"SET", owner_key(name), id});
    },
    [=](lookup_atom, const std::string& name) {
      auto rp = self->make_response_promise<std::vector<std::string>>();
      if (self->state.link != cluster_metrics::up)
        rp.deliver(std::vector<std::string>{});
      else
        lookup(self, name, rp);
      return rp;
    },
    [=](route_atom, const std::string& to, const std::string& envelope) {
      auto rp = self->make_response_promise<bool>();
      if (self->state.link != cluster_metrics::up)
        rp.deliver(false);
      else
        route(self, to, envelope, rp);
      return rp;
    },
    [=](status_atom) {
      auto& st = self->state;
      admin::ActorStatus status;
      status.set_name("cluster");
      status.set_state(cluster_metrics::to_string(st.link));
      (*status.mutable_fields())["instance"] = st.opts.instance;
      (*status.mutable_fields())["redis"] = st.opts.redis.to_string();
      (*status.mutable_fields())["nodes_held"] = std::to_string(st.held.size());
      return status.SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) {
      auto& st = self->state;
      log::debug(subject, "cluster stops: {}", reason);
      if (st.link != cluster_metrics::up || st.held.empty()) {
        self->quit();
        return;
      }
      // Presence of the nodes held here goes at once, not at expiry; the
      // PING's answer says the releases went out (or a second passed).
      for (auto& [id, names] : st.held)
        command(self,
                {"EVAL", release_script, "1", node_key(id), st.opts.instance});
      command(self, {"PING"}, [=](const redis_reply&) { self->quit(); });
      self->delayed_send(self, std::chrono::seconds(1), stop_atom::value,
                         std::string{"released"});
      st.link = cluster_metrics::down; // a second stop quits at once
    },
  };
}

} // namespace p2proxy
