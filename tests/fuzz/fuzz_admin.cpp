// The admin port's request-head parser (actors/admin/http_parse.*): whatever
// the bytes, it must decide within its limits, never take more bytes than it
// was given, answer a refusal with a 4xx status and a reason, and give the
// same verdict however the bytes arrived (fed as the front feeds it: the
// buffer so far, again after every read).
//
// flags: bit 0 set = small limits (so the fuzzer reaches them quickly).
#include <cstdint>
#include <string>

#include "actors/admin/http_parse.hpp"
#include "tests/fuzz/fuzz_input.hpp"

using namespace p2proxy;
using namespace p2proxy::http;
using namespace p2proxy::http::detail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  front_limits limits;
  if (in.flags & 1) {
    limits.max_request_line = 64;
    limits.max_head_bytes = 256;
    limits.max_header_fields = 4;
    limits.max_body = 32;
  }
  std::string buf;
  parsed_head head;
  auto verdict = head_state::incomplete;
  for (auto& p : in.pieces) {
    buf += p.data;
    head = parsed_head{};
    verdict = parse_head(buf, limits, head);
    if (verdict != head_state::incomplete)
      break;
    // A head still incomplete is within the limits.
    FUZZ_CHECK(buf.size() <= limits.max_head_bytes + 4);
  }
  if (verdict == head_state::complete) {
    FUZZ_CHECK(head.head_bytes <= buf.size());
    FUZZ_CHECK(head.head_bytes <= limits.max_head_bytes + 4);
    FUZZ_CHECK(head.req.headers.size() <= limits.max_header_fields);
    FUZZ_CHECK(!head.req.method.empty());
  }
  if (verdict == head_state::refused) {
    FUZZ_CHECK(head.error_status >= 400 && head.error_status < 500);
    FUZZ_CHECK(!head.error_text.empty());
  }
  // The same bytes at once: the same verdict.
  parsed_head once;
  auto whole = parse_head(buf, limits, once);
  FUZZ_CHECK(whole == verdict);
  if (whole == head_state::complete)
    FUZZ_CHECK(once.head_bytes == head.head_bytes);
  if (whole == head_state::refused)
    FUZZ_CHECK(once.error_status == head.error_status);
  return 0;
}
