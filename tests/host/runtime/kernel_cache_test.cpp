/// Host tests for KernelCache with a fake driver and a fake compiler: layers, counters (S57), dedup (S38) and failure paths (S56).
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "runtime/kernel_cache.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"

namespace fs = std::filesystem;
using rajit::rt::CompileRequest;
using rajit::rt::CompileResult;
using rajit::rt::KernelCache;
using rajit::rt::KernelRequest;
using rajit::test::FakeDriver;
using rajit::test::LogCapture;
using rajit::test::TempDir;

namespace {

// Produces a "cubin" that is just "CUBIN:" + the source, so tests can tell which one was loaded,
// and counts invocations. Sources containing "syntax error" are rejected like NVRTC would; those
// containing "SLOW" take 400 ms. Set the public members before any thread compiles.
class FakeCompiler {
 public:
  std::atomic<int> calls{0};
  std::chrono::milliseconds delay{0};
  std::string image_prefix = "CUBIN:";

  FakeCompiler() {
    KernelCache::set_compiler_for_testing([this](const CompileRequest& req) {
      ++calls;
      std::this_thread::sleep_for(delay);
      if (req.source.find("SLOW") != std::string::npos) {
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
      }
      CompileResult r;
      r.options_used = req.options;
      r.options_used.push_back("--gpu-architecture=" + req.arch);
      if (req.source.find("syntax error") != std::string::npos) {
        r.log = req.program_name + "(1): error: expected a \";\"\n";
        return r;
      }
      const std::string image = image_prefix + req.source;
      r.cubin.assign(image.begin(), image.end());
      r.cubin.push_back('\0');  // the fake loader reads it as a C string
      r.resources.registers = 32;
      r.ok = true;
      return r;
    });
  }
  ~FakeCompiler() { KernelCache::set_compiler_for_testing(nullptr); }
  FakeCompiler(const FakeCompiler&) = delete;
  FakeCompiler& operator=(const FakeCompiler&) = delete;
};

KernelRequest request(std::string source = "extern \"C\" __global__ void k() {}") {
  KernelRequest r;
  r.readable_name = "fwd.bf16.d64.bm64.bn64.w4.s2";
  r.entry_name = "k";
  r.source = std::move(source);
  r.options = {"-std=c++17", "--use_fast_math"};
  r.arch = "sm_90a";
  r.extra_key = "templates-3f9c";
  return r;
}

std::vector<char> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("full_key: option order does not matter, every other field does") {
  FakeCompiler compiler;
  const KernelRequest base = request();
  KernelRequest reordered = base;
  std::swap(reordered.options[0], reordered.options[1]);
  CHECK(rajit::rt::full_key(base) == rajit::rt::full_key(reordered));
  CHECK(rajit::rt::cache_file_name(base) == rajit::rt::cache_file_name(reordered));

  KernelRequest renamed = base;
  renamed.readable_name = "other";  // a label only: same binary, same key
  CHECK(rajit::rt::full_key(base) == rajit::rt::full_key(renamed));

  auto differs = [&](auto mutate) {
    KernelRequest changed = base;
    mutate(changed);
    return rajit::rt::full_key(changed) != rajit::rt::full_key(base);
  };
  CHECK(differs([](KernelRequest& r) { r.source += " "; }));
  CHECK(differs([](KernelRequest& r) { r.options.push_back("-lineinfo"); }));
  CHECK(differs([](KernelRequest& r) { r.arch = "sm_90"; }));
  CHECK(differs([](KernelRequest& r) { r.extra_key = "templates-0000"; }));
  // Length prefixes: moving text between adjacent fields changes the key.
  CHECK(differs([](KernelRequest& r) {
    r.extra_key += r.source.substr(0, 3);
    r.source = r.source.substr(3);
  }));
}

TEST_CASE("cache_file_name: readable prefix, arch, NVRTC version and a 16-digit hash") {
  FakeCompiler compiler;  // NVRTC version "fake"
  const std::string name = rajit::rt::cache_file_name(request());
  CHECK(name.rfind("fwd.bf16.d64.bm64.bn64.w4.s2.sm90a.nvrtcfake.", 0) == 0);
  CHECK(name.size() == std::string("fwd.bf16.d64.bm64.bn64.w4.s2.sm90a.nvrtcfake.").size() + 16 +
                           std::string(".cubin").size());
  CHECK(name.substr(name.size() - 6) == ".cubin");
  KernelRequest odd = request();
  odd.readable_name = "../evil name/x";
  const std::string safe = rajit::rt::cache_file_name(odd);
  CHECK(safe.find('/') == std::string::npos);
  CHECK(safe.find(' ') == std::string::npos);
  CHECK(rajit::rt::is_valid_cache_file_name(safe));
}

TEST_CASE("KernelCache: a second get() is a memory hit") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  KernelCache cache(dir.path());
  const rajit::rt::Kernel first = cache.get(request(), 0);
  const rajit::rt::Kernel second = cache.get(request(), 0);
  CHECK(first.fn == second.fn);
  CHECK(first.owner == second.owner);
  CHECK(first.name == "fwd.bf16.d64.bm64.bn64.w4.s2");
  const KernelCache::Counters c = cache.counters();
  CHECK(c.memory_misses == 1);
  CHECK(c.memory_hits == 1);
  CHECK(c.disk_misses == 1);
  CHECK(c.disk_hits == 0);
  CHECK(c.compiles == 1);
  CHECK(driver.loads == 1);
}

