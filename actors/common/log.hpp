// One line per event, written as "subject verb object":
//   2026-11-25T13:40:00.123Z INFO  signal_link: logged in to 127.0.0.1:7000
// Levels are set by config ([log] level) or --log-level.
#pragma once

#include <atomic>
#include <string_view>

#include <fmt/format.h>

namespace p2proxy::log {

enum class level { trace = 0, debug, info, warn, error, off };

level current();
void set_level(level lvl);
/// Parses "trace|debug|info|warn|error|off"; false when unknown.
bool parse_level(std::string_view text, level& out);

void write(level lvl, std::string_view subject, std::string_view text);

template <class... Ts>
void emit(level lvl, std::string_view subject, fmt::format_string<Ts...> f,
          Ts&&... xs) {
  if (lvl < current())
    return;
  write(lvl, subject, fmt::format(f, std::forward<Ts>(xs)...));
}

template <class... Ts>
void debug(std::string_view s, fmt::format_string<Ts...> f, Ts&&... xs) {
  emit(level::debug, s, f, std::forward<Ts>(xs)...);
}
template <class... Ts>
void info(std::string_view s, fmt::format_string<Ts...> f, Ts&&... xs) {
  emit(level::info, s, f, std::forward<Ts>(xs)...);
}
template <class... Ts>
void warn(std::string_view s, fmt::format_string<Ts...> f, Ts&&... xs) {
  emit(level::warn, s, f, std::forward<Ts>(xs)...);
}
template <class... Ts>
void error(std::string_view s, fmt::format_string<Ts...> f, Ts&&... xs) {
  emit(level::error, s, f, std::forward<Ts>(xs)...);
}

} // namespace p2proxy::log
