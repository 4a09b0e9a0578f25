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
int tcp_connect(const std::string& host, uint16_t port,
                std::chrono::milliseconds timeout, std::string& why);

} // namespace p2proxy
