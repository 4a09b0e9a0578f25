#include "actors/udp/udp_listener.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <utility>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/common/preamble.hpp"
#include "actors/udp/udp_reactor.hpp"
#include "proto/admin.pb.h"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "udp listener";
constexpr size_t max_early = 32;
constexpr size_t max_early_bytes = 64 * 1024;
constexpr auto open_timeout = std::chrono::seconds(10);

using clock_type = std::chrono::steady_clock;

struct udp_flow {
  enum class phase { opening, open, refused };
  phase ph = phase::opening;
  std::string from; // the client's raw sockaddr
  std::string name; // and as text
  caf::actor session;
  int64_t stream = -1;
  preamble_reader result;
  std::vector<std::string> early;
  size_t early_bytes = 0;
  std::string refusal;
  clock_type::time_point last;
  uint64_t in = 0, out = 0, bytes_in = 0, bytes_out = 0;
  std::map<std::string, uint64_t> dropped; // by reason
};

const char* to_string(udp_flow::phase p) {
  switch (p) {
    case udp_flow::phase::opening:
      return "opening";
    case udp_flow::phase::open:
      return "open";
    case udp_flow::phase::refused:
      return "refused";
  }
  return "?";
}

struct udp_listener_state {
  static inline const char* name = "udp_listener";
  listener_config cfg;
  caf::actor supervisor;
  std::shared_ptr<udp_reactor> reactor;
  std::shared_ptr<udp_registration> reg;
  int fd = -1;
  uint64_t next_key = 1;
  uint64_t gen = 0;
  std::map<std::string, uint64_t> by_from;
  std::map<uint64_t, udp_flow> flows;
  std::map<std::pair<caf::actor_addr, int64_t>, uint64_t> by_stream;
  uint64_t opened = 0, refused = 0, ended = 0;
  std::map<std::string, uint64_t> refused_by_reason;
  std::map<std::string, uint64_t> dropped; // not tied to a flow
  // Totals of ended flows, so the counters never go back.
  uint64_t in = 0, out = 0, bytes_in = 0, bytes_out = 0;
  bool stopping = false;

  ~udp_listener_state() {
    if (reactor && reg)
      reactor->remove(reg);
    if (fd >= 0)
      ::close(fd);
  }
};

using udp_listener_actor = caf::stateful_actor<udp_listener_state>;

udp_flow* find_flow(udp_listener_actor* self, uint64_t key) {
  auto i = self->state.flows.find(key);
  return i == self->state.flows.end() ? nullptr : &i->second;
}

/// The flow of stream `id` of the session that sent the current message.
std::pair<uint64_t, udp_flow*> flow_of_stream(udp_listener_actor* self,
                                              int64_t id) {
  auto& st = self->state;
  auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
  auto i = st.by_stream.find({sender, id});
  if (i == st.by_stream.end())
    return {0, nullptr};
  return {i->second, find_flow(self, i->second)};
}

void end_flow(udp_listener_actor* self, uint64_t key, const std::string& why) {
  auto& st = self->state;
  auto* f = find_flow(self, key);
  if (f == nullptr)
    return;
  if (f->stream >= 0 && f->session) {
    // Reset: the export's end stops at once; nothing is owed on a flow.
    self->send(caf::actor_cast<session_streams_actor>(f->session),
               stream_reset_atom::value, f->stream, uint64_t{0});
    st.by_stream.erase({f->session.address(), f->stream});
  }
  if (f->ph != udp_flow::phase::refused)
    log::info(subject,
              "ends the flow of {} to '{}': {}; {} datagrams in, "
              "{} out",
              f->name, st.cfg.resource, why, f->in, f->out);
  st.in += f->in;
  st.out += f->out;
  st.bytes_in += f->bytes_in;
  st.bytes_out += f->bytes_out;
  for (auto& [reason, n] : f->dropped)
    st.dropped[reason] += n;
  ++st.ended;
  st.by_from.erase(f->from);
  st.flows.erase(key);
}