TEST_CASE("KernelCache: the first compile announces itself and its duration") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  cache.get(request(), 0);
  const auto info = log.at(rajit::rt::LogLevel::kInfo);
  REQUIRE(info.size() == 2);
  CHECK(info[0].text ==
        "compiling fwd.bf16.d64.bm64.bn64.w4.s2 for sm_90a (first use; cached afterwards)...");
  CHECK(info[1].text.rfind("compiled fwd.bf16.d64.bm64.bn64.w4.s2 in ", 0) == 0);
  CHECK(info[1].text.find("32 registers") != std::string::npos);
  cache.get(request(), 0);
  CHECK(log.at(rajit::rt::LogLevel::kInfo).size() == 2);  // nothing new on a hit
}

TEST_CASE("KernelCache: a fresh cache on the same directory is a disk hit with no compile") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  {
    KernelCache first(dir.path());
    first.get(request(), 0);
    CHECK(first.counters().compiles == 1);
  }
  KernelCache second(dir.path());
  second.get(request(), 0);
  const KernelCache::Counters c = second.counters();
  CHECK(c.disk_hits == 1);
  CHECK(c.disk_misses == 0);
  CHECK(c.compiles == 0);
  CHECK(compiler.calls == 1);
  CHECK(log.warnings().empty());
}

TEST_CASE("KernelCache: 8 threads asking for one key compile it once") {
  FakeDriver driver;
  FakeCompiler compiler;
  compiler.delay = std::chrono::milliseconds(100);
  LogCapture log;
  KernelCache cache(std::nullopt);
  std::vector<rajit::rt::Kernel> kernels(8);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    threads.emplace_back([&, i] { kernels[i] = cache.get(request(), 0); });
  }
  for (std::thread& t : threads) t.join();
  CHECK(compiler.calls == 1);
  CHECK(cache.counters().compiles == 1);
  CHECK(cache.counters().memory_misses == 1);
  CHECK(cache.counters().memory_hits == 7);
  CHECK(driver.loads == 1);
  for (const rajit::rt::Kernel& k : kernels) CHECK(k.fn == kernels[0].fn);
}

