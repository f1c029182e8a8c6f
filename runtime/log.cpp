/// Implementation of the stderr logger and its test sink.
#include "runtime/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace rajit::rt {
namespace {

LogLevel level_from_env() noexcept {
  const char* env = std::getenv("RAJIT_LOG");
  if (env == nullptr || *env == '\0') return LogLevel::kInfo;
  const std::string_view v(env);
  if (v == "error") return LogLevel::kError;
  if (v == "warn" || v == "warning") return LogLevel::kWarn;
  if (v == "info") return LogLevel::kInfo;
  if (v == "debug") return LogLevel::kDebug;
  std::fprintf(stderr, "rajit: warning: ignoring RAJIT_LOG=%s (expected error|warn|info|debug)\n",
               env);
  return LogLevel::kInfo;
}

struct LogState {
  std::atomic<int> level{static_cast<int>(level_from_env())};
  std::mutex mutex;
  LogSink sink;
};

// Leaked on purpose: destructors of other statics (module unloads at exit) may still log.
LogState& state() noexcept {
  static LogState* s = new LogState();
  return *s;
}

}  // namespace

std::string_view log_prefix(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kError: return "rajit: error: ";
    case LogLevel::kWarn: return "rajit: warning: ";
    case LogLevel::kInfo: return "rajit: ";
    case LogLevel::kDebug: return "rajit: debug: ";
  }
  return "rajit: ";
}

LogLevel log_level() noexcept {
  return static_cast<LogLevel>(state().level.load(std::memory_order_relaxed));
}

void set_log_level(LogLevel level) noexcept {
  state().level.store(static_cast<int>(level), std::memory_order_relaxed);
}

void set_log_sink(LogSink sink) {
  LogState& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.sink = std::move(sink);
}

void log(LogLevel level, std::string_view msg) noexcept {
  if (!log_enabled(level)) return;
  LogState& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (s.sink) {
    try {
      s.sink(level, msg);
    } catch (...) {
      // A throwing test sink must not turn a diagnostic into a crash in a noexcept path.
    }
    return;
  }
  const std::string_view prefix = log_prefix(level);
  // One fwrite per line so that other writers to stderr cannot split it.
  std::string line;
  try {
    line.reserve(prefix.size() + msg.size() + 1);
    line.append(prefix).append(msg).push_back('\n');
  } catch (...) {
    return;
  }
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace rajit::rt
