// FRAME CONNECTION: a CAF broker that owns one TCP socket carrying TLS 1.3
// (a TLS CHANNEL, actors/signal/tls_channel.hpp) whose plaintext is
// length-prefixed frames (actors/common/frame_codec.hpp); it relays whole
// frames to and from its owner; see actors/actors.hpp for its messages.
// CONNECTOR: opens such connections off the actor threads, with a timeout.
// Both are the seam that actor tests replace with fakes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/fwd.hpp>
#include <caf/io/connection_handle.hpp>

#include "actors/signal/tls_channel.hpp"

namespace p2proxy {

/// Wraps the connected socket `fd` in a FRAME CONNECTION owned by `owner`
/// that runs `tls` (a client channel) over it. Once the TLS handshake is
/// done, its first message to owner is (conn_up_atom, tag, conn,
/// "addr:port", peer key id, channel binding, CA problem) (see
/// tls_channel). A handshake that fails or a connection closed before it
/// ends tell the owner (conn_fail_atom, tag, reason). Afterwards frames over
/// `max_frame`, records that do not authenticate, EOF and socket errors end
/// it with (conn_down_atom, reason) to owner; it monitors owner and closes
/// when the owner is gone. (net_change_atom, added, removed) from the owner
/// ends it the same way when the socket's local address was removed: its
/// packets could no longer leave or arrive, and TCP would only find out
/// after minutes of retransmissions.
caf::actor spawn_frame_conn(caf::actor_system& sys, int fd, caf::actor owner,
                            uint64_t tag, size_t max_frame,
                            std::shared_ptr<tls_channel> tls);

/// Hands `hdl`, a connection that the broker `acceptor` accepted, to a new
/// FRAME CONNECTION owned by `owner` (CAF's broker::fork moves the socket)
/// running `tls`, a server channel; it behaves exactly like one made by
/// spawn_frame_conn.
caf::actor fork_frame_conn(caf::io::broker* acceptor,
                           caf::io::connection_handle hdl, caf::actor owner,
                           uint64_t tag, size_t max_frame,
                           std::shared_ptr<tls_channel> tls);

/// True when the peer of `hdl`, a connection just accepted, has already
/// closed or reset it: it gave up while waiting in the listen queue, and
/// starting TLS for it would be wasted work.
bool peer_already_gone(caf::io::connection_handle hdl);

/// The CONNECTOR: answers (connect_atom, tag, host, port, owner) by
/// resolving and connecting within `timeout`, then spawning a FRAME
/// CONNECTION with a TLS client channel for `host` for owner, or sending
/// (conn_fail_atom, tag, reason) to owner.
caf::actor spawn_connector(caf::actor_system& sys,
                           std::chrono::milliseconds timeout, size_t max_frame);

} // namespace p2proxy
