// Half-closable TCP connections for brokers (CAF 0.17).
//
// CAF 0.17's scribes treat a peer's FIN as the end of the whole connection:
// the scribe is closed and nothing more can be written. A proxy must carry
// half-close both ways (a client that sends its request and shuts down
// writing still expects the answer). These scribes report an orderly EOF as
// a message and keep the write side open:
//
//   broker ◀── (local_eof_atom, connection_handle)   the peer sent FIN; no
//                                                   more new_data_msg follow
//   broker ◀── (local_lost_atom, connection_handle)  the peer no longer reads
//                                                   (a write met EPIPE or
//                                                   ECONNRESET): writes are
//                                                   dropped from now on; what
//                                                   it sent before is still
//                                                   read, to its FIN
//   shutdown_write(hdl)                              our FIN, once our writes
//                                                   are on the wire; reading
//                                                   goes on
//
// Everything else (new_data_msg, data_transferred_msg, connection_closed_msg
// on errors and resets, close(hdl)) behaves as with CAF's own scribes.
#pragma once

#include <cstdint>
#include <string>

#include <caf/expected.hpp>
#include <caf/io/abstract_broker.hpp>
#include <caf/io/connection_handle.hpp>
#include <caf/io/doorman.hpp>

namespace p2proxy {

/// Adds the connected socket `fd` to `self` as a half-closable scribe.
caf::io::connection_handle add_half_close_scribe(caf::io::abstract_broker* self,
                                                 int fd);

/// A listening socket on host:port whose accepted connections are
/// half-closable scribes; add it with `add_doorman`.
caf::expected<caf::io::doorman_ptr>
new_half_close_doorman(caf::actor_system& sys, uint16_t port,
                       const std::string& host);

/// Sends our FIN on `hdl` (shutdown(SHUT_WR)). Call it once every byte
/// written to the scribe has been transferred (data_transferred_msg with
/// remaining == 0), or they are lost.
void shutdown_write(caf::io::connection_handle hdl);

/// Makes the coming close(hdl) reset the connection (RST) instead of
/// ending it normally: for a connection whose other end failed.
void reset_on_close(caf::io::connection_handle hdl);

} // namespace p2proxy
