// p2proxy's error codes as CAF errors (category "p2proxy"), each with a
// one-line text for people in its context. Metrics, status and the replies a
// client sees are chosen from the code (failure_class, is_error), never from
// the text: rewording a message changes no counter.
#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace p2proxy {

enum class ec : uint8_t {
  unspecified = 1,
  not_online, // the signaling link is not logged in
  link_down,  // the signaling link went down while a request was open
  timeout,
  peer_offline,
  bad_config,
  io_failure,
  // Opening a channel: why a client was refused.
  unknown_resource,   // no online node exports the name, or the export is
                      // unknown to the node asked
  denied,             // the exporting node's allow list refused this node
  target_refused,     // the export's target refused the connection
  target_unreachable, // the export's target could not be reached
  // Opening a session.
  ice_failed,        // no ICE pair worked
  handshake_failed,  // QUIC/TLS handshake failed
  identity_mismatch, // the peer presented another node id than expected
  session_lost,      // the session ended while the channel used it
  protocol_error,    // the peer or client broke the protocol
};

/// An error of category "p2proxy" carrying `text`.
caf::error make_error(ec code, std::string text);

/// The text of an error made by make_error, or CAF's rendering of others.
std::string error_text(const caf::error& err);

/// True if `err` is a p2proxy error with code `code`.
bool is_error(const caf::error& err, ec code);

/// The code's short name ("denied", "target_refused", ...): the label used in
/// metrics and status. "other" for errors of other categories.
const char* to_string(ec code);
std::string failure_class(const caf::error& err);

} // namespace p2proxy

CAF_ERROR_CODE_ENUM(p2proxy::ec, "p2proxy")
