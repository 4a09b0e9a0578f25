// Network token files are secrets: refused when group or others can read
// them, the way key files are (node/config.hpp).
#include "node/config.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace p2proxy;

namespace {

std::string token_file(const char* name, const char* text, mode_t mode) {
  auto dir = std::filesystem::temp_directory_path()
             / ("p2proxy-token-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / name).string();
  std::ofstream{path} << text;
  ::chmod(path.c_str(), mode);
  return path;
}

} // namespace

TEST(token_file, mode_0600_is_read_and_trimmed) {
  EXPECT_EQ(read_token_file(token_file("ok", " s3cret\n", 0600)), "s3cret");
}

TEST(token_file, readable_by_others_is_refused_with_a_chmod_hint) {
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    auto path = token_file("loose", "s3cret\n", mode);
    try {
      read_token_file(path);
      FAIL() << "mode " << std::oct << mode << " was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string{e.what()}.find("chmod 600 " + path),
                std::string::npos)
        << e.what();
    }
  }
}

TEST(token_file, empty_and_missing_files_are_errors) {
  EXPECT_THROW(read_token_file(token_file("empty", " \n", 0600)),
               std::runtime_error);
  EXPECT_THROW(read_token_file("/nonexistent/p2proxy.token"),
               std::runtime_error);
}
