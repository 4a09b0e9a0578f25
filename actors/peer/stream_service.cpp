#include "actors/peer/stream_service.hpp"

#include <algorithm>

#include <unistd.h>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/channel/channel.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/tcp_connect.hpp"
#include "actors/common/log.hpp"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "stream_service";
constexpr size_t source_chunk = 64 * 1024;

enum class service_kind { none, echo, discard, source, export_target };

struct stream_service_state {
  static inline const char* name = "stream_service";
  caf::actor session;
  int64_t id = -1;
  std::string peer;
  stream_service_config cfg;
  std::string pre_buf;            // the preamble as it arrives
  uint64_t unconsumed_prefix = 0; // backlog bytes already consumed
  bool opened = false;
  service_kind kind = service_kind::none;
  uint64_t credit = 0; // bytes we may still write
  std::string backlog; // echo: received, not yet written
  bool peer_fin = false;
  bool fin_sent = false;
  uint64_t source_left = 0;
  uint64_t source_offset = 0;
  // export_target: connecting, then handing the stream to a CHANNEL.
  const export_entry* ex = nullptr;
  caf::actor channel; // set once handed off; forward to it
  // The target is being connected (by a detached worker). If the stream
  // ends meanwhile the service stays until the worker reports, so the
  // socket it may still bring is closed, not leaked.
  bool connecting = false;
  bool abandoned = false; // the stream ended while connecting
};

using service_actor = caf::stateful_actor<stream_service_state>;

void write(service_actor* self, std::string bytes, bool fin) {
  auto& st = self->state;
  st.credit -= std::min<uint64_t>(st.credit, bytes.size());
  st.fin_sent = st.fin_sent || fin;
  self->send(st.session, stream_write_atom::value, st.id, std::move(bytes),
             fin);
}

/// Writes what credit allows; consumes (returns peer credit) what was
/// written; sends FIN when the peer's FIN has been answered.
void pump(service_actor* self) {
  auto& st = self->state;
  if (st.fin_sent)
    return;
  switch (st.kind) {
    case service_kind::echo: {
      auto n = std::min<uint64_t>(st.credit, st.backlog.size());
      if (n > 0 || (st.peer_fin && st.backlog.empty())) {
        auto chunk = st.backlog.substr(0, n);
        st.backlog.erase(0, n);
        bool fin = st.peer_fin && st.backlog.empty();
        write(self, std::move(chunk), fin);
        // Bytes that arrived with the preamble were consumed already.
        auto skip = std::min<uint64_t>(n, st.unconsumed_prefix);
        st.unconsumed_prefix -= skip;
        if (n > skip)
          self->send(st.session, stream_consumed_atom::value, st.id, n - skip);
      }
      break;
    }
    case service_kind::discard:
      if (st.peer_fin)
        write(self, {}, true);
      break;
    case service_kind::source:
      while (st.credit > 0 && st.source_left > 0) {
        auto n = std::min<uint64_t>({st.credit, st.source_left, source_chunk});
        std::string chunk(n, '\0');
        for (uint64_t i = 0; i < n; ++i)
          chunk[i] = source_pattern(st.source_offset + i);
        st.source_offset += n;
        st.source_left -= n;
        write(self, std::move(chunk), st.source_left == 0);
      }
      break;
    case service_kind::none:
    case service_kind::export_target:
      break;
  }
}

void answer(service_actor* self, tunnel::StreamOpenResult::Code code,
            const std::string& text) {
  auto& st = self->state;
  tunnel::StreamOpenResult res;
  res.set_code(code);
  res.set_text(text);
  bool ok = code == tunnel::StreamOpenResult::OK;
  write(self, encode_frame(res.SerializeAsString()), !ok);
  if (!ok)
    log::info(subject, "refuses a stream from {}: {}", st.peer, text);
}

