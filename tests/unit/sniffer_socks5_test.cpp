#include "actors/channel/protocol/socks5_sniffer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace p2proxy;

namespace {

std::string bytes(std::initializer_list<int> xs) {
  std::string s;
  for (auto x : xs)
    s += static_cast<char>(x);
  return s;
}

std::string connect_domain(const std::string& name, uint16_t port,
                           int cmd = 1) {
  auto s = bytes({5, cmd, 0, 3, static_cast<int>(name.size())});
  s += name;
  s += static_cast<char>(port >> 8);
  s += static_cast<char>(port & 0xff);
  return s;
}

const std::string greeting = bytes({5, 2, 0, 2}); // no-auth, user/pass
const std::string selected = bytes({5, 0});

std::string reply(int code) {
  return bytes({5, code, 0, 1, 0, 0, 0, 0, 0, 0});
}

// Feeds in one piece or byte by byte; the replies of every call are
// concatenated (the method selection comes mid-sniff).
sniff_result run(const std::string& input, bool bytewise) {
  socks5_sniffer s;
  sniff_result total;
  auto step = [&](std::string_view piece) {
    auto r = s.feed(piece);
    total.reply += r.reply;
    total.state = r.state;
    total.error = r.error;
    total.resource = r.resource;
    total.forward += r.forward;
    total.reason = r.reason;
  };
  if (!bytewise) {
    step(input);
    return total;
  }
  for (size_t i = 0; i < input.size(); ++i) {
    step(std::string_view{input}.substr(i, 1));
    if (total.state == sniff_state::done)
      total.forward += input.substr(i + 1);
    if (total.state != sniff_state::need_more)
      break;
  }
  return total;
}

struct socks_case {
  const char* name;
  std::string input;
  sniff_state state;
  sniff_error error;
  std::string resource;
  std::string reply; // every byte the client gets
  std::string forward;
};

std::vector<socks_case> cases() {
  return {
    {"connect_domain", greeting + connect_domain("cam1", 554),
     sniff_state::done, sniff_error::none, "cam1", selected, ""},
    {"lowercase_and_localhost",
     greeting + connect_domain("NVR-Web.localhost.", 80), sniff_state::done,
     sniff_error::none, "nvr-web", selected, ""},
    {"optimistic_data", greeting + connect_domain("web", 80) + "GET / HTTP/1.1",
     sniff_state::done, sniff_error::none, "web", selected, "GET / HTTP/1.1"},
    {"greeting_only", greeting, sniff_state::need_more, sniff_error::none, "",
     selected, ""},
    {"no_acceptable_method", bytes({5, 1, 2}), sniff_state::failed,
     sniff_error::unsupported, "", bytes({5, 0xff}), ""},
    {"zero_methods", bytes({5, 0}), sniff_state::failed,
     sniff_error::unsupported, "", bytes({5, 0xff}), ""},
    {"bad_version", bytes({0x47, 0x45, 0x54}), sniff_state::failed,
     sniff_error::bad_request, "", "", ""},
    {"socks4", bytes({4, 1, 0, 80, 1, 2, 3, 4, 0}), sniff_state::failed,
     sniff_error::unsupported, "", bytes({0, 0x5b, 0, 0, 0, 0, 0, 0}), ""},
    {"bind", greeting + connect_domain("cam1", 554, 2), sniff_state::failed,
     sniff_error::unsupported, "", selected + reply(7), ""},
    {"udp_associate", greeting + connect_domain("cam1", 554, 3),
     sniff_state::failed, sniff_error::unsupported, "", selected + reply(7),
     ""},
    {"ipv4", greeting + bytes({5, 1, 0, 1, 127, 0, 0, 1, 0, 80}),
     sniff_state::failed, sniff_error::unsupported, "", selected + reply(8),
     ""},
    {"ipv6",
     greeting + bytes({5, 1, 0, 4}) + std::string(16, '\0') + bytes({0, 80}),
     sniff_state::failed, sniff_error::unsupported, "", selected + reply(8),
     ""},
    {"unknown_atyp", greeting + bytes({5, 1, 0, 9}), sniff_state::failed,
     sniff_error::unsupported, "", selected + reply(8), ""},
    {"bad_request_version", greeting + bytes({4, 1, 0, 3}), sniff_state::failed,
     sniff_error::bad_request, "", selected + reply(1), ""},
    {"empty_name", greeting + connect_domain("", 80), sniff_state::failed,
     sniff_error::no_resource, "", selected + reply(4), ""},
    {"bad_name", greeting + connect_domain("a b", 80), sniff_state::failed,
     sniff_error::no_resource, "", selected + reply(4), ""},
  };
}

} // namespace

