// The TLS CHANNEL of the signaling link: a client and a server channel
// wired back to back in memory, as two FRAME CONNECTIONs would drive them.
#include "actors/signal/tls_channel.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace p2proxy;

namespace {

struct pair_of_channels {
  identity server_key = identity::generate();
  std::shared_ptr<tls_server_credentials> cred
    = std::make_shared<tls_server_credentials>(server_key);
  std::unique_ptr<tls_channel> client = tls_channel::client("127.0.0.1");
  std::unique_ptr<tls_channel> server = tls_channel::server(cred);
  std::string to_client_plain, to_server_plain;

  // Moves bytes both ways until neither side has anything to say.
  bool pump() {
    for (int i = 0; i < 20; ++i) {
      auto c2s = client->take_output();
      auto s2c = server->take_output();
      if (c2s.empty() && s2c.empty())
        return true;
      if (!c2s.empty()
          && !server->feed(c2s.data(), c2s.size(), to_server_plain))
        return false;
      if (!s2c.empty()
          && !client->feed(s2c.data(), s2c.size(), to_client_plain))
        return false;
    }
    return true;
  }
};

} // namespace

TEST(tls_channel, handshake_reports_the_server_id_and_one_binding) {
  pair_of_channels p;
  ASSERT_TRUE(p.pump()) << p.client->error() << p.server->error();
  ASSERT_TRUE(p.client->established());
  ASSERT_TRUE(p.server->established());
  EXPECT_EQ(p.client->peer_key_id(), p.server_key.node_id());
  EXPECT_EQ(p.cred->id(), p.server_key.node_id());
  EXPECT_EQ(p.client->channel_binding().size(), 32u);
  EXPECT_EQ(p.client->channel_binding(), p.server->channel_binding());
  // Self-signed: no CA vouches for it.
  EXPECT_FALSE(p.client->ca_problem().empty());
  pair_of_channels q;
  ASSERT_TRUE(q.pump());
  EXPECT_NE(q.client->channel_binding(), p.client->channel_binding());
}

TEST(tls_channel, carries_bytes_both_ways_encrypted) {
  pair_of_channels p;
  ASSERT_TRUE(p.pump());
  std::string secret = "network-token-" + std::string(40000, 'x');
  ASSERT_TRUE(p.client->write(secret));
  auto wire = p.client->take_output();
  EXPECT_EQ(wire.find("network-token-"), std::string::npos);
  ASSERT_TRUE(p.server->feed(wire.data(), wire.size(), p.to_server_plain));
  EXPECT_EQ(p.to_server_plain, secret);
  ASSERT_TRUE(p.server->write("hello"));
  ASSERT_TRUE(p.pump());
  EXPECT_EQ(p.to_client_plain, "hello");
}

TEST(tls_channel, a_flipped_byte_kills_the_channel) {
  pair_of_channels p;
  ASSERT_TRUE(p.pump());
  ASSERT_TRUE(p.server->write("LookupResult"));
  auto wire = p.server->take_output();
  wire[wire.size() - 1] ^= 1;
  EXPECT_FALSE(p.client->feed(wire.data(), wire.size(), p.to_client_plain));
  EXPECT_FALSE(p.client->error().empty());
  EXPECT_TRUE(p.to_client_plain.empty());
  EXPECT_FALSE(p.client->write("more"));
}

TEST(tls_channel, close_notify_is_seen_by_the_peer) {
  pair_of_channels p;
  ASSERT_TRUE(p.pump());
  p.client->close();
  ASSERT_TRUE(p.pump());
  EXPECT_TRUE(p.server->peer_closed());
}

TEST(tls_channel, garbage_instead_of_a_handshake_fails) {
  pair_of_channels p;
  std::string garbage(200, '\x7f');
  std::string plain;
  EXPECT_FALSE(p.server->feed(garbage.data(), garbage.size(), plain));
  EXPECT_NE(p.server->error().find("handshake"), std::string::npos)
    << p.server->error();
}

TEST(tls_channel, a_certificate_for_another_key_is_refused) {
  auto dir = std::filesystem::temp_directory_path()
             / ("p2proxy-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "other.pem").string();
  {
    std::ofstream out{path};
    out << "-----BEGIN CERTIFICATE-----\nnot base64\n"
           "-----END CERTIFICATE-----\n";
  }
  auto key = identity::generate();
  try {
    tls_server_credentials cred{key, path};
    FAIL() << "accepted a certificate that is not for the key";
  } catch (const identity_error& e) {
    EXPECT_NE(std::string{e.what()}.find(path), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(tls_channel, login_signature_input_binds_the_session) {
  EXPECT_EQ(bound_login_challenge("CB", "N", "ID"), "p2proxy-login-v2CBNID");
}