TEST_CASE("KernelCache: a slow compile does not block other keys") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  std::thread slow([&] { cache.get(request("SLOW"), 0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let it start compiling
  const auto start = std::chrono::steady_clock::now();
  cache.get(request("fast"), 0);
  const auto waited = std::chrono::steady_clock::now() - start;
  slow.join();
  CHECK(waited < std::chrono::milliseconds(300));
  CHECK(compiler.calls == 2);
}

TEST_CASE("KernelCache: each device's context gets its own module") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  const rajit::rt::Kernel on0 = cache.get(request(), 0);
  const rajit::rt::Kernel on1 = cache.get(request(), 1);
  CHECK(on0.owner != on1.owner);
  CHECK(cache.counters().memory_misses == 2);
  CHECK(driver.loads == 2);
  CHECK(rajit::rt::current_device() == 1);  // get() made device 1's context current
}

TEST_CASE("KernelCache: a module the driver rejects raises DriverError naming the error") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  driver.on_load = [](const void*) { return CUDA_ERROR_INVALID_IMAGE; };
  KernelCache cache(std::nullopt);
  CHECK_THROWS_WITH_AS(cache.get(request(), 0), doctest::Contains("CUDA_ERROR_INVALID_IMAGE"),
                       rajit::rt::DriverError);
  try {
    cache.get(request(), 0);
    FAIL("expected DriverError");
  } catch (const rajit::rt::DriverError& e) {
    CHECK(std::string(e.what()).find("fwd.bf16.d64.bm64.bn64.w4.s2 (sm_90a) on device 0") !=
          std::string::npos);
  }
  // Failures are not cached: both calls compiled (memory-only cache).
  CHECK(compiler.calls == 2);
}

TEST_CASE("KernelCache: a disk cubin the driver rejects is evicted and rebuilt once") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  compiler.image_prefix = "STALE:";
  KernelCache(dir.path()).get_cubin(request());  // leaves a cubin the "driver" will refuse
  compiler.image_prefix = "CUBIN:";
  driver.on_load = [](const void* image) {
    return std::strncmp(static_cast<const char*>(image), "STALE:", 6) == 0
               ? CUDA_ERROR_NO_BINARY_FOR_GPU
               : CUDA_SUCCESS;
  };
  KernelCache cache(dir.path());
  CHECK_NOTHROW(cache.get(request(), 0));
  CHECK(cache.counters().disk_hits == 1);
  CHECK(cache.counters().compiles == 1);
  CHECK(driver.loads == 2);
  const auto warnings = log.warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].text.find("CUDA_ERROR_NO_BINARY_FOR_GPU") != std::string::npos);
  // The rebuilt cubin replaced the stale one on disk.
  const auto stored = cache.disk()->load(rajit::rt::cache_file_name(request()),
                                         rajit::rt::full_key(request()));
  REQUIRE(stored.has_value());
  CHECK(std::string(stored->data(), 6) == "CUBIN:");
}

TEST_CASE("KernelCache: a rebuilt cubin that is still rejected raises DriverError") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  KernelCache(dir.path()).get_cubin(request());
  driver.on_load = [](const void*) { return CUDA_ERROR_INVALID_IMAGE; };
  KernelCache cache(dir.path());
  CHECK_THROWS_WITH_AS(cache.get(request(), 0), doctest::Contains("CUDA_ERROR_INVALID_IMAGE"),
                       rajit::rt::DriverError);
  CHECK(driver.loads == 2);  // the disk copy, then exactly one rebuild
  CHECK(cache.counters().compiles == 1);
}

TEST_CASE("KernelCache: rejected source raises CompileError with the source dumped") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  KernelCache cache(dir.path());
  const KernelRequest bad = request("syntax error here");
  try {
    cache.get(bad, 0);
    FAIL("expected CompileError");
  } catch (const rajit::rt::CompileError& e) {
    CHECK(e.program_name() == "fwd.bf16.d64.bm64.bn64.w4.s2.cu");
    CHECK(e.log().find("error: expected") != std::string::npos);
    REQUIRE_FALSE(e.source_path().empty());
    CHECK(e.source_path().parent_path() == dir.path());
    const std::vector<char> dumped = read_file(e.source_path());
    CHECK(std::string(dumped.begin(), dumped.end()) == bad.source);
    CHECK(std::string(e.what()).find(e.source_path().string()) != std::string::npos);
  }
  CHECK(driver.loads == 0);
}

