#include "actors/udp/udp_export.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include <caf/all.hpp>

#include "actors/common/error.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "actors/udp/udp_reactor.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "udp export";

struct udp_export_state {
  static inline const char* name = "udp_export_flow";
  udp_export_args args;
  session_flows_actor flows;
  std::shared_ptr<udp_reactor> reactor;
  std::shared_ptr<udp_registration> reg;
  int fd = -1;
  bool open = false;
  uint64_t gen = 0;
  std::chrono::steady_clock::time_point last;
  uint64_t in = 0, out = 0, bytes_in = 0, bytes_out = 0;
  uint64_t dropped_send = 0, dropped_oversize = 0, dropped_unavailable = 0;

  ~udp_export_state() {
    if (reactor && reg)
      reactor->remove(reg);
    if (fd >= 0)
      ::close(fd);
  }
};

using udp_export_actor = caf::stateful_actor<udp_export_state>;

void answer(udp_export_actor* self, tunnel::StreamOpenResult::Code code,
            const std::string& text, bool fin) {
  auto& st = self->state;
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  self->send(st.args.session, stream_write_atom::value, st.args.stream_id,
             encode_frame(res.SerializeAsString()), fin);
}

void end_flow(udp_export_actor* self, const std::string& why, bool reset) {
  auto& st = self->state;
  if (reset)
    self->send(st.args.session, stream_reset_atom::value, st.args.stream_id,
               uint64_t{0});
  if (st.open)
    log::info(subject,
              "ends the flow of {} (node {}) to '{}': {}; "
              "{} datagrams in, {} out",
              st.args.client_address, st.args.peer, st.args.ex.name, why, st.in,
              st.out);
  self->quit();
}

void arm_tick(udp_export_actor* self) {
  auto& st = self->state;
  auto every = std::max(
    std::chrono::milliseconds{100},
    std::min(std::chrono::milliseconds{1000}, st.args.ex.udp_idle / 4));
  self->delayed_send(self, every, udp_tick_atom::value, ++st.gen);
}

caf::behavior udp_export_flow(udp_export_actor* self, udp_export_args args) {
  auto& st = self->state;
  st.args = std::move(args);
  st.last = std::chrono::steady_clock::now();
  auto id = st.args.stream_id;
  if (!st.args.first_bytes.empty())
    self->send(st.args.session, stream_consumed_atom::value, id,
               static_cast<uint64_t>(st.args.first_bytes.size()));
  if (!st.args.local && !export_allows(st.args.ex, st.args.peer)) {
    log::warn(subject, "denies node {} the udp export '{}'", st.args.peer,
              st.args.ex.name);
    answer(
      self, tunnel::StreamOpenResult::DENIED,
      fmt::format("node {} may not use '{}'", st.args.peer, st.args.ex.name),
      true);
    self->quit();
    return {};
  }
  std::string why;
  st.fd = udp_connect(st.args.ex.target.host, st.args.ex.target.port, why);
  if (st.fd < 0) {
    answer(self, tunnel::StreamOpenResult::TARGET_UNREACHABLE,
           fmt::format("'{}': {}", st.args.ex.name, why), true);
    self->quit();
    return {};
  }
  st.reactor = udp_reactor::shared();
  st.reg = st.reactor->add(st.fd, caf::actor_cast<caf::actor>(self));
  st.flows = caf::actor_cast<session_flows_actor>(st.args.session);
  self->send(st.flows, flow_attach_atom::value, id,
             caf::actor_cast<caf::actor>(self));
  answer(self, tunnel::StreamOpenResult::OK, "", false);
  st.open = true;
  log::info(subject, "opens a flow for {} (node {}) to '{}' ({})",
            st.args.client_address, st.args.peer, st.args.ex.name,
            st.args.ex.target.to_string());
  if (st.args.peer_fin) {
    end_flow(self, "the peer closed it", true);
    return {};
  }
  arm_tick(self);
  return {
    [=](flow_data_atom, int64_t, const std::vector<std::string>& datagrams) {
      auto& st = self->state;
      st.last = std::chrono::steady_clock::now();
      for (auto& d : datagrams) {
        if (::send(st.fd, d.data(), d.size(), MSG_DONTWAIT) < 0) {
          ++st.dropped_send; // a full socket buffer, or ICMP unreachable
          continue;
        }
        ++st.in;
        st.bytes_in += d.size();
      }
    },
    [=](udp_in_atom, std::vector<std::string>&,
        std::vector<std::string>& payloads) {
      auto& st = self->state;
      st.reg->done();
      st.last = std::chrono::steady_clock::now();
      st.out += payloads.size();
      for (auto& p : payloads)
        st.bytes_out += p.size();
      self->send(st.flows, flow_send_atom::value, st.args.stream_id,
                 std::move(payloads));
    },
    [=](flow_drop_atom, int64_t, uint64_t too_big, uint64_t unavailable) {
      auto& st = self->state;
      st.dropped_oversize += too_big;
      st.dropped_unavailable += unavailable;
    },
    [=](udp_tick_atom, uint64_t gen) {
      auto& st = self->state;
      if (gen != st.gen)
        return;
      if (std::chrono::steady_clock::now() - st.last >= st.args.ex.udp_idle) {
        end_flow(self, "idle", true);
        return;
      }
      arm_tick(self);
    },
    [=](stream_data_atom, int64_t sid, std::string& bytes, bool fin) {
      auto& st = self->state;
      if (!bytes.empty())
        self->send(st.args.session, stream_consumed_atom::value, sid,
                   static_cast<uint64_t>(bytes.size()));
      if (fin)
        end_flow(self, "the peer closed it", true);
    },
    [=](stream_credit_atom, int64_t, uint64_t) {},
    [=](stream_reset_atom, int64_t, uint64_t) {
      end_flow(self, "the peer closed it", false);
    },
    [=](stream_closed_atom, int64_t) {
      end_flow(self, "the stream ended", false);
    },
    [=](session_down_atom, const caf::error& why) {
      end_flow(self, "the session ended: " + error_text(why), false);
    },
  };
}

} // namespace

stream_owner_actor spawn_udp_export_flow(caf::actor_system& sys,
                                         udp_export_args args) {
  return caf::actor_cast<stream_owner_actor>(
    sys.spawn(udp_export_flow, std::move(args)));
}

} // namespace p2proxy
