// A blocking TCP connect with a deadline that covers name resolution and
// every address tried. Call it off the actor threads (a detached actor):
// getaddrinfo has no timeout of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "actors/common/error.hpp"

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
///
/// With `code` given, a failure also sets it, for the same failure `why`
/// describes (the last address tried): ec::target_refused when the target
/// refused the connection (ECONNREFUSED), ec::timeout when the deadline
/// passed, ec::target_unreachable for everything else (the name did not
/// resolve, no route, ...). Callers choose from the code, never the text.
int tcp_connect(const std::string& host, uint16_t port,
                std::chrono::milliseconds timeout, std::string& why,
                bool* reset = nullptr, ec* code = nullptr);

} // namespace p2proxy
