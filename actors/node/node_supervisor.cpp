#include "actors/node/node_supervisor.hpp"

#include <algorithm>
#include <dirent.h>
#include <malloc.h>
#include <fstream>
#include <cstdlib>
#include <map>
#include <unistd.h>

#include <caf/all.hpp>
#include <google/protobuf/util/json_util.h>

#include "actors/actors.hpp"
#include "actors/admin/admin_server.hpp"
#include "actors/admin/prometheus.hpp"
#include "actors/node/node_metrics.hpp"
#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/signal/frame_conn.hpp"
#include "actors/signal/signal_link.hpp"
#include "actors/ice/nice_driver.hpp"
#include "actors/peer/peer_manager.hpp"
#include "actors/debug/pump_runner.hpp"
#include "actors/peer/local_session.hpp"
#include "actors/peer/stream_owners.hpp"
#include "actors/listener/listener.hpp"
#include "proto/admin.pb.h"
#include "proto/signal.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "node";
constexpr auto child_timeout = std::chrono::seconds(3);
/// How often the heap gives its free pages back (memory_trim_atom).
constexpr auto memory_trim_every = std::chrono::seconds(5);
/// A channel answers at once, but one that ends while the request is on its
/// way never does: a CAF 0.17 broker's cleanup skips the mailbox bounce
/// (abstract_broker::cleanup calls local_actor::cleanup), so the request
/// only times out. Keep that well inside the admin port's 3 s.
constexpr auto channel_timeout = std::chrono::milliseconds(1000);

std::string to_json(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  return out;
}

/// Open file descriptors and resident memory of this process (Linux /proc).
void fill_process(node_supervisor_actor* self, admin::ProcessStatus& ps) {
  uint64_t fds = 0;
  if (auto dir = opendir("/proc/self/fd")) {
    while (auto e = readdir(dir))
      if (e->d_name[0] != '.')
        ++fds;
    closedir(dir);
    if (fds > 0)
      --fds; // the directory stream's own descriptor
  }
  ps.set_open_fds(fds);
  ps.set_running_actors(self->system().registry().running());
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (statm >> size >> resident)
    ps.set_rss_bytes(resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  auto mi = mallinfo2();
  ps.set_heap_in_use_bytes(mi.uordblks + mi.hblkhd);
  ps.set_heap_free_bytes(mi.fordblks);
}

/// A CHANNEL's common status answer, as a ChannelStatus.
void fill_channel(const admin::ActorStatus& as, admin::ChannelStatus& cs) {
  auto& f = as.fields();
  auto get = [&](const char* k) {
    auto i = f.find(k);
    return i == f.end() ? std::string{} : i->second;
  };
  auto num = [&](const char* k) -> uint64_t {
    try {
      return std::stoull(get(k));
    } catch (...) {
      return 0;
    }
  };
  cs.set_side(get("side"));
  cs.set_resource(get("resource"));
  cs.set_client(get("client"));
  cs.set_peer(get("peer"));
  try {
    cs.set_stream_id(std::stoll(get("stream")));
  } catch (...) {
    cs.set_stream_id(-1);
  }
  cs.set_state(as.state());
  cs.set_bytes_in(num("bytes_in"));
  cs.set_bytes_out(num("bytes_out"));
  cs.set_age_ms(num("age_ms"));
  cs.set_target(get("target"));
  cs.set_media_pairs(num("media_pairs"));
  cs.set_media_to_peer(num("media_to_peer"));
  cs.set_media_from_peer(num("media_from_peer"));
  cs.set_media_dropped(num("media_dropped"));
  cs.set_media_dropped_bad(num("media_dropped_bad"));
  cs.set_media_dropped_oversize(num("media_dropped_oversize"));
}

/// Each export as the signaling server answered its name (the link's
/// registrations): registered, pending or refused with the code and owners.
void merge_registrations(admin::NodeStatus& ns) {
  for (auto& ex : *ns.mutable_exports()) {
    ex.set_registration("pending");
    for (auto& r : ns.signal().registrations())
      if (r.name() == ex.name()) {
        ex.set_registration(r.state());
        ex.set_registration_error(r.error());
        *ex.mutable_owners() = r.owners();
      }
  }
}

/// The ended channels' totals. Read again once every channel answered: a
/// channel that ends meanwhile drops out of the list and its totals come
/// in, so the document never shows it in neither.
void fill_channel_totals(const node_supervisor_state& st,
                         admin::NodeStatus& ns) {
  ns.set_channels_opened(st.channels_opened);
  ns.set_channels_failed(st.channels_failed);
  ns.set_channel_bytes_in(st.channel_bytes_in);
  ns.set_channel_bytes_out(st.channel_bytes_out);
}

admin::NodeStatus base_status(node_supervisor_actor* self) {
  auto& st = self->state;
  admin::NodeStatus ns;
  ns.set_node_id(st.id->node_id());
  ns.set_version(P2PROXY_VERSION);
  ns.set_started(rfc3339(st.started));
  ns.set_uptime_seconds(
    static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now() - st.started)
                            .count()));
  for (auto& ex : st.cfg.exports) {
    auto e = ns.add_exports();
    e->set_name(ex.name);
    e->set_target(ex.target.to_string());
    e->set_protocol(ex.protocol);
    for (auto& a : ex.allow)
      e->add_allow(a);
  }
  fill_process(self, *ns.mutable_process());
  fill_channel_totals(st, ns);
  auto me = ns.add_actors();
  me->set_name(node_supervisor_state::name);
  me->set_state(st.stopping ? "stopping" : "running");
  (*me->mutable_fields())["children"] = std::to_string(st.children.size());
  (*me->mutable_fields())["signals_without_owner"]
    = std::to_string(st.signals_unowned);
  if (st.admin_port != 0)
    (*me->mutable_fields())["admin"]
      = fmt::format("{}:{}", st.cfg.admin->host, st.admin_port);
  return ns;
}

