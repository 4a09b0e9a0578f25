#include "node/config.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include "actors/common/log.hpp"

#include "node/config_reader.hpp"

namespace p2proxy {

namespace {

std::string compose(const std::string& file, int line, const std::string& key,
                    const std::string& reason) {
  std::string out = file;
  if (line > 0)
    out += fmt::format(":{}", line);
  out += ": ";
  if (!key.empty())
    out += key + ": ";
  out += reason;
  return out;
}

} // namespace

config_error::config_error(std::string file_, int line_, std::string key_,
                           std::string what)
  : std::runtime_error(compose(file_, line_, key_, what)),
    file(std::move(file_)), line(line_), key(std::move(key_)),
    reason(std::move(what)) {}

std::string read_token_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error(fmt::format("cannot read the token file {}: {}",
                                         path, std::strerror(errno)));
  // Checked on the open descriptor, as for key files (actors/identity).
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(
      fmt::format("the token file {} is not a regular file", path));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    ::close(fd);
    throw std::runtime_error(fmt::format(
      "the token file {} is accessible by group or others (mode {:04o}); "
      "run `chmod 600 {}`",
      path, st.st_mode & 07777, path));
  }
  std::string text;
  char buf[4096];
  ssize_t n;
  // A token is short; the cap keeps a wrong path from swallowing a big file.
  while ((n = ::read(fd, buf, sizeof(buf))) > 0 && text.size() < 65536)
    text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  constexpr const char* space = " \t\r\n";
  auto first = text.find_first_not_of(space);
  if (first == std::string::npos)
    throw std::runtime_error(fmt::format("the token file {} is empty", path));
  auto last = text.find_last_not_of(space);
  return text.substr(first, last - first + 1);
}

std::string read_admin_token_file(const std::string& path) {
  return read_token_file(path);
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "[::1]")
    return true;
  in_addr a{};
  std::string h{host};
  return ::inet_pton(AF_INET, h.c_str(), &a) == 1
         && (ntohl(a.s_addr) >> 24) == 127;
}

bool parse_duration(std::string_view text, std::chrono::milliseconds& out) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
    ++digits;
  if (digits == 0 || digits == text.size())
    return false;
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, n);
  if (ec != std::errc{} || ptr != text.data() + digits)
    return false;
  auto unit = text.substr(digits);
  uint64_t scale;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60 * 1000;
  else if (unit == "h")
    scale = 60 * 60 * 1000;
  else
    return false;
  using rep = std::chrono::milliseconds::rep;
  if (n > static_cast<uint64_t>(std::numeric_limits<rep>::max()) / scale)
    return false;
  out = std::chrono::milliseconds{static_cast<rep>(n * scale)};
  return true;
}

node_config parse_node_config(const std::string& text,
                              const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw config_error(name, static_cast<int>(e.source().begin.line), "",
                       std::string{e.description()});
  }
  node_config cfg;
  cfg.source = name;
  config_detail::reader r{name, std::filesystem::path{name}.parent_path()};
  r.read(root, cfg);
  return cfg;
}

node_config load_node_config(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw config_error(path, 0, "",
                       fmt::format("cannot read the configuration file: {}",
                                   std::strerror(errno)));
  std::ostringstream buf;
  buf << in.rdbuf();
  auto cfg = parse_node_config(buf.str(), path);
  struct stat st {};
  if (cfg.token_inline && ::stat(path.c_str(), &st) == 0
      && (st.st_mode & S_IROTH) != 0)
    log::warn("config",
              "{}: signal.token: the network token is in a file every local "
              "user can read (mode {:04o}); run `chmod 600 {}` or move it to "
              "a token_file",
              path, st.st_mode & 07777, path);
  return cfg;
}

} // namespace p2proxy
