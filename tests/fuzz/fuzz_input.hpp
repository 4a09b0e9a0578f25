// How a harness reads its input: one flags byte, then records that say which
// way a piece travels and how long it is, so the fuzzer mutates the split
// points of a byte stream (where the socket cut it) as well as its bytes.
//
//   input   = flags record*
//   record  = dir(1 byte: bit 0 = direction) length(2 bytes, big-endian) data
//
// A record whose length runs past the input takes what is left. Seeds are
// written by tests/fuzz/make_corpus.py in this layout.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace p2proxy::fuzz {

struct piece {
  bool dir = false; // false: the first direction (client → server), true: back
  std::string_view data;
};

struct input {
  uint8_t flags = 0;
  std::vector<piece> pieces;
};

inline input split_input(const uint8_t* data, size_t size) {
  input in;
  if (size == 0)
    return in;
  in.flags = data[0];
  size_t i = 1;
  while (i < size) {
    piece p;
    p.dir = (data[i] & 1) != 0;
    ++i;
    size_t len = 0;
    if (i + 2 <= size) {
      len = (size_t{data[i]} << 8) | size_t{data[i + 1]};
      i += 2;
    } else {
      i = size;
    }
    len = std::min(len, size - i);
    p.data = std::string_view{reinterpret_cast<const char*>(data + i), len};
    i += len;
    in.pieces.push_back(p);
  }
  return in;
}

/// Every piece, concatenated (the byte stream as sent).
inline std::string joined(const input& in) {
  std::string out;
  for (auto& p : in.pieces)
    out.append(p.data);
  return out;
}

/// The same stream with every run of pieces going the same way joined into
/// one piece: a streaming parser must give the same output for it, whatever
/// the socket's cuts were. `storage` owns the joined bytes.
inline input merged(const input& in, std::vector<std::string>& storage) {
  storage.clear();
  std::vector<bool> dirs;
  for (auto& p : in.pieces) {
    if (dirs.empty() || dirs.back() != p.dir) {
      dirs.push_back(p.dir);
      storage.emplace_back();
    }
    storage.back().append(p.data);
  }
  input out;
  out.flags = in.flags;
  for (size_t i = 0; i < dirs.size(); ++i)
    out.pieces.push_back(piece{dirs[i], storage[i]});
  return out;
}

/// A broken invariant: abort so libFuzzer keeps the input.
[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  __builtin_abort();
}

#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond))                                                               \
      ::p2proxy::fuzz::broken(#cond " (" __FILE__ ")");                        \
  } while (false)

} // namespace p2proxy::fuzz
