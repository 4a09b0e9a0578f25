#include "actors/server/name_owners.hpp"

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "actors/identity/identity.hpp"

namespace p2proxy {

namespace {

std::runtime_error os_error(const std::string& what, const std::string& path) {
  return std::runtime_error(
    fmt::format("{} {}: {}", what, path, std::strerror(errno)));
}

// Writes all of `data` to `fd`, retrying short writes.
bool write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

} // namespace

name_owners::name_owners(std::string state_dir) : dir_(std::move(state_dir)) {}

std::string name_owners::file() const {
  return dir_.empty() ? std::string{} : dir_ + "/owners.toml";
}

void name_owners::load() {
  if (dir_.empty())
    return;
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    throw os_error("cannot create the state directory", dir_);
  struct stat sb {};
  if (::stat(dir_.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode))
    throw std::runtime_error(
      fmt::format("the state directory {} is not a directory", dir_));
  auto path = file();
  if (::access(path.c_str(), F_OK) != 0)
    return; // a first start: nobody owns anything yet
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw std::runtime_error(
      fmt::format("{}:{}: {}", path, e.source().begin.line, e.description()));
  }
  std::map<std::string, std::string> owners;
  if (auto table = root["owners"].as_table()) {
    for (auto& [name, id] : *table) {
      auto text = id.value<std::string>();
      if (!text || !looks_like_node_id(*text))
        throw std::runtime_error(
          fmt::format("{}:{}: the owner of '{}' is not a node id", path,
                      id.source().begin.line, name.str()));
      owners.emplace(std::string{name.str()}, *text);
    }
  }
  owners_ = std::move(owners);
}

std::optional<std::string> name_owners::owner(const std::string& name) const {
  auto i = owners_.find(name);
  if (i == owners_.end())
    return std::nullopt;
  return i->second;
}

void name_owners::set(const std::string& name, const std::string& id) {
  owners_[name] = id;
}

void name_owners::save() const {
  if (dir_.empty())
    return;
  toml::table owners;
  for (auto& [name, id] : owners_)
    owners.insert_or_assign(name, id);
  toml::table root;
  root.insert_or_assign("owners", std::move(owners));
  std::ostringstream text;
  text << "# Export name owners of a p2proxy signaling server: the first node\n"
          "# that registered each name. Written by the server; edit it only\n"
          "# while the server is stopped (or move names with --names).\n"
       << root << "\n";
  auto path = file();
  auto tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    throw os_error("cannot write", tmp);
  bool ok = write_all(fd, text.str()) && ::fsync(fd) == 0;
  auto saved_errno = errno;
  ::close(fd);
  if (!ok) {
    errno = saved_errno;
    auto err = os_error("cannot write", tmp);
    ::unlink(tmp.c_str());
    throw err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = os_error("cannot replace", path);
    ::unlink(tmp.c_str());
    throw err;
  }
  // The rename itself is durable only once the directory is.
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

} // namespace p2proxy