void on_preamble(service_actor* self, const std::string& frame) {
  auto& st = self->state;
  tunnel::StreamOpen open;
  st.opened = true;
  if (!open.ParseFromString(frame)) {
    answer(self, tunnel::StreamOpenResult::BAD_REQUEST, "malformed StreamOpen");
    return;
  }
  auto& r = open.resource();
  for (auto& e : st.cfg.exports)
    if (e.name == r)
      st.ex = &e;
  if (st.ex != nullptr) {
    auto& allow = st.ex->allow;
    bool allowed
      = std::find(allow.begin(), allow.end(), "*") != allow.end()
        || std::find(allow.begin(), allow.end(), st.peer) != allow.end();
    if (!allowed) {
      answer(self, tunnel::StreamOpenResult::DENIED,
             fmt::format("node {} is not allowed to use '{}'", st.peer, r));
      return;
    }
    st.kind = service_kind::export_target;
    st.connecting = true;
    auto target = st.ex->target;
    auto timeout = st.cfg.connect_timeout;
    auto me = caf::actor{self};
    log::debug(subject, "connects '{}' for {} to {}", r, st.peer,
               target.to_string());
    self->spawn<caf::detached>([=](caf::event_based_actor* worker) {
      std::string why;
      bool reset = false;
      auto fd = tcp_connect(target.host, target.port, timeout, why, &reset);
      if (fd >= 0)
        caf::anon_send(me, connect_atom::value, fd, reset);
      else
        caf::anon_send(me, conn_fail_atom::value, uint64_t{0}, why);
      worker->quit();
    });
    return;
  }
  if (st.cfg.test_resources && r == "echo")
    st.kind = service_kind::echo;
  else if (st.cfg.test_resources && r == "discard")
    st.kind = service_kind::discard;
  else if (st.cfg.test_resources && r == "source") {
    st.kind = service_kind::source;
    st.source_left = open.source_bytes();
  }
  if (st.kind == service_kind::none) {
    answer(self, tunnel::StreamOpenResult::UNKNOWN_RESOURCE,
           "no resource named '" + r + "' on this node");
    return;
  }
  log::debug(subject, "serves '{}' to {} on stream {}", r, st.peer, st.id);
  answer(self, tunnel::StreamOpenResult::OK, "");
}

