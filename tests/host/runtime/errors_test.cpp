/// Host tests for the error hierarchy's messages and RAJIT_CU_CHECK (S31, S32).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>

#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"

namespace {

int g_subject_formats = 0;

struct CountedSubject {};

}  // namespace

template <>
struct fmt::formatter<CountedSubject> : fmt::formatter<std::string_view> {
  auto format(CountedSubject, fmt::format_context& ctx) const {
    ++g_subject_formats;
    return fmt::formatter<std::string_view>::format("subject", ctx);
  }
};

namespace {

std::size_t count_lines(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == '\n' ? 1 : 0;
  return n + (s.empty() || s.back() == '\n' ? 0 : 1);
}

}  // namespace

TEST_CASE("CompileError: what() is a summary, at most 30 log lines, then where the rest is") {
  std::string log;
  for (int i = 0; i < 45; ++i) log += fmt::format("k.cu({}): error: problem {}\n", i + 1, i);
  const rajit::rt::CompileError e("fwd.bf16.d64.cu", "sm_90a", log, {"-std=c++17"},
                                  "/cache/fwd.bf16.d64.cu");
  const std::string what = e.what();
  CHECK(what.rfind("NVRTC failed to compile fwd.bf16.d64.cu for sm_90a\n", 0) == 0);
  CHECK(what.find("problem 29") != std::string::npos);
  CHECK(what.find("problem 30") == std::string::npos);
  CHECK(what.find("15 more log lines") != std::string::npos);
  CHECK(what.find("full log: CompileError::log(); source: /cache/fwd.bf16.d64.cu") !=
        std::string::npos);
  CHECK(count_lines(what) == 1 + 30 + 1 + 1);
  CHECK(e.log() == log);  // the accessor keeps everything
  CHECK(e.program_name() == "fwd.bf16.d64.cu");
  CHECK(e.arch() == "sm_90a");
  CHECK(e.options() == std::vector<std::string>{"-std=c++17"});
  CHECK(e.source_path() == "/cache/fwd.bf16.d64.cu");
}

TEST_CASE("CompileError: a short log is shown whole and an unsaved source says so") {
  const rajit::rt::CompileError e("k.cu", "sm_80", "k.cu(1): error: oops\n\n", {}, {});
  const std::string what = e.what();
  CHECK(what == "NVRTC failed to compile k.cu for sm_80\nk.cu(1): error: oops\n"
                "full log: CompileError::log(); source: (not saved)");
  CHECK(dynamic_cast<const rajit::rt::Error*>(&e) != nullptr);
}

TEST_CASE("RAJIT_CU_CHECK: a failure names the call, the error and the subject") {
  rajit::test::FakeDriver fake;  // so that result names come from a known table
  auto fail = [](const rajit::rt::DriverApi& api) {
    CUmodule m = nullptr;
    RAJIT_CU_CHECK(api.cuModuleLoadData(&m, "image"), "loading {} on device {}", "fwd.x", 0);
  };
  fake.on_load = [](const void*) { return CUDA_ERROR_INVALID_IMAGE; };
  try {
    fail(rajit::rt::driver());
    FAIL("RAJIT_CU_CHECK did not throw");
  } catch (const rajit::rt::DriverError& e) {
    CHECK(e.result() == CUDA_ERROR_INVALID_IMAGE);
    CHECK(std::string(e.call()) == "cuModuleLoadData");
    CHECK(std::string(e.what()) ==
          "cuModuleLoadData failed: CUDA_ERROR_INVALID_IMAGE \u2014 loading fwd.x on device 0");
  }
}

TEST_CASE("RAJIT_CU_CHECK: the subject is formatted only on failure") {
  g_subject_formats = 0;
  RAJIT_CU_CHECK(CUDA_SUCCESS, "{}", CountedSubject{});
  CHECK(g_subject_formats == 0);
  CHECK_THROWS_WITH_AS(RAJIT_CU_CHECK(CUDA_ERROR_OUT_OF_MEMORY, "{}", CountedSubject{}),
                       doctest::Contains("CUDA_ERROR_OUT_OF_MEMORY"), rajit::rt::DriverError);
  CHECK(g_subject_formats == 1);
}

TEST_CASE("NoDriverError: keeps the probe's reason") {
  const rajit::rt::NoDriverError e("cuInit: CUDA_ERROR_NO_DEVICE");
  CHECK(e.reason() == "cuInit: CUDA_ERROR_NO_DEVICE");
  CHECK(std::string(e.what()).find("cuInit: CUDA_ERROR_NO_DEVICE") != std::string::npos);
}
