// The node's TOML configuration loader (node/config*): any text is read into
// a node_config or refused with a config_error naming the file; anything else
// (another exception, a crash, a hang) is a finding. The input is the whole
// file (no flags byte), as if it were node.toml in a scratch directory that
// holds a token file `network.token` (mode 0600) for `token_file`.
//
// A token_file naming something outside that directory (an absolute path or
// one with "..") is skipped: the loader reads the file it is given, and
// /dev/zero would be an endless read of the fuzzer's own making, not of the
// loader's.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>

#include "node/config.hpp"

using namespace p2proxy;

namespace {

std::string scratch_dir;

bool token_file_escapes(const std::string& text) {
  toml::table root;
  try {
    root = toml::parse(text, std::string{"node.toml"});
  } catch (const toml::parse_error&) {
    return false; // the loader refuses it before reading any file
  }
  auto path = root["signal"]["token_file"].value<std::string>();
  if (!path)
    return false;
  return path->empty() || path->front() == '/'
         || path->find("..") != std::string::npos
         || path->find('\0') != std::string::npos;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/p2proxy-fuzz-config-XXXXXX";
  if (mkdtemp(tmpl) == nullptr)
    std::abort();
  scratch_dir = tmpl;
  auto token = scratch_dir + "/network.token";
  std::ofstream{token} << "fuzz-network-token\n";
  chmod(token.c_str(), 0600);
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text{reinterpret_cast<const char*>(data), size};
  if (token_file_escapes(text))
    return 0;
  try {
    auto cfg = parse_node_config(text, scratch_dir + "/node.toml");
    (void)cfg;
  } catch (const config_error& e) {
    if (e.file != scratch_dir + "/node.toml")
      std::abort();
  }
  return 0;
}