caf::behavior stream_service(service_actor* self, caf::actor session,
                             int64_t id, std::string peer,
                             stream_service_config cfg) {
  auto& st = self->state;
  st.session = std::move(session);
  st.id = id;
  st.peer = std::move(peer);
  st.cfg = cfg;
  self->delayed_send(self, cfg.preamble_timeout, timeout_atom::value,
                     uint64_t{0});
  return {
    [=](stream_data_atom, int64_t id, std::string& bytes, bool fin) {
      auto& st = self->state;
      if (st.channel) { // handed off: it came before the session switched
        self->send(st.channel, stream_data_atom::value, id, std::move(bytes),
                   fin);
        return;
      }
      if (!st.opened) {
        // The preamble is consumed (credit returned) at once: it is bounded.
        self->send(st.session, stream_consumed_atom::value, st.id,
                   static_cast<uint64_t>(bytes.size()));
        st.pre_buf += bytes;
        bytes.clear();
        if (st.pre_buf.size() < 4) {
          if (fin)
            answer(self, tunnel::StreamOpenResult::BAD_REQUEST,
                   "stream ended before its StreamOpen");
          return;
        }
        auto b = reinterpret_cast<const unsigned char*>(st.pre_buf.data());
        uint64_t n = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16)
                     | (uint64_t{b[2]} << 8) | uint64_t{b[3]};
        if (n > st.cfg.max_preamble) {
          st.opened = true;
          answer(self, tunnel::StreamOpenResult::BAD_REQUEST,
                 fmt::format("StreamOpen of {} bytes exceeds the {}-byte "
                             "limit",
                             n, st.cfg.max_preamble));
          return;
        }
        if (st.pre_buf.size() < 4 + n) {
          if (fin)
            answer(self, tunnel::StreamOpenResult::BAD_REQUEST,
                   "stream ended inside its StreamOpen");
          return;
        }
        on_preamble(self, st.pre_buf.substr(4, n));
        // Bytes after the preamble belong to the resource; they were
        // consumed with the preamble, so echo must not consume them again.
        st.unconsumed_prefix = st.pre_buf.size() - 4 - n;
        bytes = st.pre_buf.substr(4 + n);
        st.pre_buf.clear();
        st.pre_buf.shrink_to_fit();
      }
      if (st.fin_sent && st.kind == service_kind::none)
        return;
      switch (st.kind) {
        case service_kind::echo:
          st.backlog += bytes;
          break;
        case service_kind::discard:
        case service_kind::source: {
          auto skip = std::min<uint64_t>(bytes.size(), st.unconsumed_prefix);
          st.unconsumed_prefix -= skip;
          if (bytes.size() > skip)
            self->send(st.session, stream_consumed_atom::value, st.id,
                       static_cast<uint64_t>(bytes.size() - skip));
          break;
        }
        case service_kind::export_target:
          st.backlog += bytes; // for the channel, consumed once written
          break;
        case service_kind::none:
          break;
      }
      st.peer_fin = st.peer_fin || fin;
      pump(self);
    },
    [=](stream_credit_atom, int64_t id, uint64_t n) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_credit_atom::value, id, n);
        return;
      }
      st.credit += n;
      pump(self);
    },
    [=](connect_atom, int fd, bool reset) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        // Nobody wants it any more: the target sees a connection that
        // closes at once.
        log::debug(subject,
                   "closes its connection to '{}' for {}: the "
                   "stream ended while it was connecting",
                   st.ex->name, st.peer);
        ::close(fd);
        self->quit();
        return;
      }
      if (reset)
        log::debug(subject,
                   "'{}' for {}: the target reset right after "
                   "accepting; its bytes go first, then the reset",
                   st.ex->name, st.peer);
      export_channel_args a;
      a.session = st.session;
      a.stream_id = st.id;
      a.credit = st.credit;
      a.first_bytes = std::move(st.backlog);
      a.first_unconsumed = a.first_bytes.size() - st.unconsumed_prefix;
      a.peer_fin = st.peer_fin;
      a.target_reset = reset;
      a.peer = st.peer;
      a.resource = st.ex->name;
      a.target = st.ex->target.to_string();
      a.protocol = st.ex->protocol.empty() ? "tcp" : st.ex->protocol;
      a.node = st.cfg.node;
      st.credit = 0;
      st.channel = spawn_export_channel(self->system(), fd, std::move(a));
      self->send(st.session, stream_owner_atom::value, st.id, st.channel);
    },
    [=](conn_fail_atom, uint64_t, const std::string& why) {
      auto& st = self->state;
      st.connecting = false;
      if (st.abandoned) {
        self->quit();
        return;
      }
      auto unreachable = why.find("refused") == std::string::npos;
      answer(self,
             unreachable ? tunnel::StreamOpenResult::TARGET_UNREACHABLE
                         : tunnel::StreamOpenResult::TARGET_REFUSED,
             fmt::format("'{}' at {}: {}", st.ex->name,
                         st.ex->target.to_string(), why));
      // What the peer sent meanwhile will never be read: consume it.
      auto n = st.backlog.size() - st.unconsumed_prefix;
      if (n > 0)
        self->send(st.session, stream_consumed_atom::value, st.id,
                   static_cast<uint64_t>(n));
      st.backlog.clear();
      st.unconsumed_prefix = 0;
    },
    [=](stream_owner_atom, int64_t) {
      // The session now sends the stream's messages to the channel; what
      // came before is forwarded (it was ahead of this in the mailbox).
      // Saying so lets the session send the channel what it held back.
      auto& st = self->state;
      self->send(st.session, stream_owner_atom::value, st.id);
      self->quit();
    },
    [=](timeout_atom, uint64_t) {
      auto& st = self->state;
      if (!st.opened) {
        st.opened = true;
        answer(self, tunnel::StreamOpenResult::BAD_REQUEST,
               "no StreamOpen within 10 s");
      }
    },
    [=](stream_reset_atom, int64_t id, uint64_t code) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_reset_atom::value, id, code);
        return;
      }
      if (st.abandoned)
        return;
      self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
      if (st.connecting)
        st.abandoned = true;
      else
        self->quit();
    },
    [=](stream_closed_atom, int64_t id) {
      auto& st = self->state;
      if (st.channel) {
        self->send(st.channel, stream_closed_atom::value, id);
        return;
      }
      if (st.connecting)
        st.abandoned = true;
      else
        self->quit();
    },
    [=](session_down_atom, const std::string& why) {
      auto& st = self->state;
      if (st.channel)
        self->send(st.channel, session_down_atom::value, why);
      else if (st.connecting) {
        st.abandoned = true; // nothing more goes to the session
        return;
      }
      self->quit();
    },
    [=](status_atom) {
      admin::ActorStatus as;
      as.set_name(stream_service_state::name);
      as.set_state(self->state.fin_sent ? "finishing" : "serving");
      return as.SerializeAsString();
    },
  };
}

} // namespace

stream_handler_factory make_stream_handler(stream_service_config cfg) {
  return [cfg](caf::local_actor* session, int64_t id, const std::string& peer) {
    return session->spawn(stream_service, caf::actor_cast<caf::actor>(session),
                          id, peer, cfg);
  };
}

} // namespace p2proxy
