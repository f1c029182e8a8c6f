/// A child process for the cache concurrency and kill tests: compiles keys into a shared cache dir, or writes entries until killed.
// Usage:
//   rajit_cache_worker DIR fake KEY...     fake compiler (50 ms per compile); prints "compiles N"
//   rajit_cache_worker DIR nvrtc KEY...    real NVRTC, a tiny kernel per key; prints "compiles N"
//   rajit_cache_worker DIR writer BYTES    stores self-checking entries under one name forever
// Exit 0 when every key's cubin came back as expected, 1 otherwise, 2 on usage errors.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "runtime/disk_cache.hpp"
#include "runtime/kernel_cache.hpp"
#include "tests/support/cache_worker.hpp"

namespace {

using rajit::rt::CompileRequest;
using rajit::rt::CompileResult;
using rajit::rt::KernelCache;

int compile_keys(const std::string& dir, bool fake, const std::vector<std::string>& keys) {
  if (fake) {
    KernelCache::set_compiler_for_testing([](const CompileRequest& req) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      CompileResult r;
      const std::string image = rajit::test::fake_cubin_for(req.arch, req.source);
      r.cubin.assign(image.begin(), image.end());
      r.ok = true;
      return r;
    });
  }
  KernelCache cache{std::filesystem::path(dir)};
  bool ok = true;
  for (const std::string& key : keys) {
    const rajit::rt::KernelRequest req = rajit::test::worker_request(key, fake);
    const std::vector<char> cubin = cache.get_cubin(req);
    if (fake) {
      const std::string want = rajit::test::fake_cubin_for(req.arch, req.source);
      if (std::string(cubin.begin(), cubin.end()) != want) {
        std::fprintf(stderr, "worker: key %s: wrong cubin bytes\n", key.c_str());
        ok = false;
      }
    } else if (cubin.size() < 4 || std::string(cubin.data() + 1, 3) != "ELF") {
      std::fprintf(stderr, "worker: key %s: not an ELF cubin\n", key.c_str());
      ok = false;
    }
  }
  std::printf("compiles %zu\n", cache.counters().compiles);
  return ok ? 0 : 1;
}

[[noreturn]] void write_forever(const std::string& dir, std::size_t bytes) {
  rajit::rt::DiskCache cache{std::filesystem::path(dir)};
  for (std::uint64_t seed = static_cast<std::uint64_t>(::getpid()) << 20;; ++seed) {
    const std::vector<char> payload = rajit::test::self_checking_payload(seed, bytes);
    cache.store(rajit::test::kVictimName, rajit::test::kVictimKey, payload);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DIR fake|nvrtc KEY... | DIR writer BYTES\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], mode = argv[2];
  if (mode == "writer") write_forever(dir, std::strtoull(argv[3], nullptr, 10));
  if (mode != "fake" && mode != "nvrtc") return 2;
  return compile_keys(dir, mode == "fake", std::vector<std::string>(argv + 3, argv + argc));
}
