/// NVRTC tier: 16 processes compiling real kernels into one fresh cache directory at once.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/disk_cache.hpp"
#include "runtime/kernel_cache.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"
#include "tests/support/cache_worker.hpp"

namespace fs = std::filesystem;

TEST_CASE("concurrency: 16 processes compiling real kernels (shared and distinct keys) with NVRTC "
          "into one fresh cache all succeed and each key compiles once") {
  rajit::test::TempDir tmp;
  const fs::path dir = tmp.path() / "cache";
  const std::vector<std::string> keys = {"shared", "n0", "n1", "n2"};
  std::vector<rajit::test::Child> children;
  for (int i = 0; i < 16; ++i) {
    std::vector<std::string> args = {dir.string(), "nvrtc", "shared", "n" + std::to_string(i % 3)};
    if (i % 2 == 1) std::swap(args[2], args[3]);
    children.push_back(rajit::test::spawn_worker(args));
  }
  int total = 0;
  for (const auto& c : children) {
    const auto finished = rajit::test::finish(c);
    const int code = finished.first;
    const std::string& out = finished.second;
    CAPTURE(out);
    CHECK(code == 0);
    total += rajit::test::compiles_in(out);
  }
  CHECK(total == static_cast<int>(keys.size()));
  rajit::rt::KernelCache cache{dir};
  for (const std::string& key : keys) {
    const auto cubin = cache.get_cubin(rajit::test::worker_request(key, false));
    CHECK(cubin.size() > 100);
  }
  CHECK(cache.counters().compiles == 0);
  CHECK(cache.disk()->counters().hits == keys.size());
  CHECK(cache.disk()->counters().rejected == 0);
}
