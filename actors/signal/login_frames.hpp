// The node's Login frame, apart from the SIGNAL LINK's state machine.
#pragma once

#include <string>

#include "actors/identity/identity.hpp"
#include "proto/signal.pb.h"

namespace p2proxy {

/// A Login answering `hello` in the TLS session with `binding`, signed with
/// `id`. `probe_only`: netcheck's login (proto/signal.proto).
signal::Envelope make_login(const identity& id, const std::string& binding,
                            const signal::Hello& hello,
                            const std::string& token, bool probe_only);

} // namespace p2proxy
