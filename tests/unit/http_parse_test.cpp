// The admin port's request-head parser: its limits answer with the right
// status as soon as the input proves them broken, and it reads what clients
// (curl, urllib, cpp-httplib) send.
#include "actors/admin/http_parse.hpp"

#include <string>

#include <gtest/gtest.h>

using namespace p2proxy::http;
using namespace p2proxy::http::detail;

namespace {

head_state parse(const std::string& in, parsed_head& head,
                 front_limits limits = {}) {
  return parse_head(in, limits, head);
}

TEST(http_parse, reads_a_request_with_query_and_headers) {
  parsed_head h;
  std::string in = "GET /v1/debug/pump/n%2D1?resource=echo&bytes=10+1 "
                   "HTTP/1.1\r\nHost: x\r\nAuthorization:  Bearer t \r\n"
                   "Content-Length: 3\r\n\r\nabcNEXT";
  ASSERT_EQ(parse(in, h), head_state::complete);
  EXPECT_EQ(h.req.method, "GET");
  EXPECT_EQ(h.req.path, "/v1/debug/pump/n-1");
  ASSERT_NE(h.req.param("bytes"), nullptr);
  EXPECT_EQ(*h.req.param("bytes"), "10 1");
  ASSERT_NE(h.req.header("authorization"), nullptr);
  EXPECT_EQ(*h.req.header("authorization"), "Bearer t");
  EXPECT_EQ(h.content_length, 3u);
  EXPECT_EQ(in.substr(h.head_bytes), "abcNEXT");
  EXPECT_TRUE(h.keep_alive);
}

TEST(http_parse, waits_for_the_rest_of_a_head) {
  parsed_head h;
  EXPECT_EQ(parse("GET /v1/status HTTP/1.1\r\nHost: x\r\n", h),
            head_state::incomplete);
}

TEST(http_parse, refuses_too_many_fields_with_431) {
  std::string in = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i)
    in += "X-a: b\r\n";
  parsed_head h;
  ASSERT_EQ(parse(in, h), head_state::refused);
  EXPECT_EQ(h.error_status, 431);
}

TEST(http_parse, refuses_a_long_head_before_it_ends) {
  front_limits lim;
  lim.max_header_fields = 1000000;
  std::string in = "GET / HTTP/1.1\r\n";
  while (in.size() <= lim.max_head_bytes)
    in += "X-a: b\r\n";
  parsed_head h;
  ASSERT_EQ(parse(in, h, lim), head_state::refused);
  EXPECT_EQ(h.error_status, 431);
}

TEST(http_parse, refuses_a_long_request_line_with_414) {
  parsed_head h;
  ASSERT_EQ(parse("GET /" + std::string(9000, 'a'), h), head_state::refused);
  EXPECT_EQ(h.error_status, 414);
}

TEST(http_parse, refuses_a_large_body_with_413) {
  parsed_head h;
  ASSERT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 131072\r\n\r\n", h),
            head_state::refused);
  EXPECT_EQ(h.error_status, 413);
}

TEST(http_parse, refuses_garbage_with_400) {
  parsed_head h;
  ASSERT_EQ(parse("\x16\x03\x01 hello\r\n\r\n", h), head_state::refused);
  EXPECT_EQ(h.error_status, 400);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nno colon\r\n\r\n", h),
            head_state::refused);
  EXPECT_EQ(h.error_status, 400);
}

TEST(http_parse, http_1_0_and_connection_close_end_the_connection) {
  parsed_head h;
  ASSERT_EQ(parse("GET / HTTP/1.0\r\n\r\n", h), head_state::complete);
  EXPECT_FALSE(h.keep_alive);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", h),
            head_state::complete);
  EXPECT_FALSE(h.keep_alive);
}

TEST(http_parse, compares_tokens) {
  EXPECT_TRUE(equal_in_constant_time("secret", "secret"));
  EXPECT_FALSE(equal_in_constant_time("secret", "secreT"));
  EXPECT_FALSE(equal_in_constant_time("secret", "secretsecret"));
  EXPECT_FALSE(equal_in_constant_time("secret", ""));
  EXPECT_FALSE(equal_in_constant_time("secret", "sec"));
}

TEST(http_parse, serializes_an_answer) {
  response res{405, "application/json", "{}", {{"Allow", "GET, HEAD"}}};
  EXPECT_EQ(serialize(res, false, true),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: "
            "application/json\r\nContent-Length: 2\r\nAllow: GET, "
            "HEAD\r\nConnection: keep-alive\r\n\r\n{}");
  EXPECT_EQ(serialize(res, true, false).find("{}"), std::string::npos);
}

} // namespace