void refuse_flow(udp_listener_actor* self, uint64_t key,
                 const caf::error& why) {
  auto& st = self->state;
  auto* f = find_flow(self, key);
  if (f == nullptr || f->ph != udp_flow::phase::opening)
    return;
  if (f->stream >= 0 && f->session) {
    self->send(caf::actor_cast<session_streams_actor>(f->session),
               stream_reset_atom::value, f->stream, uint64_t{0});
    st.by_stream.erase({f->session.address(), f->stream});
    f->stream = -1;
  }
  f->ph = udp_flow::phase::refused;
  f->refusal = error_text(why);
  f->dropped["refused"] += f->early.size();
  f->early.clear();
  f->early_bytes = 0;
  ++st.refused;
  ++st.refused_by_reason[failure_class(why)];
  log::warn(subject, "refuses the flow of {} to '{}': {}", f->name,
            st.cfg.resource, f->refusal);
}

/// Sends datagrams of an open flow into its stream's flow.
void to_tunnel(udp_listener_actor* self, udp_flow& f,
               std::vector<std::string>&& datagrams) {
  if (datagrams.empty())
    return;
  self->send(caf::actor_cast<session_flows_actor>(f.session),
             flow_send_atom::value, f.stream, std::move(datagrams));
}

void on_result(udp_listener_actor* self, uint64_t key, udp_flow& f,
               std::string& bytes) {
  auto session = caf::actor_cast<session_streams_actor>(f.session);
  switch (f.result.feed(bytes)) {
    case preamble_reader::status::need_more:
      self->send(session, stream_consumed_atom::value, f.stream,
                 static_cast<uint64_t>(bytes.size()));
      return;
    case preamble_reader::status::oversize:
      self->send(session, stream_consumed_atom::value, f.stream,
                 static_cast<uint64_t>(bytes.size()));
      refuse_flow(self, key,
                  make_error(ec::protocol_error, "oversize StreamOpenResult"));
      return;
    case preamble_reader::status::complete:
      break;
  }
  self->send(session, stream_consumed_atom::value, f.stream,
             static_cast<uint64_t>(bytes.size()));
  tunnel::StreamOpenResult r;
  if (!r.ParseFromString(f.result.payload())) {
    refuse_flow(self, key,
                make_error(ec::protocol_error, "malformed StreamOpenResult"));
    return;
  }
  if (r.code() != tunnel::StreamOpenResult::OK) {
    auto code = r.code() == tunnel::StreamOpenResult::DENIED ? ec::denied
                : r.code() == tunnel::StreamOpenResult::UNKNOWN_RESOURCE
                  ? ec::unknown_resource
                : r.code() == tunnel::StreamOpenResult::TARGET_UNREACHABLE
                  ? ec::target_unreachable
                  : ec::protocol_error;
    refuse_flow(
      self, key,
      make_error(code,
                 fmt::format("{}: {}",
                             tunnel::StreamOpenResult::Code_Name(r.code()),
                             r.text())));
    return;
  }
  f.ph = udp_flow::phase::open;
  self->send(caf::actor_cast<session_flows_actor>(f.session),
             flow_attach_atom::value, f.stream, caf::actor{self});
  ++self->state.opened;
  log::info(subject, "opens a flow for {} to '{}'", f.name,
            self->state.cfg.resource);
  f.early_bytes = 0;
  to_tunnel(self, f, std::exchange(f.early, {}));
}

