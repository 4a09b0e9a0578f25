#include "actors/signal/server_trust.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "actors/identity/identity.hpp"

namespace p2proxy {

namespace {

std::string read_stored(const std::string& path) {
  std::ifstream in{path};
  if (!in)
    return {};
  std::string id;
  in >> id;
  return id;
}

// Written to a temporary name and renamed, so a crash never leaves half an
// id that would refuse every server afterwards.
bool store(const std::string& path, const std::string& id, std::string& why) {
  auto tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    why = std::strerror(errno);
    return false;
  }
  auto text = id + "\n";
  auto ok
    = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size())
      && ::fsync(fd) == 0;
  if (!ok)
    why = std::strerror(errno);
  ::close(fd);
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    why = std::strerror(errno);
    ok = false;
  }
  if (!ok)
    ::unlink(tmp.c_str());
  return ok;
}

} // namespace

trust_verdict judge_server(const server_trust& trust, const std::string& server,
                           const std::string& key_id,
                           const std::string& ca_problem) {
  trust_verdict v;
  if (!trust.pinned_id.empty()) {
    if (key_id == trust.pinned_id) {
      v.trusted = true;
      v.how = "pinned";
    } else {
      v.refusal = fmt::format(
        "signaling server {} presented server id {}, expected {} ([signal] "
        "server_id); not logging in",
        server, key_id, trust.pinned_id);
    }
    return v;
  }
  if (ca_problem.empty()) {
    v.trusted = true;
    v.how = "certificate";
    return v;
  }
  if (trust.store_path.empty()) {
    v.refusal = fmt::format(
      "signaling server {} presented server id {}, which is neither pinned "
      "nor verified by a certificate ({}); set [signal] server_id",
      server, key_id, ca_problem);
    return v;
  }
  auto stored = read_stored(trust.store_path);
  if (!stored.empty()) {
    if (stored == key_id) {
      v.trusted = true;
      v.how = "stored";
    } else {
      v.refusal = fmt::format(
        "signaling server {} presented server id {}, expected {} (trusted on "
        "first use, stored in {}); not logging in",
        server, key_id, stored, trust.store_path);
    }
    return v;
  }
  std::string why;
  if (!store(trust.store_path, key_id, why)) {
    v.refusal = fmt::format("cannot store the server id {} in {}: {}", key_id,
                            trust.store_path, why);
    return v;
  }
  v.trusted = true;
  v.first_use = true;
  v.how = "first use";
  return v;
}

} // namespace p2proxy
