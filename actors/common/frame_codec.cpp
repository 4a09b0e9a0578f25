#include "actors/common/frame_codec.hpp"

namespace p2proxy {

void encode_frame(std::string_view payload, std::string& out) {
  auto n = static_cast<uint32_t>(payload.size());
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out.append(payload.data(), payload.size());
}

std::string encode_frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 4);
  encode_frame(payload, out);
  return out;
}

frame_decoder::status frame_decoder::feed(const char* data, size_t size,
                                          std::vector<std::string>& frames) {
  if (failed_)
    return status::too_large;
  buf_.append(data, size);
  size_t pos = 0;
  while (buf_.size() - pos >= 4) {
    auto b = reinterpret_cast<const unsigned char*>(buf_.data() + pos);
    uint64_t n = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16)
                 | (uint64_t{b[2]} << 8) | uint64_t{b[3]};
    if (n > max_payload_) {
      failed_ = true;
      bad_length_ = n;
      buf_.clear();
      return status::too_large;
    }
    if (buf_.size() - pos - 4 < n)
      break;
    frames.emplace_back(buf_, pos + 4, n);
    pos += 4 + n;
  }
  buf_.erase(0, pos);
  return status::ok;
}

} // namespace p2proxy