void stop_children(node_supervisor_actor* self, const std::string& reason) {
  auto& st = self->state;
  if (st.stopping)
    return;
  st.stopping = true;
  log::info(subject, "stops: {}", reason);
  if (st.watch)
    st.watch->stop();
  for (auto& l : st.listeners)
    self->send(l, stop_atom::value, reason);
  for (auto& child : {st.manager, st.link, st.admin, st.local})
    if (child)
      self->send(child, stop_atom::value, reason);
  if (st.connector)
    self->send_exit(st.connector, caf::exit_reason::user_shutdown);
  if (st.children.empty()) {
    if (st.ice)
      st.ice->shutdown();
    self->quit(st.exit_reason);
  }
}

/// Fans out for the node's status: the link's own document, the session
/// list, every child's and every channel's common status answer; a child
/// that does not answer in time is listed as such. Calls `done` once.
template <class F>
void collect_status(node_supervisor_actor* self, F done) {
  auto ns = std::make_shared<admin::NodeStatus>(base_status(self));
  auto& st = self->state;
  std::vector<caf::actor> children;
  for (auto& c : {st.link, st.manager, st.admin, st.connector})
    if (c)
      children.push_back(c);
  for (auto& l : st.listeners)
    children.push_back(caf::actor_cast<caf::actor>(l));
  std::vector<caf::actor> channels(st.channels.begin(), st.channels.end());
  auto pending
    = std::make_shared<size_t>(children.size() + channels.size() + 2);
  auto finish = [=]() mutable {
    if (--*pending != 0)
      return;
    // Each session lists its channels on this node.
    for (auto& s : *ns->mutable_sessions()->mutable_sessions())
      for (auto& c : ns->channels())
        if (c.peer() == s.peer())
          *s.add_channels() = c;
    fill_channel_totals(self->state, *ns);
    done(*ns);
  };
  if (!st.link || !st.manager) {
    *pending -= 2;
    if (*pending == 0) {
      done(*ns);
      return;
    }
  }
  if (st.link)
    self->request(st.link, child_timeout, get_atom::value)
      .then(
        [=](const std::string& link_status) mutable {
          ns->mutable_signal()->ParseFromString(link_status);
          merge_registrations(*ns);
          finish();
        },
        [=](caf::error& err) mutable {
          ns->mutable_signal()->set_state("unknown");
          ns->mutable_signal()->set_last_error(error_text(err));
          finish();
        });
  if (st.manager)
    self->request(st.manager, child_timeout, get_atom::value)
      .then(
        [=](const std::string& list) mutable {
          ns->mutable_sessions()->ParseFromString(list);
          finish();
        },
        [=](caf::error&) mutable { finish(); });
  for (auto& child : children)
    self->request(child, child_timeout, status_atom::value)
      .then(
        [=](const std::string& as) mutable {
          ns->add_actors()->ParseFromString(as);
          finish();
        },
        [=](caf::error& err) mutable {
          auto a = ns->add_actors();
          a->set_name("unknown");
          a->set_state("not answering: " + error_text(err));
          finish();
        });
  for (auto& ch : channels)
    self->request(ch, channel_timeout, status_atom::value)
      .then(
        [=](const std::string& bytes) mutable {
          admin::ActorStatus as;
          if (as.ParseFromString(bytes))
            fill_channel(as, *ns->add_channels());
          finish();
        },
        // A channel that ended meanwhile is simply not listed.
        [=](caf::error&) mutable { finish(); });
}

} // namespace

