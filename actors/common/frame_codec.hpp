// Length-prefixed frames: 4-byte big-endian length, then the payload.
// The decoder is fed whatever the socket delivered (split or coalesced) and
// yields complete frames; a frame longer than the limit is an error that
// poisons the decoder (the connection must be closed: resynchronising a byte
// stream after a bad length is impossible).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace p2proxy {

/// Largest payload of a signaling frame.
constexpr size_t max_signal_frame = 64 * 1024;

/// What the front of a byte buffer holds: a whole frame (its payload is
/// `length` bytes after the 4-byte header), not enough bytes yet, or a
/// header that announces more than the limit. The one place a frame's
/// length is read; frame_decoder and preamble_reader build on it.
struct frame_head {
  enum class kind { partial, whole, too_large };
  kind k = kind::partial;
  uint64_t length = 0; // announced payload length (once the header is in)
};
frame_head peek_frame(std::string_view buf, size_t max_payload);

/// Appends a frame header + payload to `out`.
void encode_frame(std::string_view payload, std::string& out);
std::string encode_frame(std::string_view payload);

class frame_decoder {
public:
  enum class status { ok, too_large };

  explicit frame_decoder(size_t max_payload = max_signal_frame)
    : max_payload_(max_payload) {}

  /// Consumes `data`; complete payloads are appended to `frames`.
  /// Returns status::too_large once a header announces more than the limit;
  /// after that the decoder stays failed.
  status feed(const char* data, size_t size, std::vector<std::string>& frames);

  bool failed() const {
    return failed_;
  }
  /// The length the offending header announced.
  uint64_t bad_length() const {
    return bad_length_;
  }
  /// Bytes held for an incomplete frame.
  size_t buffered() const {
    return buf_.size();
  }

private:
  size_t max_payload_;
  std::string buf_;
  bool failed_ = false;
  uint64_t bad_length_ = 0;
};

} // namespace p2proxy
