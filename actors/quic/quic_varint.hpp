// QUIC's variable-length integer (RFC 9000, section 16): 1, 2, 4 or 8 bytes,
// the two high bits of the first byte saying which. Every QUIC DATAGRAM of
// the project starts with one: the flow it belongs to.
#pragma once

#include <cstddef>
#include <cstdint>

namespace p2proxy {

/// The largest value a varint holds (2^62 - 1).
inline constexpr uint64_t max_varint = (uint64_t{1} << 62) - 1;

/// Bytes the varint of `v` takes (v <= max_varint).
constexpr size_t varint_size(uint64_t v) {
  return v < 64 ? 1 : v < 16384 ? 2 : v < (uint64_t{1} << 30) ? 4 : 8;
}

/// Writes the varint of `v` (v <= max_varint) to `out`, which has room for
/// varint_size(v) bytes; returns that size.
inline size_t put_varint(uint8_t* out, uint64_t v) {
  auto n = varint_size(v);
  uint8_t prefix = n == 1 ? 0x00 : n == 2 ? 0x40 : n == 4 ? 0x80 : 0xc0;
  for (size_t i = 0; i < n; ++i)
    out[i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
  out[0] = static_cast<uint8_t>((out[0] & 0x3f) | prefix);
  return n;
}

/// Reads a varint from the front of [data, data + size): its value in `v`
/// and its length as the result, or 0 if the bytes end inside it.
inline size_t get_varint(const uint8_t* data, size_t size, uint64_t& v) {
  if (size == 0)
    return 0;
  size_t n = size_t{1} << (data[0] >> 6);
  if (size < n)
    return 0;
  v = data[0] & 0x3f;
  for (size_t i = 1; i < n; ++i)
    v = (v << 8) | data[i];
  return n;
}

} // namespace p2proxy
