// The StreamOpen preamble (actors/common/preamble.*) and what the exporting
// node and the client CHANNEL parse out of it: tunnel::StreamOpen, and
// tunnel::StreamOpenResult with its code mapped to an open_failure.
//
// The reader is fed the pieces until it completes or refuses; then its
// payload must be the announced bytes, rest() plus every later piece the
// rest of the stream, and taken() what it kept of the last piece.
//
// flags: bit 0 set = a small limit (flags >> 1 bytes), else max_preamble.
#include <cstdint>
#include <string>

#include "actors/channel/protocol/sniffer.hpp"
#include "actors/common/preamble.hpp"
#include "proto/tunnel.pb.h"
#include "tests/fuzz/fuzz_input.hpp"

using namespace p2proxy;

namespace {

void parse_payload(const std::string& payload) {
  // The exporting node: peer_session_opening.cpp.
  tunnel::StreamOpen open;
  if (open.ParseFromString(payload)) {
    auto again = open.SerializeAsString();
    tunnel::StreamOpen back;
    FUZZ_CHECK(back.ParseFromString(again));
    FUZZ_CHECK(back.resource() == open.resource());
    FUZZ_CHECK(back.source_bytes() == open.source_bytes());
  }
  // The client CHANNEL: client_side.cpp.
  tunnel::StreamOpenResult result;
  if (result.ParseFromString(payload)) {
    auto why = open_failure_from_code(static_cast<int>(result.code()));
    (void)to_string(why);
    (void)tunnel::StreamOpenResult::Code_Name(result.code());
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  size_t limit
    = (in.flags & 1) ? static_cast<size_t>(in.flags >> 1) : max_preamble;
  auto wire = fuzz::joined(in);

  preamble_reader r{limit};
  size_t fed = 0; // bytes of the pieces before the current one
  size_t i = 0;
  for (; i < in.pieces.size(); ++i) {
    auto piece = in.pieces[i].data;
    auto s = r.feed(piece);
    FUZZ_CHECK(s == r.state());
    FUZZ_CHECK(r.buffered() <= 4 + limit);
    if (s == preamble_reader::status::need_more) {
      FUZZ_CHECK(r.taken() == piece.size());
      fed += piece.size();
      continue;
    }
    if (s == preamble_reader::status::oversize) {
      FUZZ_CHECK(r.announced() > limit);
      break;
    }
    // complete
    FUZZ_CHECK(r.announced() <= limit);
    FUZZ_CHECK(r.payload() == wire.substr(4, r.announced()));
    FUZZ_CHECK(r.taken() + r.rest().size() == piece.size());
    FUZZ_CHECK(fed + r.taken() == 4 + r.announced());
    FUZZ_CHECK(r.rest() == wire.substr(4 + r.announced(), r.rest().size()));
    parse_payload(r.payload());
    break;
  }
  // Once done, the reader ignores what follows.
  if (i < in.pieces.size()) {
    auto before = r.state();
    for (size_t j = i + 1; j < in.pieces.size(); ++j) {
      FUZZ_CHECK(r.feed(in.pieces[j].data) == before);
      FUZZ_CHECK(r.taken() == 0);
    }
  }
  return 0;
}
