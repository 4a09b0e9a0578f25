// A blocking TCP connect with a deadline that covers name resolution and
// every address tried. Call it off the actor threads (a detached actor):
// getaddrinfo has no timeout of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace p2proxy {

/// A connected, non-blocking socket with TCP_NODELAY, or -1 with `why` set
/// to a one-line reason ("Connection refused", "timed out after 10000 ms").
///
/// A peer can accept, send and reset before the connect is checked; the
/// check then reads the reset (the socket forgets it) although the
/// connection was made and its bytes are still to be read. With `reset`
/// given, such a socket is returned with `*reset` set, so the caller can
/// read those bytes and take their end as the reset it was; without it,
/// the connect fails ("Connection reset by peer").
int tcp_connect(const std::string& host, uint16_t port,
                std::chrono::milliseconds timeout, std::string& why,
                bool* reset = nullptr);

} // namespace p2proxy