TEST(socks5_sniffer, table_one_shot_equals_byte_by_byte) {
  for (auto& c : cases()) {
    SCOPED_TRACE(c.name);
    for (auto bytewise : {false, true}) {
      SCOPED_TRACE(bytewise ? "byte by byte" : "one shot");
      auto r = run(c.input, bytewise);
      EXPECT_EQ(r.state, c.state);
      EXPECT_EQ(r.error, c.error);
      EXPECT_EQ(r.resource, c.resource);
      EXPECT_EQ(r.reply, c.reply);
      EXPECT_EQ(r.forward, c.forward);
      if (c.state == sniff_state::failed) {
        EXPECT_FALSE(r.reason.empty());
      }
    }
  }
}

TEST(socks5_sniffer, full_handshake_step_by_step) {
  socks5_sniffer s;
  auto r = s.feed(greeting);
  EXPECT_EQ(r.state, sniff_state::need_more);
  EXPECT_EQ(r.reply, selected);
  EXPECT_EQ(s.timeout_reply(), reply(1)); // the client waits for a reply now
  r = s.feed(connect_domain("cam1", 8554));
  ASSERT_EQ(r.state, sniff_state::done);
  EXPECT_EQ(r.resource, "cam1");
  EXPECT_EQ(r.reply, "");
  EXPECT_EQ(s.requested_port(), 8554);
  // The CHANNEL answers once the tunnel is up, or with the failure.
  EXPECT_EQ(socks5_reply(socks5_reply_code::succeeded), reply(0));
  EXPECT_EQ(s.failure_reply(open_failure::denied, ""), reply(2));
  EXPECT_EQ(s.failure_reply(open_failure::unknown_resource, ""), reply(4));
  EXPECT_EQ(s.failure_reply(open_failure::peer_unreachable, ""), reply(4));
  EXPECT_EQ(s.failure_reply(open_failure::target_unreachable, ""), reply(4));
  EXPECT_EQ(s.failure_reply(open_failure::target_refused, ""), reply(5));
  EXPECT_EQ(s.failure_reply(open_failure::overloaded, ""), reply(1));
  EXPECT_EQ(s.failure_reply(open_failure::internal, ""), reply(1));
}

TEST(socks5_sniffer, reasons_and_timeouts) {
  socks5_sniffer fresh;
  EXPECT_EQ(fresh.timeout_reply(), ""); // nothing answered yet: just close
  EXPECT_EQ(run(greeting + connect_domain("cam1", 554, 2), false).reason,
            "SOCKS5 command 2 (BIND) is not supported: CONNECT only");
  EXPECT_EQ(
    run(greeting + bytes({5, 1, 0, 1, 127, 0, 0, 1, 0, 80}), false).reason,
    "SOCKS5 request for an IPv4 address: ask for a resource name "
    "instead");
  EXPECT_EQ(run(bytes({5, 1, 2}), false).reason,
            "the client offers no 'no authentication' method");
}

TEST(socks5_sniffer, waits_for_the_whole_request_before_answering) {
  socks5_sniffer s;
  s.feed(greeting);
  auto r = s.feed(bytes({5, 2, 0, 1, 127, 0}));
  EXPECT_EQ(r.state, sniff_state::need_more);
  EXPECT_EQ(r.reply, "");
  r = s.feed(bytes({0, 1, 0, 80}));
  EXPECT_EQ(r.state, sniff_state::failed);
  EXPECT_EQ(r.reply, reply(7));
}
