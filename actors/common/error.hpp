// p2proxy's error codes as CAF errors (category "p2proxy"), each with a
// one-line text for people in its context.
#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>

namespace p2proxy {

enum class ec : uint8_t {
  unspecified = 1,
  not_online, // the signaling link is not logged in
  link_down,  // the signaling link went down while a request was open
  timeout,
  peer_offline,
  bad_config,
  io_failure,
};

/// An error of category "p2proxy" carrying `text`.
caf::error make_error(ec code, std::string text);

/// The text of an error made by make_error, or CAF's rendering of others.
std::string error_text(const caf::error& err);

} // namespace p2proxy
