/// Leveled diagnostics to stderr (RAJIT_LOG), separate so every runtime file can report without owning an output policy.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <string_view>
#include <utility>

namespace rajit::rt {

enum class LogLevel { kError, kWarn, kInfo, kDebug };

/// Receives every message that passes the level filter, without the "rajit: ..." prefix.
using LogSink = std::function<void(LogLevel, std::string_view)>;

/// Writes `msg` as one line to stderr ("rajit: warning: msg"), or hands it to the sink set by
/// set_log_sink(). Thread-safe: lines from concurrent callers never interleave. Throws: nothing.
void log(LogLevel level, std::string_view msg) noexcept;

/// The threshold: messages above it are dropped. Starts from RAJIT_LOG=error|warn|info|debug,
/// default info, so that a first-call compile announces itself instead of looking hung.
LogLevel log_level() noexcept;
void set_log_level(LogLevel level) noexcept;

/// Whether a message at `level` would be written; lets callers skip formatting.
inline bool log_enabled(LogLevel level) noexcept { return level <= log_level(); }

/// Routes messages to `sink` instead of stderr (for tests); nullptr restores stderr.
/// The sink is called under the log mutex, so it must not log itself. Thread-safe.
void set_log_sink(LogSink sink);

/// The prefix that log() writes for `level` ("rajit: warning: "); exposed for tests.
std::string_view log_prefix(LogLevel level) noexcept;

namespace detail {
template <typename... Args>
void log_formatted(LogLevel level, fmt::format_string<Args...> format, Args&&... args) noexcept {
  if (!log_enabled(level)) return;
  try {
    log(level, fmt::format(format, std::forward<Args>(args)...));
  } catch (...) {
    // Formatting can only fail on allocation; a lost diagnostic must not become an error.
  }
}
}  // namespace detail

template <typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) noexcept {
  detail::log_formatted(LogLevel::kError, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_warn(fmt::format_string<Args...> format, Args&&... args) noexcept {
  detail::log_formatted(LogLevel::kWarn, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args) noexcept {
  detail::log_formatted(LogLevel::kInfo, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args) noexcept {
  detail::log_formatted(LogLevel::kDebug, format, std::forward<Args>(args)...);
}

}  // namespace rajit::rt