caf::behavior node_supervisor(node_supervisor_actor* self, node_settings cfg,
                              std::shared_ptr<const identity> id) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.id = std::move(id);
  st.started = std::chrono::system_clock::now();
  auto& sys = self->system();

  self->set_down_handler([=](const caf::down_msg& dm) {
    auto& st = self->state;
    if (auto ch = caf::actor_cast<caf::actor>(dm.source);
        ch && st.channels.erase(ch) > 0)
      return; // a CHANNEL ended (its totals came with channel_end_atom)
    st.children.erase(dm.source);
    if (!st.stopping) {
      auto what = dm.source == st.link.address()        ? "signal link"
                  : dm.source == st.admin.address()     ? "admin server"
                  : dm.source == st.manager.address()   ? "peer manager"
                  : dm.source == st.connector.address() ? "connector"
                  : dm.source == st.local.address()     ? "local session"
                                                        : "listener";
      auto why = dm.reason ? error_text(dm.reason) : "no reason given";
      log::error(subject, "lost its {} ({}); shutting down", what, why);
      st.exit_reason = make_error(ec::unspecified,
                                  fmt::format("the {} ended: {}", what, why));
      stop_children(self, "a child actor ended");
    }
    if (st.children.empty()) {
      // Every actor that could own an ICE agent is gone: now the driver.
      if (st.ice)
        st.ice->shutdown();
      self->quit(st.exit_reason);
    }
  });

  st.connector
    = spawn_connector(sys, std::chrono::seconds(10), max_signal_frame);
  self->monitor(st.connector);
  st.children.insert(st.connector.address());

  auto lc = st.cfg.signal;
  lc.exports.clear();
  for (auto& ex : st.cfg.exports)
    lc.exports.push_back(ex.name);
  lc.seed = std::hash<std::string>{}(st.id->node_id())
            ^ static_cast<uint64_t>(st.started.time_since_epoch().count());
  st.link = self->spawn(signal_link, lc, st.id, st.connector, caf::actor{self});
  self->monitor(st.link);
  st.children.insert(st.link.address());

  st.ice = make_nice_driver(st.cfg.ice);
  peer_manager_config pc;
  pc.me = st.id;
  pc.ice = st.ice;
  pc.link = st.link;
  stream_owner_config sc;
  sc.test_resources = st.cfg.test_resources;
  sc.node = self->address();
  sc.exports = st.cfg.exports;
  pc.handler = make_stream_handler(sc);
  local_session_config lsc;
  lsc.node_id = st.id->node_id();
  lsc.handler = pc.handler;
  lsc.owner_credit = st.cfg.session.owner_credit;
  st.local = spawn_local_session(self, std::move(lsc));
  self->monitor(st.local);
  st.children.insert(st.local.address());
  pc.settings = st.cfg.session;
  st.manager = self->spawn(peer_manager, pc);
  self->monitor(st.manager);
  st.children.insert(st.manager.address());
  self->send(st.link, sink_atom::value, st.manager);
  // Fixed [ice] addresses do not follow the network: nothing to watch.
  if (st.cfg.ice.local_addresses.empty()) {
    network_watch_settings ws;
    ws.include = st.cfg.ice.interfaces;
    ws.exclude = st.cfg.ice.exclude;
    st.watch = network_watch::start({st.manager, st.link}, std::move(ws));
  }

  for (size_t i = 0; i < st.cfg.listeners.size() && !st.stopping; ++i) {
    uint16_t port = 0;
    auto lst = start_listener(sys, st.cfg.listeners[i], caf::actor{self}, port);
    if (!lst) {
      st.exit_reason = lst.error();
      stop_children(self, "a listener could not be opened");
      break;
    }
    st.listeners.push_back(*lst);
    self->monitor(*lst);
    st.children.insert(lst->address());
  }
  if (st.cfg.admin && !st.stopping) {
    auto admin = start_admin_server(sys, *st.cfg.admin, caf::actor{self},
                                    st.admin_port, st.cfg.admin_token);
    if (!admin) {
      st.exit_reason = admin.error();
      stop_children(self, "the admin port could not be opened");
    } else {
      st.admin = *admin;
      self->monitor(st.admin);
      st.children.insert(st.admin.address());
      log::info(subject, "serves its admin port on {}:{}", st.cfg.admin->host,
                st.admin_port);
    }
  }
  log::info(subject, "{} starts with {} export(s)", st.id->node_id(),
            st.cfg.exports.size());
  self->delayed_send(self, memory_trim_every, memory_trim_atom::value);

  return {
    [=](get_atom) {
      auto rp = self->make_response_promise<std::string>();
      collect_status(self, [rp](const admin::NodeStatus& ns) mutable {
        rp.deliver(to_json(ns));
      });
      return rp;
    },
    [=](metrics_atom) {
      auto rp = self->make_response_promise<std::string>();
      collect_status(self, [=](const admin::NodeStatus& ns) mutable {
        rp.deliver(metrics_text(self, ns));
      });
      return rp;
    },
    [=](channel_atom) {
      // A CHANNEL started: watched for status until it ends.
      auto ch = caf::actor_cast<caf::actor>(self->current_sender());
      if (!ch)
        return;
      self->state.channels.insert(ch);
      self->monitor(ch);
    },
    [=](channel_end_atom, bool connected, uint64_t bytes_in,
        uint64_t bytes_out) {
      auto& st = self->state;
      ++(connected ? st.channels_opened : st.channels_failed);
      st.channel_bytes_in += bytes_in;
      st.channel_bytes_out += bytes_out;
    },
    [=](open_atom, std::string& peer) {
      // A node never opens a session to itself: its own exports are served
      // by the LOCAL SESSION.
      if (peer == self->state.id->node_id())
        return self->delegate(self->state.local, get_atom::value);
      return self->delegate(self->state.manager, open_atom::value,
                            std::move(peer));
    },
    [=](pump_atom, std::string& peer, std::string& resource, uint64_t bytes,
        uint32_t streams) {
      auto rp = self->make_response_promise<std::string>();
      if (!self->state.cfg.test_resources) {
        rp.deliver(make_error(ec::bad_config,
                              "the debug pump is off: set [debug] "
                              "test_resources = true on both nodes"));
        return rp;
      }
      if (streams == 0 || streams > 256 || bytes > (uint64_t{16} << 30)) {
        rp.deliver(make_error(
          ec::bad_config, "streams must be 1-256 and bytes at most 16 GiB"));
        return rp;
      }
      auto runner = self->spawn(pump_runner, self->state.manager);
      self
        ->request(runner, std::chrono::minutes(30), pump_atom::value, peer,
                  resource, bytes, streams)
        .then([=](std::string& json) mutable { rp.deliver(std::move(json)); },
              [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return rp;
    },
    [=](lookup_atom, std::string& name) {
      return self->delegate(self->state.link, lookup_atom::value,
                            std::move(name));
    },
    [=](resolve_atom, std::string& name) {
      return self->delegate(self->state.manager, resolve_atom::value,
                            std::move(name));
    },
    [=](online_atom) {}, // the PEER MANAGER is not the link's sink yet
    [=](probe_atom, std::string& node) {
      return self->delegate(self->state.link, probe_atom::value,
                            std::move(node));
    },
    [=](signal_atom, const std::string& serialized) {
      // Before the PEER MANAGER is the sink: count it so the status shows it.
      signal::Signal sig;
      sig.ParseFromString(serialized);
      ++self->state.signals_unowned;
      log::info(subject, "receives a signal from {} for session {}", sig.from(),
                sig.session_id());
    },
    [=](peer_off_atom, const std::string& peer, uint64_t session_id,
        const std::string& text) {
      log::info(subject, "hears node {} is offline (session {}): {}", peer,
                session_id, text);
    },
    [=](status_atom) {
      auto ns = base_status(self);
      return ns.actors(0).SerializeAsString();
    },
    [=](stop_atom, const std::string& reason) { stop_children(self, reason); },
    [=](memory_trim_atom) {
      // Bursts (loss, a path change, a slow client) fill the receive
      // windows; glibc keeps the freed pages of its heaps, so without this
      // a node's RSS stays at its highest burst for good (the soak in
      // docs/benchmarks.md). malloc_trim gives the free ones back.
      if (self->state.stopping)
        return;
      malloc_trim(0);
      self->delayed_send(self, memory_trim_every, memory_trim_atom::value);
    },
  };
}

} // namespace p2proxy