void open_stream(udp_listener_actor* self, uint64_t key,
                 const caf::actor& session) {
  auto* f = find_flow(self, key);
  if (f == nullptr || f->ph != udp_flow::phase::opening)
    return;
  f->session = session;
  self->monitor(session);
  self
    ->request(caf::actor_cast<session_streams_actor>(session), open_timeout,
              stream_open_atom::value, caf::actor{self})
    .then(
      [=](int64_t id) {
        auto& st = self->state;
        auto* f = find_flow(self, key);
        if (f == nullptr || f->ph != udp_flow::phase::opening) {
          self->send(caf::actor_cast<session_streams_actor>(session),
                     stream_reset_atom::value, id, uint64_t{0});
          return;
        }
        f->stream = id;
        st.by_stream[{session.address(), id}] = key;
        tunnel::StreamOpen open;
        open.set_resource(st.cfg.resource);
        open.set_protocol("udp");
        open.set_client_address(f->name);
        open.set_version(1);
        self->send(caf::actor_cast<session_streams_actor>(session),
                   stream_write_atom::value, id,
                   encode_frame(open.SerializeAsString()), false);
      },
      [=](caf::error& err) { refuse_flow(self, key, err); });
}

void open_flow(udp_listener_actor* self, uint64_t key) {
  auto& st = self->state;
  auto open_session = [=](const std::string& node) {
    self->request(self->state.supervisor, open_timeout, open_atom::value, node)
      .then([=](const caf::actor& session) { open_stream(self, key, session); },
            [=](caf::error& err) { refuse_flow(self, key, err); });
  };
  if (!st.cfg.peer.empty()) {
    open_session(st.cfg.peer);
    return;
  }
  self
    ->request(st.supervisor, open_timeout, lookup_atom::value, st.cfg.resource)
    .then(
      [=](const std::vector<std::string>& ids) {
        if (ids.empty()) {
          refuse_flow(self, key,
                      make_error(ec::unknown_resource,
                                 fmt::format("no online node exports '{}'",
                                             self->state.cfg.resource)));
          return;
        }
        open_session(ids.front());
      },
      [=](caf::error& err) { refuse_flow(self, key, err); });
}

void on_client_datagrams(udp_listener_actor* self,
                         std::vector<std::string>& from,
                         std::vector<std::string>& payloads) {
  auto& st = self->state;
  auto now = clock_type::now();
  std::map<uint64_t, std::vector<std::string>> batch;
  for (size_t i = 0; i < payloads.size() && i < from.size(); ++i) {
    auto& d = payloads[i];
    auto it = st.by_from.find(from[i]);
    uint64_t key;
    if (it == st.by_from.end()) {
      if (st.stopping || st.flows.size() >= st.cfg.max_flows) {
        ++st.dropped["flows_full"];
        continue;
      }
      key = st.next_key++;
      auto& f = st.flows[key];
      f.from = from[i];
      f.name = udp_address_text(from[i]);
      f.last = now;
      st.by_from[f.from] = key;
      open_flow(self, key);
    } else {
      key = it->second;
    }
    auto& f = st.flows[key];
    f.last = now;
    switch (f.ph) {
      case udp_flow::phase::opening:
        if (f.early.size() >= max_early
            || f.early_bytes + d.size() > max_early_bytes) {
          ++f.dropped["early_overflow"];
          continue;
        }
        ++f.in;
        f.bytes_in += d.size();
        f.early_bytes += d.size();
        f.early.push_back(std::move(d));
        break;
      case udp_flow::phase::open:
        ++f.in;
        f.bytes_in += d.size();
        batch[key].push_back(std::move(d));
        break;
      case udp_flow::phase::refused:
        ++f.dropped["refused"];
        break;
    }
  }
  for (auto& [key, datagrams] : batch)
    if (auto* f = find_flow(self, key))
      to_tunnel(self, *f, std::move(datagrams));
}

void arm_tick(udp_listener_actor* self) {
  auto& st = self->state;
  auto every
    = std::max(std::chrono::milliseconds{100},
               std::min(std::chrono::milliseconds{1000}, st.cfg.udp_idle / 4));
  self->delayed_send(self, every, udp_tick_atom::value, ++st.gen);
}

