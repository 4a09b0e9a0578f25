#include "actors/common/frame_codec.hpp"

#include <gtest/gtest.h>

using namespace p2proxy;

TEST(frame_codec, round_trip_in_one_read) {
  auto wire = encode_frame("hello");
  ASSERT_EQ(wire.size(), 9u);
  EXPECT_EQ(wire.substr(0, 4), std::string("\0\0\0\5", 4));
  frame_decoder dec;
  std::vector<std::string> frames;
  ASSERT_EQ(dec.feed(wire.data(), wire.size(), frames),
            frame_decoder::status::ok);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0], "hello");
  EXPECT_EQ(dec.buffered(), 0u);
}

TEST(frame_codec, split_reads_byte_by_byte) {
  std::string wire = encode_frame("first") + encode_frame("")
                     + encode_frame(std::string(1000, 'x'));
  frame_decoder dec;
  std::vector<std::string> frames;
  for (char c : wire)
    ASSERT_EQ(dec.feed(&c, 1, frames), frame_decoder::status::ok);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0], "first");
  EXPECT_EQ(frames[1], "");
  EXPECT_EQ(frames[2], std::string(1000, 'x'));
}

TEST(frame_codec, coalesced_frames_and_a_partial_tail) {
  std::string wire
    = encode_frame("a") + encode_frame("bb") + encode_frame("ccc");
  frame_decoder dec;
  std::vector<std::string> frames;
  // everything but the last two bytes of the third frame
  dec.feed(wire.data(), wire.size() - 2, frames);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(dec.buffered(), 5u);
  dec.feed(wire.data() + wire.size() - 2, 2, frames);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[2], "ccc");
}

TEST(frame_codec, the_limit_itself_is_accepted) {
  std::string payload(max_signal_frame, 'p');
  auto wire = encode_frame(payload);
  frame_decoder dec;
  std::vector<std::string> frames;
  EXPECT_EQ(dec.feed(wire.data(), wire.size(), frames),
            frame_decoder::status::ok);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].size(), max_signal_frame);
}

TEST(frame_codec, oversize_header_fails_before_the_payload_arrives) {
  std::string header("\x00\x01\x00\x01", 4); // 64 KiB + 1
  frame_decoder dec;
  std::vector<std::string> frames;
  EXPECT_EQ(dec.feed(header.data(), header.size(), frames),
            frame_decoder::status::too_large);
  EXPECT_TRUE(dec.failed());
  EXPECT_EQ(dec.bad_length(), max_signal_frame + 1);
  EXPECT_TRUE(frames.empty());
  // a failed decoder stays failed, even for a valid frame
  auto ok = encode_frame("x");
  EXPECT_EQ(dec.feed(ok.data(), ok.size(), frames),
            frame_decoder::status::too_large);
  EXPECT_TRUE(frames.empty());
}

TEST(frame_codec, frames_before_an_oversize_one_are_delivered) {
  std::string wire = encode_frame("good") + std::string("\xff\xff\xff\xff", 4);
  frame_decoder dec;
  std::vector<std::string> frames;
  EXPECT_EQ(dec.feed(wire.data(), wire.size(), frames),
            frame_decoder::status::too_large);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0], "good");
}

TEST(frame_codec, truncated_frame_is_held_not_delivered) {
  auto wire = encode_frame("truncated");
  frame_decoder dec;
  std::vector<std::string> frames;
  dec.feed(wire.data(), wire.size() - 1, frames);
  EXPECT_TRUE(frames.empty());
  EXPECT_EQ(dec.buffered(), wire.size() - 1);
  std::string header_only = encode_frame("abc").substr(0, 3);
  frame_decoder dec2;
  dec2.feed(header_only.data(), header_only.size(), frames);
  EXPECT_TRUE(frames.empty());
  EXPECT_FALSE(dec2.failed());
}

TEST(frame_codec, peek_frame_reads_one_header) {
  using k = frame_head::kind;
  auto wire = encode_frame("abc");
  EXPECT_EQ(peek_frame(wire.substr(0, 3), 10).k, k::partial);
  auto h = peek_frame(wire.substr(0, 5), 10);
  EXPECT_EQ(h.k, k::partial);
  EXPECT_EQ(h.length, 3u);
  EXPECT_EQ(peek_frame(wire, 10).k, k::whole);
  EXPECT_EQ(peek_frame(wire + "more", 10).k, k::whole);
  EXPECT_EQ(peek_frame(wire, 3).k, k::whole);
  h = peek_frame(wire.substr(0, 4), 2);
  EXPECT_EQ(h.k, k::too_large);
  EXPECT_EQ(h.length, 3u);
}
