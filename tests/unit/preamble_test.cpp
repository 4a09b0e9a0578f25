#include "actors/common/preamble.hpp"

#include <gtest/gtest.h>

#include "actors/common/frame_codec.hpp"

using namespace p2proxy;
using status = preamble_reader::status;

TEST(preamble, whole_preamble_in_one_piece_leaves_no_rest) {
  preamble_reader r;
  auto wire = encode_frame("open");
  ASSERT_EQ(r.feed(wire), status::complete);
  EXPECT_EQ(r.payload(), "open");
  EXPECT_EQ(r.rest(), "");
  EXPECT_EQ(r.taken(), wire.size());
  EXPECT_EQ(r.announced(), 4u);
}

TEST(preamble, byte_by_byte_then_the_rest_arrives_with_the_last_byte) {
  preamble_reader r;
  auto wire = encode_frame("hello");
  for (size_t i = 0; i + 1 < wire.size(); ++i) {
    ASSERT_EQ(r.feed(wire.substr(i, 1)), status::need_more) << i;
    EXPECT_EQ(r.taken(), 1u);
  }
  ASSERT_EQ(r.feed(wire.substr(wire.size() - 1) + "after"), status::complete);
  EXPECT_EQ(r.payload(), "hello");
  EXPECT_EQ(r.rest(), "after");
  EXPECT_EQ(r.taken(), 1u);
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(preamble, split_inside_the_header_and_inside_the_payload) {
  preamble_reader r;
  auto wire = encode_frame(std::string(300, 'p')) + "tail";
  ASSERT_EQ(r.feed(wire.substr(0, 2)), status::need_more);
  EXPECT_EQ(r.announced(), 0u);
  ASSERT_EQ(r.feed(wire.substr(2, 100)), status::need_more);
  EXPECT_EQ(r.announced(), 300u);
  ASSERT_EQ(r.feed(wire.substr(102)), status::complete);
  EXPECT_EQ(r.payload(), std::string(300, 'p'));
  EXPECT_EQ(r.rest(), "tail");
  EXPECT_EQ(r.taken(), 4u + 300 - 102);
}

TEST(preamble, an_empty_payload_is_complete) {
  preamble_reader r;
  ASSERT_EQ(r.feed(encode_frame("") + "x"), status::complete);
  EXPECT_EQ(r.payload(), "");
  EXPECT_EQ(r.rest(), "x");
}

TEST(preamble, the_limit_itself_is_accepted) {
  preamble_reader r{100};
  ASSERT_EQ(r.feed(encode_frame(std::string(100, 'a'))), status::complete);
  EXPECT_EQ(r.payload().size(), 100u);
}

TEST(preamble, one_byte_over_the_limit_fails_before_the_payload_arrives) {
  preamble_reader r{100};
  auto wire = encode_frame(std::string(101, 'a'));
  ASSERT_EQ(r.feed(wire.substr(0, 3)), status::need_more);
  ASSERT_EQ(r.feed(wire.substr(3, 1)), status::oversize);
  EXPECT_EQ(r.announced(), 101u);
  EXPECT_EQ(r.buffered(), 0u);
  // It stays failed and takes nothing more.
  EXPECT_EQ(r.feed(wire.substr(4)), status::oversize);
  EXPECT_EQ(r.taken(), 0u);
}

TEST(preamble, the_default_limit_is_16_kib) {
  preamble_reader ok;
  EXPECT_EQ(ok.feed(encode_frame(std::string(16 * 1024, 'a'))),
            status::complete);
  preamble_reader big;
  EXPECT_EQ(big.feed(encode_frame(std::string(16 * 1024 + 1, 'a'))),
            status::oversize);
  EXPECT_EQ(big.announced(), 16u * 1024 + 1);
}

TEST(preamble, a_huge_announced_length_is_oversize) {
  preamble_reader r;
  ASSERT_EQ(r.feed(std::string("\xff\xff\xff\xff", 4)), status::oversize);
  EXPECT_EQ(r.announced(), 0xffffffffu);
}

TEST(preamble, after_complete_more_bytes_are_not_taken) {
  preamble_reader r;
  ASSERT_EQ(r.feed(encode_frame("a")), status::complete);
  EXPECT_EQ(r.feed("more"), status::complete);
  EXPECT_EQ(r.taken(), 0u);
  EXPECT_EQ(r.payload(), "a");
  EXPECT_EQ(r.rest(), "");
}

TEST(preamble, a_large_rest_is_passed_on_whole) {
  preamble_reader r;
  std::string bulk(1 << 20, 'b');
  ASSERT_EQ(r.feed(encode_frame("x") + bulk), status::complete);
  EXPECT_EQ(r.rest(), bulk);
  EXPECT_EQ(r.taken(), 5u);
}
