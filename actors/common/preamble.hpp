// The length-prefixed message that opens a stream (StreamOpen) and the one
// that answers it (StreamOpenResult): a 4-byte big-endian length, then that
// many bytes of payload, then the stream's own bytes. The reader is fed the
// stream's bytes as they arrive (split or coalesced anywhere), holds at most
// one bounded preamble, and hands back the payload and the bytes that came
// after it in the same piece. The length is read by peek_frame
// (frame_codec.hpp), the one place a frame header is parsed.
//
//   preamble_reader r;
//   switch (r.feed(bytes)) {
//     case preamble_reader::status::need_more: return; // all of it was ours
//     case preamble_reader::status::oversize:  refuse(r.announced()); return;
//     case preamble_reader::status::complete:
//       parse(r.payload()); pass_on(r.rest());         // r.taken(): ours
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace p2proxy {

/// Largest StreamOpen or StreamOpenResult payload a node accepts.
constexpr size_t max_preamble = 16 * 1024;

class preamble_reader {
public:
  enum class status { need_more, complete, oversize };

  explicit preamble_reader(size_t max_payload = max_preamble)
    : max_payload_(max_payload) {}

  /// Takes the next bytes of the stream.
  /// - need_more: every byte of `piece` belonged to the preamble;
  /// - complete: payload() is the preamble, rest() the bytes of `piece`
  ///   after it (they belong to whoever reads the stream next);
  /// - oversize: the header announced() more than the limit; nothing more is
  ///   buffered, the stream cannot be resynchronised.
  /// Once complete or oversize, the reader stays so and ignores what it is
  /// fed (taken() is then 0).
  status feed(std::string_view piece);

  status state() const {
    return state_;
  }
  /// Bytes of the last piece fed that belonged to the preamble (for a
  /// reader that returns credit for what it consumed). All of it on
  /// need_more and oversize.
  size_t taken() const {
    return taken_;
  }
  /// The preamble's payload, once complete.
  std::string& payload() {
    return payload_;
  }
  /// The bytes after the preamble in the piece that completed it.
  std::string& rest() {
    return rest_;
  }
  /// The payload length the header announced (0 until the header is in).
  uint64_t announced() const {
    return announced_;
  }
  /// Bytes of an incomplete preamble held (at most 4 + the limit).
  size_t buffered() const {
    return buf_.size();
  }

private:
  size_t max_payload_;
  status state_ = status::need_more;
  std::string buf_;
  std::string payload_;
  std::string rest_;
  size_t taken_ = 0;
  uint64_t announced_ = 0;
};

} // namespace p2proxy
