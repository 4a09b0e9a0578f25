#include "actors/debug/test_resources.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "actors/actors.hpp"
#include "actors/common/frame_codec.hpp"
#include "actors/common/log.hpp"
#include "proto/admin.pb.h"
#include "proto/tunnel.pb.h"

namespace p2proxy {

namespace {

constexpr const char* subject = "test_resource";
constexpr size_t source_chunk = 64 * 1024;

enum class resource_kind { echo, discard, source };

struct test_resource_state {
  static inline const char* name = "test_resource";
  session_streams_actor session;
  int64_t id = -1;
  resource_kind kind = resource_kind::echo;
  uint64_t credit = 0; // bytes we may still write
  std::string backlog; // echo: received, not yet written
  bool peer_fin = false;
  bool fin_sent = false;
  uint64_t source_left = 0;
  uint64_t source_offset = 0;
};

using resource_actor = caf::stateful_actor<test_resource_state>;

void write(resource_actor* self, std::string bytes, bool fin) {
  auto& st = self->state;
  st.credit -= std::min<uint64_t>(st.credit, bytes.size());
  st.fin_sent = st.fin_sent || fin;
  self->send(st.session, stream_write_atom::value, st.id, std::move(bytes),
             fin);
}

/// Writes what credit allows; consumes (returns peer credit) what was
/// written; sends FIN when the peer's FIN has been answered.
void pump(resource_actor* self) {
  auto& st = self->state;
  if (st.fin_sent)
    return;
  switch (st.kind) {
    case resource_kind::echo: {
      auto n = std::min<uint64_t>(st.credit, st.backlog.size());
      if (n > 0 || (st.peer_fin && st.backlog.empty())) {
        auto chunk = st.backlog.substr(0, n);
        st.backlog.erase(0, n);
        bool fin = st.peer_fin && st.backlog.empty();
        write(self, std::move(chunk), fin);
        if (n > 0)
          self->send(st.session, stream_consumed_atom::value, st.id, n);
      }
      break;
    }
    case resource_kind::discard:
      if (st.peer_fin)
        write(self, {}, true);
      break;
    case resource_kind::source:
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
  }
}

/// Bytes from the peer: echo keeps them until written back; the others
/// read them at once.
void on_data(resource_actor* self, std::string& bytes, bool fin) {
  auto& st = self->state;
  if (st.kind == resource_kind::echo)
    st.backlog += bytes;
  else if (!bytes.empty())
    self->send(st.session, stream_consumed_atom::value, st.id,
               static_cast<uint64_t>(bytes.size()));
  st.peer_fin = st.peer_fin || fin;
  pump(self);
}

caf::behavior test_resource(resource_actor* self, test_resource_args args) {
  auto& st = self->state;
  st.session = args.session;
  st.id = args.stream_id;
  if (args.resource == "discard")
    st.kind = resource_kind::discard;
  else if (args.resource == "source") {
    st.kind = resource_kind::source;
    st.source_left = args.source_bytes;
  }
  log::debug(subject, "serves '{}' to {} on stream {}", args.resource,
             args.peer, st.id);
  tunnel::StreamOpenResult ok;
  ok.set_code(tunnel::StreamOpenResult::OK);
  write(self, encode_frame(ok.SerializeAsString()), false);
  on_data(self, args.first_bytes, args.peer_fin);
  return {
    [=](stream_data_atom, int64_t, std::string& bytes, bool fin) {
      on_data(self, bytes, fin);
    },
    [=](stream_credit_atom, int64_t, uint64_t n) {
      self->state.credit += n;
      pump(self);
    },
    [=](stream_reset_atom, int64_t, uint64_t) {
      auto& st = self->state;
      self->send(st.session, stream_reset_atom::value, st.id, uint64_t{0});
      self->quit();
    },
    [=](stream_closed_atom, int64_t) { self->quit(); },
    [=](session_down_atom, const caf::error&) { self->quit(); },
    [=](status_atom) {
      admin::ActorStatus as;
      as.set_name(test_resource_state::name);
      as.set_state(self->state.fin_sent ? "finishing" : "serving");
      return as.SerializeAsString();
    },
  };
}

} // namespace

bool is_test_resource(const std::string& name) {
  return name == "echo" || name == "discard" || name == "source";
}

caf::actor spawn_test_resource(caf::local_actor* parent,
                               test_resource_args args) {
  return parent->spawn(test_resource, std::move(args));
}

} // namespace p2proxy
