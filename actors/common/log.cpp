#include "actors/common/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace p2proxy::log {

namespace {

std::atomic<level> current_level{level::info};
std::mutex out_mtx;

const char* level_name(level lvl) {
  switch (lvl) {
    case level::trace:
      return "TRACE";
    case level::debug:
      return "DEBUG";
    case level::info:
      return "INFO ";
    case level::warn:
      return "WARN ";
    case level::error:
      return "ERROR";
    default:
      return "     ";
  }
}

} // namespace

level current() {
  return current_level.load(std::memory_order_relaxed);
}

void set_level(level lvl) {
  current_level.store(lvl, std::memory_order_relaxed);
}

bool parse_level(std::string_view text, level& out) {
  static constexpr std::pair<std::string_view, level> names[]
    = {{"trace", level::trace}, {"debug", level::debug}, {"info", level::info},
       {"warn", level::warn},   {"error", level::error}, {"off", level::off}};
  for (auto& [name, lvl] : names)
    if (name == text) {
      out = lvl;
      return true;
    }
  return false;
}

void write(level lvl, std::string_view subject, std::string_view text) {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto t = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard<std::mutex> guard{out_mtx};
  fmt::print(stderr, "{}.{:03}Z {} {}: {}\n", ts, ms, level_name(lvl), subject,
             text);
  std::fflush(stderr);
}

} // namespace p2proxy::log
