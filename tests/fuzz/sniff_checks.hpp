// What every sniffer promises (actors/channel/protocol/sniffer.hpp), checked
// on each result a harness gets.
#pragma once

#include <string>

#include "actors/channel/protocol/sniffer.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace p2proxy::fuzz {

inline constexpr open_failure all_open_failures[] = {
  open_failure::unknown_resource,   open_failure::denied,
  open_failure::peer_unreachable,   open_failure::target_refused,
  open_failure::target_unreachable, open_failure::overloaded,
  open_failure::bad_request,        open_failure::internal,
};

inline void check_result(const sniff_result& r) {
  switch (r.state) {
    case sniff_state::need_more:
      FUZZ_CHECK(r.error == sniff_error::none);
      break;
    case sniff_state::done:
      FUZZ_CHECK(!r.resource.empty());
      FUZZ_CHECK(r.resource.size() <= max_resource_name);
      break;
    case sniff_state::failed:
      FUZZ_CHECK(r.error != sniff_error::none);
      for (char c : r.reason)
        FUZZ_CHECK(c >= 0x20 && c < 0x7f);
      break;
  }
}

/// `forward` of a `done` is every byte the client sent, except the empty
/// lines before a request line that HTTP and RTSP may skip (RFC 7230 3.5).
inline bool forwards_all(const std::string& forward, const std::string& sent) {
  auto start = sent.find_first_not_of("\r\n");
  if (start == std::string::npos)
    start = sent.size();
  return forward == sent || forward == sent.substr(start);
}

/// Feeds the pieces with `dir == false` to `sniff` (a sniffer's feed, or an
/// adapter's sniff) until it decides.
/// Returns the deciding result (need_more if the input ran out) and sets
/// `used` to the pieces consumed; `sent` gets the bytes fed.
template <class Sniff>
sniff_result sniff_all(Sniff&& sniff, const input& in, size_t& used,
                       std::string& sent) {
  sniff_result r;
  used = 0;
  while (used < in.pieces.size()) {
    auto& p = in.pieces[used++];
    if (p.dir)
      continue;
    sent.append(p.data);
    r = sniff(p.data);
    check_result(r);
    if (r.state != sniff_state::need_more)
      break;
  }
  return r;
}

} // namespace p2proxy::fuzz