std::string status_of(const udp_listener_state& st) {
  admin::ActorStatus as;
  as.set_name(udp_listener_state::name);
  as.set_state(st.stopping ? "stopping" : "listening");
  auto& f = *as.mutable_fields();
  f["bind"] = st.cfg.bind.to_string();
  f["protocol"] = "udp";
  f["resource"] = st.cfg.resource;
  f["flows"] = std::to_string(st.flows.size());
  f["max_flows"] = std::to_string(st.cfg.max_flows);
  f["flows_opened"] = std::to_string(st.opened);
  f["flows_ended"] = std::to_string(st.ended);
  f["refused"] = std::to_string(st.refused);
  for (auto& [k, v] : st.refused_by_reason)
    f["refused_" + k] = std::to_string(v);
  auto in = st.in, out = st.out, bytes_in = st.bytes_in,
       bytes_out = st.bytes_out;
  auto dropped = st.dropped;
  for (auto& [key, fl] : st.flows) {
    in += fl.in;
    out += fl.out;
    bytes_in += fl.bytes_in;
    bytes_out += fl.bytes_out;
    std::string drops;
    for (auto& [reason, n] : fl.dropped) {
      dropped[reason] += n;
      drops += fmt::format(" dropped_{}={}", reason, n);
    }
    f["flow " + fl.name] = fmt::format(
      "state={} datagrams_in={} datagrams_out={} bytes_in={} bytes_out={}{}",
      to_string(fl.ph), fl.in, fl.out, fl.bytes_in, fl.bytes_out, drops);
  }
  f["datagrams_in"] = std::to_string(in);
  f["datagrams_out"] = std::to_string(out);
  f["bytes_in"] = std::to_string(bytes_in);
  f["bytes_out"] = std::to_string(bytes_out);
  for (auto& [reason, n] : dropped)
    f["dropped_" + reason] = std::to_string(n);
  return as.SerializeAsString();
}

