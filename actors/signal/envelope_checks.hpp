// Checks on signaling messages shared by the SIGNAL CLIENT (server side) and
// the fuzzers, so both run the same code.
#pragma once

#include <string>
#include <string_view>

#include "proto/signal.pb.h"

namespace p2proxy {

/// Compares digests so the time taken tells nothing about the token, not
/// even its length.
bool same_secret(std::string_view a, std::string_view b);

/// The Envelope's message name for a log line ("login", "an empty
/// Envelope", ...).
std::string message_name(const signal::Envelope& env);

} // namespace p2proxy
