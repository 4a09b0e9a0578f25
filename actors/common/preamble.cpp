#include "actors/common/preamble.hpp"

#include <algorithm>

#include "actors/common/frame_codec.hpp"

namespace p2proxy {

preamble_reader::status preamble_reader::feed(std::string_view piece) {
  if (state_ != status::need_more) {
    taken_ = 0;
    return state_;
  }
  auto in = piece.size();
  // Only the preamble's own bytes are copied: a piece may bring the start
  // of a large transfer with it.
  auto take = [&](size_t n) {
    n = std::min(n, piece.size());
    buf_.append(piece.data(), n);
    piece.remove_prefix(n);
  };
  if (buf_.size() < 4)
    take(4 - buf_.size());
  auto h = peek_frame(buf_, max_payload_);
  if (buf_.size() >= 4) {
    announced_ = h.length;
    if (h.k == frame_head::kind::too_large) {
      state_ = status::oversize;
      taken_ = in;
      buf_.clear();
      buf_.shrink_to_fit();
      return state_;
    }
    take(4 + h.length - buf_.size());
    h = peek_frame(buf_, max_payload_);
  }
  taken_ = in - piece.size();
  if (h.k != frame_head::kind::whole)
    return state_; // need_more: the piece is used up
  payload_ = buf_.substr(4);
  buf_.clear();
  buf_.shrink_to_fit();
  rest_.assign(piece.data(), piece.size());
  state_ = status::complete;
  return state_;
}

} // namespace p2proxy
