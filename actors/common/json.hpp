// The one JSON helper hand-written documents need: a quoted string.
// Documents with structure are protobuf messages printed by protobuf's JSON
// mapping instead.
#pragma once

#include <string>
#include <string_view>

namespace p2proxy {

/// `text` as a JSON string literal, quotes included.
std::string json_quote(std::string_view text);

} // namespace p2proxy
