#include "actors/peer/stream_owners.hpp"

#include <memory>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/common/error.hpp"
#include "actors/debug/test_resources.hpp"
#include "actors/udp/udp_export.hpp"

namespace p2proxy {

stream_handler_factory make_stream_handler(stream_owner_config cfg) {
  auto shared = std::make_shared<const stream_owner_config>(std::move(cfg));
  return [shared](caf::local_actor* session,
                  peer_stream_open open) -> caf::expected<stream_owner_actor> {
    const auto& r = open.open.resource();
    const export_entry* ex = nullptr;
    for (auto& e : shared->exports)
      if (e.name == r)
        ex = &e; // (the last of equal names, as before)
    // A UDP flow only to a udp export, and a udp export only as a flow.
    if (ex != nullptr
        && (ex->protocol == "udp") != (open.open.protocol() == "udp"))
      return make_error(ec::protocol_error,
                        fmt::format("'{}' is a {} export; the stream asked "
                                    "for {}",
                                    r, ex->protocol, open.open.protocol()));
    if (ex != nullptr && ex->protocol == "udp") {
      udp_export_args a;
      a.session = caf::actor_cast<session_streams_actor>(session);
      a.stream_id = open.stream_id;
      a.peer = std::move(open.peer);
      a.ex = *ex;
      a.client_address = open.open.client_address();
      a.local = open.local;
      a.first_bytes = std::move(open.first_bytes);
      a.peer_fin = open.peer_fin;
      return spawn_udp_export_flow(session->system(), std::move(a));
    }
    if (ex != nullptr) {
      export_channel_args a;
      a.session = caf::actor_cast<session_streams_actor>(session);
      a.stream_id = open.stream_id;
      a.peer = std::move(open.peer);
      a.ex = *ex;
      a.connect_timeout = shared->connect_timeout;
      a.first_bytes = std::move(open.first_bytes);
      a.peer_fin = open.peer_fin;
      a.local = open.local;
      a.node = shared->node;
      return spawn_export_channel(session->system(), std::move(a));
    }
    if (shared->test_resources && is_test_resource(r)) {
      test_resource_args a;
      a.session = caf::actor_cast<session_streams_actor>(session);
      a.stream_id = open.stream_id;
      a.peer = std::move(open.peer);
      a.resource = r;
      a.source_bytes = open.open.source_bytes();
      a.first_bytes = std::move(open.first_bytes);
      a.peer_fin = open.peer_fin;
      return caf::actor_cast<stream_owner_actor>(
        spawn_test_resource(session, std::move(a)));
    }
    return make_error(ec::unknown_resource,
                      "no resource named '" + r + "' on this node");
  };
}

} // namespace p2proxy