TEST_CASE("KernelCache: a missing entry point raises DriverError naming it") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  KernelRequest r = request();
  r.entry_name = "missing_kernel";
  CHECK_THROWS_WITH_AS(cache.get(r, 0), doctest::Contains("missing_kernel"),
                       rajit::rt::DriverError);
}

TEST_CASE("KernelCache: get_cubin needs no driver and reuses the disk entry") {
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  KernelCache cache(dir.path());
  const std::vector<char> first = cache.get_cubin(request());
  const std::vector<char> second = cache.get_cubin(request());
  CHECK(first == second);
  CHECK(cache.counters().compiles == 1);
  CHECK(cache.counters().disk_hits == 1);
  CHECK(fs::exists(dir.path() / rajit::rt::cache_file_name(request())));
}

TEST_CASE("launch: dynamic shared memory above 48 KiB is opted into once per function") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  const rajit::rt::Kernel k = cache.get(request(), 0);
  rajit::rt::launch(k, 1, 1, 1, 128, 32 * 1024, nullptr, nullptr);
  CHECK(driver.set_attribute == 0);
  rajit::rt::launch(k, 1, 1, 1, 128, 100 * 1024, nullptr, nullptr);
  rajit::rt::launch(k, 1, 1, 1, 128, 100 * 1024, nullptr, nullptr);
  CHECK(driver.set_attribute == 1);
  CHECK(driver.last_smem_attribute == 100 * 1024);
  rajit::rt::launch(k, 1, 1, 1, 128, 150 * 1024, nullptr, nullptr);
  CHECK(driver.set_attribute == 2);
  CHECK(driver.launches == 4);
}

TEST_CASE("launch: a failed launch names the kernel and the launch shape") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  KernelCache cache(std::nullopt);
  const rajit::rt::Kernel k = cache.get(request(), 0);
  driver.on_launch = [](CUfunction, const char*) { return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES; };
  CHECK_THROWS_WITH_AS(rajit::rt::launch(k, 4, 2, 1, 256, 0, nullptr, nullptr),
                       doctest::Contains("launching fwd.bf16.d64.bm64.bn64.w4.s2 with grid (4, 2, 1), block 256"),
                       rajit::rt::DriverError);
}

TEST_CASE("Module: kernels keep their module loaded after the cache lets go") {
  FakeDriver driver;
  FakeCompiler compiler;
  LogCapture log;
  rajit::rt::Kernel kept;
  {
    KernelCache cache(std::nullopt);
    kept = cache.get(request(), 0);
    cache.clear_memory();
    CHECK(driver.unloads == 0);
  }
  CHECK(driver.unloads == 0);
  kept = {};
  CHECK(driver.unloads == 1);
}

TEST_CASE("KernelCache: RAJIT_DUMP_SOURCE=1 writes the .cu next to the cubin") {
  FakeDriver driver;
  FakeCompiler compiler;
  TempDir dir;
  LogCapture log;
  ::setenv("RAJIT_DUMP_SOURCE", "1", 1);
  KernelCache cache(dir.path());
  cache.get_cubin(request());
  ::unsetenv("RAJIT_DUMP_SOURCE");
  std::string cubin = rajit::rt::cache_file_name(request());
  const fs::path source = dir.path() / (cubin.substr(0, cubin.size() - 6) + ".cu");
  CHECK(fs::exists(source));
  const std::vector<char> text = read_file(source);
  CHECK(std::string(text.begin(), text.end()) == request().source);
}
