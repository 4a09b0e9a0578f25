// The HTTP FRONT's pure parts: reading a request head within the limits and
// writing an answer. No sockets here, so the unit tests can drive them.
// Private to actors/admin.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "actors/admin/http_front.hpp"

namespace p2proxy::http::detail {

enum class head_state {
  incomplete, // more bytes needed, and the limits still allow them
  complete,   // `head` holds the request
  refused,    // `head.error_status` / `head.error_text` say why
};

struct parsed_head {
  request req;
  size_t head_bytes = 0;     // how much of the input the head took
  size_t content_length = 0; // the body that follows it
  bool keep_alive = true;
  int error_status = 0;
  std::string error_text;
};

/// Looks for one request head at the start of `in`. Refuses it as soon as
/// `in` proves it over a limit, so a caller that keeps at most
/// max_head_bytes plus one read never holds more.
head_state parse_head(std::string_view in, const front_limits& limits,
                      parsed_head& head);

/// Status line, Content-Type, Content-Length, the extra headers and
/// Connection; the body unless `head_only`.
std::string serialize(const response& res, bool head_only, bool keep_alive);

/// %XX decoded; with `plus_is_space` also '+' (query strings).
std::string percent_decode(std::string_view text, bool plus_is_space);

} // namespace p2proxy::http::detail
