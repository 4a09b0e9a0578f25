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

frame_head peek_frame(std::string_view buf, size_t max_payload) {
  frame_head h;
  if (buf.size() < 4)
    return h;
  auto b = reinterpret_cast<const unsigned char*>(buf.data());
  h.length = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16)
             | (uint64_t{b[2]} << 8) | uint64_t{b[3]};
  if (h.length > max_payload)
    h.k = frame_head::kind::too_large;
  else if (buf.size() - 4 >= h.length)
    h.k = frame_head::kind::whole;
  return h;
}

frame_decoder::status frame_decoder::feed(const char* data, size_t size,
                                          std::vector<std::string>& frames) {
  if (failed_)
    return status::too_large;
  buf_.append(data, size);
  size_t pos = 0;
  for (;;) {
    auto h = peek_frame(std::string_view{buf_}.substr(pos), max_payload_);
    if (h.k == frame_head::kind::too_large) {
      failed_ = true;
      bad_length_ = h.length;
      buf_.clear();
      return status::too_large;
    }
    if (h.k == frame_head::kind::partial)
      break;
    frames.emplace_back(buf_, pos + 4, h.length);
    pos += 4 + h.length;
  }
  buf_.erase(0, pos);
  return status::ok;
}

} // namespace p2proxy
