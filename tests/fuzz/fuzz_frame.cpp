// The signaling frame decoder (actors/common/frame_codec.*): fed a byte
// stream in the pieces the input chooses, it must yield exactly the frames a
// one-shot reading of the same bytes finds, fail exactly when a header
// announces more than the limit, and each frame must re-encode to its bytes.
//
// flags: bit 0 set = a small limit (flags >> 1 bytes), else max_signal_frame.
#include <cstdint>
#include <string>
#include <vector>

#include "actors/common/frame_codec.hpp"
#include "tests/fuzz/fuzz_input.hpp"

using namespace p2proxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::split_input(data, size);
  size_t limit
    = (in.flags & 1) ? static_cast<size_t>(in.flags >> 1) : max_signal_frame;

  frame_decoder dec{limit};
  std::vector<std::string> frames;
  auto status = frame_decoder::status::ok;
  for (auto& p : in.pieces) {
    status = dec.feed(p.data.data(), p.data.size(), frames);
    if (status == frame_decoder::status::too_large)
      FUZZ_CHECK(dec.failed());
  }

  // The same bytes read at once, header by header.
  auto wire = fuzz::joined(in);
  std::vector<std::string> expected;
  bool too_large = false;
  size_t pos = 0;
  uint64_t bad = 0;
  for (;;) {
    auto head = peek_frame(std::string_view{wire}.substr(pos), limit);
    if (head.k == frame_head::kind::partial)
      break;
    if (head.k == frame_head::kind::too_large) {
      too_large = true;
      bad = head.length;
      break;
    }
    FUZZ_CHECK(head.length <= limit);
    expected.push_back(wire.substr(pos + 4, head.length));
    FUZZ_CHECK(encode_frame(expected.back())
               == wire.substr(pos, 4 + head.length));
    pos += 4 + head.length;
  }
  FUZZ_CHECK(dec.failed() == too_large);
  if (too_large) {
    FUZZ_CHECK(dec.bad_length() == bad);
    FUZZ_CHECK(bad > limit);
    // Frames before the bad header still came out, none after it.
    FUZZ_CHECK(frames.size() <= expected.size());
  } else {
    FUZZ_CHECK(frames == expected);
    FUZZ_CHECK(dec.buffered() == wire.size() - pos);
  }
  for (size_t i = 0; i < frames.size(); ++i)
    FUZZ_CHECK(frames[i] == expected[i]);
  return 0;
}
