/// Host tests for the leveled logger and its test sink.
#include <doctest/doctest.h>

#include "runtime/log.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"

using rajit::rt::LogLevel;

TEST_CASE("log: messages reach the sink with their level and without the prefix") {
  rajit::test::LogCapture capture;
  rajit::rt::log_warn("cache entry {} is {}", "x.cubin", "odd");
  rajit::rt::log_info("compiling {}", 3);
  const auto warnings = capture.warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].text == "cache entry x.cubin is odd");
  REQUIRE(capture.at(LogLevel::kInfo).size() == 1);
  CHECK(capture.at(LogLevel::kInfo)[0].text == "compiling 3");
}

TEST_CASE("log: messages above the level are dropped") {
  rajit::test::LogCapture capture;
  rajit::rt::set_log_level(LogLevel::kWarn);
  rajit::rt::log_info("hidden");
  rajit::rt::log_debug("hidden too");
  rajit::rt::log_error("shown");
  CHECK(capture.at(LogLevel::kInfo).empty());
  CHECK(capture.at(LogLevel::kDebug).empty());
  CHECK(capture.at(LogLevel::kError).size() == 1);
  CHECK_FALSE(rajit::rt::log_enabled(LogLevel::kInfo));
  CHECK(rajit::rt::log_enabled(LogLevel::kWarn));
}

TEST_CASE("log: stderr prefixes name the program and the level") {
  CHECK(rajit::rt::log_prefix(LogLevel::kWarn) == "rajit: warning: ");
  CHECK(rajit::rt::log_prefix(LogLevel::kError) == "rajit: error: ");
  CHECK(rajit::rt::log_prefix(LogLevel::kInfo) == "rajit: ");
  CHECK(rajit::rt::log_prefix(LogLevel::kDebug) == "rajit: debug: ");
}
