// Helpers for process-level tests: a child process whose output goes to a
// log file, free loopback ports, bounded polling, a tiny HTTP GET, and a raw
// TCP client for the signaling protocol. Every wait here has a deadline.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "actors/common/frame_codec.hpp"

namespace p2proxy::e2e {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// The p2proxy binary under test: $P2PROXY_BIN, else the one of the same
/// build tree (build/tests/e2e_tests -> build/p2proxy).
inline std::string p2proxy_bin() {
  const char* bin = std::getenv("P2PROXY_BIN");
  if (bin != nullptr && *bin != '\0')
    return bin;
  char self[4096];
  auto n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return "";
  std::string path{self, static_cast<size_t>(n)};
  auto slash = path.rfind('/');
  if (slash == std::string::npos)
    return "";
  path.erase(slash); // .../build/tests
  slash = path.rfind('/');
  if (slash == std::string::npos)
    return "";
  return path.substr(0, slash) + "/p2proxy";
}

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw std::runtime_error(std::string{"socket: "} + std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  socklen_t len = sizeof(sa);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0
      || ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    auto err = std::string{std::strerror(errno)};
    ::close(fd);
    throw std::runtime_error("bind to port 0: " + err);
  }
  ::close(fd);
  return ntohs(sa.sin_port);
}

/// Last `lines` lines of a text file (for failure messages).
inline std::string file_tail(const std::string& path, size_t lines = 40) {
  std::ifstream in{path};
  if (!in)
    return "(cannot read " + path + ")";
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (tail.size() > lines)
      tail.pop_front();
  }
  std::string out;
  for (auto& l : tail)
    out += "  | " + l + "\n";
  return out.empty() ? "  (empty)\n" : out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Polls `pred` every 20 ms until it is true or `timeout` passes.
inline bool wait_until(std::chrono::milliseconds timeout,
                       const std::function<bool()>& pred) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);
  }
}

/// A child process (fork/exec) with stdout and stderr appended to a log
/// file. The child gets SIGKILL if the test process dies, so nothing
/// outlives a crashed test. The destructor kills and reaps it.
class child_process {
public:
  child_process() = default;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    kill_and_reap();
  }

  void start(const std::vector<std::string>& args, const std::string& log) {
    kill_and_reap();
    log_path_ = log;
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    auto parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error(std::string{"fork: "} + std::strerror(errno));
    if (pid == 0) {
      // Only async-signal-safe calls from here on.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(126);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (fd < 0 || devnull < 0)
        ::_exit(125);
      ::dup2(devnull, 0);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    exited_ = false;
  }

  /// True while the process runs (reaps it when it has ended).
  bool alive() {
    if (pid_ <= 0 || exited_)
      return false;
    int status = 0;
    auto r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
      return false;
    }
    return r == 0;
  }

  /// How it ended, for messages.
  std::string exit_text() {
    if (alive())
      return "still running";
    if (pid_ <= 0)
      return "never started";
    if (WIFEXITED(status_))
      return "exited with status " + std::to_string(WEXITSTATUS(status_));
    if (WIFSIGNALED(status_))
      return "killed by signal " + std::to_string(WTERMSIG(status_));
    return "ended";
  }

  void kill_and_reap() {
    if (pid_ <= 0)
      return;
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      status_ = status;
      exited_ = true;
    }
    pid_ = -1;
  }

  pid_t pid() const {
    return pid_;
  }
  const std::string& log_path() const {
    return log_path_;
  }
  std::string log_tail(size_t lines = 40) const {
    return file_tail(log_path_, lines);
  }

private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string log_path_;
};

/// GET http://127.0.0.1:port/path; nullopt when the port does not answer.
/// Fills `code` with the HTTP status.
inline std::optional<std::string>
http_get(uint16_t port, const std::string& path, int* code = nullptr) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(3, 0);
  cli.set_write_timeout(3, 0);
  auto res = cli.Get(path.c_str());
  if (!res)
    return std::nullopt;
  if (code != nullptr)
    *code = res->status;
  return res->body;
}

/// Moves the first whole frame (4-byte big-endian length, then payload)
/// out of `buf` into `payload`; false while the frame is incomplete.
inline bool take_frame(std::string& buf, std::string& payload) {
  if (buf.size() < 4)
    return false;
  auto* p = reinterpret_cast<const unsigned char*>(buf.data());
  uint32_t len = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16)
                 | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  if (buf.size() < 4 + size_t{len})
    return false;
  payload = buf.substr(4, len);
  buf.erase(0, 4 + size_t{len});
  return true;
}

/// A raw TCP connection to the signaling server that speaks frames.
/// `source` picks the local loopback address (127.0.0.0/8 all reaches
/// 127.0.0.1), so tests can come from distinct addresses.
class raw_conn {
public:
  enum class result { frame, closed, timeout };

  raw_conn() = default;
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;
  ~raw_conn() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  /// Connects to 127.0.0.1:port from `source`; "" on success, else why not.
  std::string connect(uint16_t port, const std::string& source) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      return std::string{"socket: "} + std::strerror(errno);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &local.sin_addr) != 1)
      return "bad source address " + source;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
      return "bind " + source + ": " + std::strerror(errno);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
      return "connect to 127.0.0.1:" + std::to_string(port) + ": "
             + std::strerror(errno);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return {};
  }

  /// Sends all of `bytes`; false if the peer has gone (EPIPE, ECONNRESET).
  bool send_raw(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      auto n
        = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        last_error_ = std::strerror(errno);
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  bool send_frame(const std::string& payload) {
    return send_raw(encode_frame(payload));
  }

  /// Waits up to `timeout` for one whole frame. `closed` means EOF or a
  /// reset (why in last_error()); bytes of a partial frame stay buffered.
  result read_frame(std::chrono::milliseconds timeout, std::string& payload) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      if (take_frame(buf_, payload))
        return result::frame;
      if (eof_)
        return result::closed;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - steady::now());
      if (left.count() <= 0)
        return result::timeout;
      pollfd pfd{fd_, POLLIN, 0};
      auto r = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        continue; // the deadline check above ends it
      char tmp[16384];
      auto n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<size_t>(n));
      } else if (n == 0) {
        eof_ = true;
        last_error_ = "end of stream";
      } else if (errno != EINTR && errno != EAGAIN) {
        eof_ = true;
        last_error_ = std::strerror(errno);
      }
    }
  }

  /// Reads until the server closes the connection or `timeout` passes;
  /// whole frames seen on the way are appended to `frames`.
  bool wait_closed(std::chrono::milliseconds timeout,
                   std::vector<std::string>* frames = nullptr) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - steady::now());
      if (left.count() < 0)
        left = 0ms;
      std::string payload;
      switch (read_frame(left, payload)) {
        case result::frame:
          if (frames != nullptr)
            frames->push_back(std::move(payload));
          break;
        case result::closed:
          return true;
        case result::timeout:
          return false;
      }
    }
  }

  const std::string& last_error() const {
    return last_error_;
  }
  int fd() const {
    return fd_;
  }

private:
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
  std::string last_error_;
};

} // namespace p2proxy::e2e