caf::behavior udp_listener(udp_listener_actor* self, listener_config cfg,
                           caf::actor supervisor, int fd) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.supervisor = std::move(supervisor);
  st.fd = fd;
  st.reactor = udp_reactor::shared();
  st.reg = st.reactor->add(fd, caf::actor_cast<caf::actor>(self));
  self->set_down_handler([=](const caf::down_msg& dm) {
    std::vector<uint64_t> gone;
    for (auto& [key, f] : self->state.flows)
      if (f.session && f.session.address() == dm.source)
        gone.push_back(key);
    for (auto key : gone)
      end_flow(self, key, "the session ended");
  });
  arm_tick(self);
  return {
    [=](udp_in_atom, std::vector<std::string>& from,
        std::vector<std::string>& payloads) {
      self->state.reg->done();
      on_client_datagrams(self, from, payloads);
    },
    [=](flow_data_atom, int64_t id, const std::vector<std::string>& datagrams) {
      auto [key, f] = flow_of_stream(self, id);
      if (f == nullptr || f->ph != udp_flow::phase::open)
        return;
      f->last = clock_type::now();
      for (auto& d : datagrams) {
        auto n = ::sendto(self->state.fd, d.data(), d.size(), MSG_DONTWAIT,
                          reinterpret_cast<const sockaddr*>(f->from.data()),
                          static_cast<socklen_t>(f->from.size()));
        if (n < 0) {
          ++f->dropped["send_failed"];
          continue;
        }
        ++f->out;
        f->bytes_out += d.size();
      }
    },
    [=](flow_drop_atom, int64_t id, uint64_t too_big, uint64_t unavailable) {
      auto [key, f] = flow_of_stream(self, id);
      if (f == nullptr)
        return;
      if (too_big > 0)
        f->dropped["oversize"] += too_big;
      if (unavailable > 0)
        f->dropped["unavailable"] += unavailable;
    },
    [=](stream_data_atom, int64_t id, std::string& bytes, bool fin) {
      auto [key, f] = flow_of_stream(self, id);
      if (f == nullptr) {
        if (!bytes.empty())
          self->send(
            caf::actor_cast<session_streams_actor>(self->current_sender()),
            stream_consumed_atom::value, id,
            static_cast<uint64_t>(bytes.size()));
        return;
      }
      if (f->ph == udp_flow::phase::opening)
        on_result(self, key, *f, bytes);
      else if (!bytes.empty())
        self->send(caf::actor_cast<session_streams_actor>(f->session),
                   stream_consumed_atom::value, id,
                   static_cast<uint64_t>(bytes.size()));
      if (fin) {
        auto* g = find_flow(self, key);
        if (g != nullptr && g->ph == udp_flow::phase::opening)
          refuse_flow(self, key,
                      make_error(ec::protocol_error,
                                 "the stream ended before its answer"));
        else if (g != nullptr && g->ph == udp_flow::phase::open)
          end_flow(self, key, "the export ended it");
        // (refused: it stays, refused, until idle)
      }
    },
    [=](stream_credit_atom, int64_t, uint64_t) {},
    [=](stream_reset_atom, int64_t id, uint64_t) {
      auto [key, f] = flow_of_stream(self, id);
      if (f == nullptr)
        return;
      self->state.by_stream.erase({f->session.address(), id});
      f->stream = -1;
      if (f->ph == udp_flow::phase::opening)
        refuse_flow(self, key,
                    make_error(ec::session_lost, "the stream was reset"));
      else
        end_flow(self, key, "the export reset it");
    },
    [=](stream_closed_atom, int64_t id) {
      auto [key, f] = flow_of_stream(self, id);
      if (f == nullptr)
        return;
      self->state.by_stream.erase({f->session.address(), id});
      f->stream = -1;
      if (f->ph == udp_flow::phase::open)
        end_flow(self, key, "the stream ended");
    },
    [=](session_down_atom, const caf::error&) {
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      std::vector<uint64_t> gone;
      for (auto& [key, f] : self->state.flows)
        if (f.session && f.session.address() == sender)
          gone.push_back(key);
      for (auto key : gone) {
        auto* f = find_flow(self, key);
        self->state.by_stream.erase({f->session.address(), f->stream});
        f->stream = -1;
        end_flow(self, key, "the session ended");
      }
    },
    [=](udp_tick_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen)
        return;
      auto now = clock_type::now();
      std::vector<uint64_t> idle;
      for (auto& [key, f] : st.flows)
        if (now - f.last >= st.cfg.udp_idle)
          idle.push_back(key);
      for (auto key : idle)
        end_flow(self, key, "idle");
      arm_tick(self);
    },
    [=](refused_atom, const caf::error&) {},
    [=](status_atom) { return status_of(self->state); },
    [=](stop_atom, const std::string& why) {
      auto& st = self->state;
      st.stopping = true;
      log::info(subject, "stops listening on {}: {}", st.cfg.bind.to_string(),
                why);
      std::vector<uint64_t> all;
      for (auto& [key, f] : st.flows)
        all.push_back(key);
      for (auto key : all)
        end_flow(self, key, "the listener stopped");
      self->quit();
    },
  };
}

} // namespace

caf::expected<listener_actor> start_udp_listener(caf::actor_system& sys,
                                                 const listener_config& cfg,
                                                 const caf::actor& supervisor,
                                                 uint16_t& bound_port) {
  std::string why;
  auto fd = udp_bind(cfg.bind.host, cfg.bind.port, bound_port, why);
  if (fd < 0)
    return make_error(ec::io_failure,
                      fmt::format("listen: cannot listen on udp {}: {}",
                                  cfg.bind.to_string(), why));
  auto a = sys.spawn(udp_listener, cfg, supervisor, fd);
  log::info(subject, "listens on udp {}:{} for '{}'", cfg.bind.host, bound_port,
            cfg.resource);
  return caf::actor_cast<listener_actor>(a);
}

} // namespace p2proxy
