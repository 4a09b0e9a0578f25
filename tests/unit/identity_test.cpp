#include "actors/identity/identity.hpp"

#include <filesystem>
#include <fstream>
#include <string>

#include <sys/stat.h>

#include <gtest/gtest.h>

using namespace p2proxy;

namespace {

// Each test gets its own directory so parallel runs never share key files.
struct identity_files : ::testing::Test {
  std::filesystem::path dir;

  void SetUp() override {
    char tmpl[] = "/tmp/p2proxy-identity-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    std::filesystem::remove_all(dir);
  }
  std::string path(const char* name) const {
    return (dir / name).string();
  }
  void write(const std::string& p, const std::string& text, mode_t mode) {
    std::ofstream{p} << text;
    ASSERT_EQ(chmod(p.c_str(), mode), 0);
  }
};

std::string load_error(const std::string& p) {
  try {
    identity::load(p);
  } catch (const identity_error& e) {
    return e.what();
  }
  return "(no error)";
}

} // namespace

TEST(base32, rfc4648_vectors_lowercase_unpadded) {
  EXPECT_EQ(base32_encode(""), "");
  EXPECT_EQ(base32_encode("f"), "my");
  EXPECT_EQ(base32_encode("fo"), "mzxq");
  EXPECT_EQ(base32_encode("foo"), "mzxw6");
  EXPECT_EQ(base32_encode("foob"), "mzxw6yq");
  EXPECT_EQ(base32_encode("fooba"), "mzxw6ytb");
  EXPECT_EQ(base32_encode("foobar"), "mzxw6ytboi");
}

TEST(sha256, known_vector) {
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  auto d = sha256("abc");
  ASSERT_EQ(d.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(d[0]), 0xba);
  EXPECT_EQ(static_cast<unsigned char>(d[31]), 0xad);
}

TEST(identity, generated_node_id_is_52_base32_chars_of_the_public_key) {
  auto id = identity::generate();
  EXPECT_EQ(id.node_id().size(), 52u);
  EXPECT_TRUE(looks_like_node_id(id.node_id()));
  for (char c : id.node_id())
    EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) << c;
  EXPECT_EQ(id.node_id(), node_id_from_spki(id.public_key()));
  EXPECT_NE(id.node_id(), identity::generate().node_id());
}

TEST(identity, looks_like_node_id_rejects_wrong_shapes) {
  EXPECT_FALSE(looks_like_node_id(""));
  EXPECT_FALSE(looks_like_node_id("*"));
  EXPECT_FALSE(looks_like_node_id(std::string(51, 'a')));
  EXPECT_FALSE(looks_like_node_id(std::string(53, 'a')));
  EXPECT_FALSE(looks_like_node_id(std::string(51, 'a') + "1"));
  EXPECT_FALSE(looks_like_node_id(std::string(51, 'a') + "A"));
  EXPECT_TRUE(looks_like_node_id(std::string(52, 'a')));
}

TEST(identity, sign_verify_round_trip) {
  auto id = identity::generate();
  auto msg = login_challenge("nonce-123", id.node_id());
  auto sig = id.sign(msg);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(verify_signature(id.public_key(), msg, sig));
}

TEST(identity, tampering_or_another_key_fails_verification) {
  auto id = identity::generate();
  auto other = identity::generate();
  std::string msg = "hello";
  auto sig = id.sign(msg);
  EXPECT_FALSE(verify_signature(id.public_key(), "hellp", sig));
  auto bad_sig = sig;
  bad_sig[10] ^= 0x01;
  EXPECT_FALSE(verify_signature(id.public_key(), msg, bad_sig));
  EXPECT_FALSE(verify_signature(other.public_key(), msg, sig));
  EXPECT_FALSE(verify_signature(id.public_key(), msg, ""));
  EXPECT_FALSE(verify_signature(id.public_key(), msg, sig.substr(0, 63)));
}

TEST(identity, garbage_public_key_fails_without_throwing) {
  auto id = identity::generate();
  auto sig = id.sign("x");
  EXPECT_FALSE(verify_signature("", "x", sig));
  EXPECT_FALSE(verify_signature("garbage", "x", sig));
  EXPECT_FALSE(verify_signature(std::string(44, '\0'), "x", sig));
  auto truncated = id.public_key().substr(0, id.public_key().size() - 1);
  EXPECT_FALSE(verify_signature(truncated, "x", sig));
}

TEST(identity, login_challenge_concatenates_prefix_nonce_and_id) {
  EXPECT_EQ(login_challenge("N", "ID"), "p2proxy-login-v1NID");
}

TEST_F(identity_files, save_load_round_trip_keeps_the_id_and_mode_0600) {
  auto id = identity::generate();
  auto p = path("node.key");
  id.save(p);
  struct stat st {};
  ASSERT_EQ(stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = identity::load(p);
  EXPECT_EQ(loaded.node_id(), id.node_id());
  EXPECT_EQ(loaded.public_key(), id.public_key());
  // The loaded key signs for the same identity.
  EXPECT_TRUE(verify_signature(id.public_key(), "m", loaded.sign("m")));
}

TEST_F(identity_files, save_refuses_to_overwrite) {
  auto p = path("node.key");
  auto first = identity::generate();
  first.save(p);
  EXPECT_THROW(identity::generate().save(p), identity_error);
  EXPECT_EQ(identity::load(p).node_id(), first.node_id());
}

TEST_F(identity_files, load_refuses_a_key_readable_by_others) {
  auto p = path("node.key");
  identity::generate().save(p);
  ASSERT_EQ(chmod(p.c_str(), 0644), 0);
  auto msg = load_error(p);
  EXPECT_NE(msg.find("chmod 600 " + p), std::string::npos) << msg;
}

TEST_F(identity_files, load_of_garbage_names_the_file) {
  auto p = path("garbage.key");
  write(p, "this is not a key\n", 0600);
  auto msg = load_error(p);
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("p2proxy keygen"), std::string::npos) << msg;
}

TEST_F(identity_files, load_of_a_missing_file_says_how_to_create_one) {
  auto p = path("missing.key");
  auto msg = load_error(p);
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("p2proxy keygen --out " + p), std::string::npos) << msg;
}

TEST_F(identity_files, load_or_create_creates_once_then_loads) {
  auto p = path("node.key");
  bool created = false;
  auto a = identity::load_or_create(p, &created);
  EXPECT_TRUE(created);
  auto b = identity::load_or_create(p, &created);
  EXPECT_FALSE(created);
  EXPECT_EQ(a.node_id(), b.node_id());
}
