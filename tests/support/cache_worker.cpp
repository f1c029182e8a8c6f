/// A child process for the cache concurrency and kill tests: compiles keys into a shared cache dir, or writes entries until killed.
// Usage:
//   rajit_cache_worker DIR fake KEY...     fake compiler (50 ms per compile); prints "compiles N"
//   rajit_cache_worker DIR fake-tune KEY... the same, then records one tune-file entry per key
//                                          into DIR/tune.json (as `rajit tune` does, under its lock)
//   rajit_cache_worker DIR nvrtc KEY...    real NVRTC, a tiny kernel per key; prints "compiles N"
//   rajit_cache_worker DIR writer BYTES    stores self-checking entries under one name forever
// Exit 0 when every key's cubin came back as expected, 1 otherwise, 2 on usage errors.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "generator/render.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/kernel_cache.hpp"
#include "tests/support/cache_worker.hpp"
#include "tuner/tune_cache.hpp"

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

// One tune entry per key (a distinct shape bucket per key), recorded through the same TuneStore
// path the tuner uses: flock, re-read, merge, temporary file, rename.
bool record_tune_entries(const std::string& dir, const std::vector<std::string>& keys) {
  rajit::tune::TuneStore store{std::filesystem::path(dir) / "tune.json"};
  std::vector<rajit::tune::TuneEntry> entries;
  for (const std::string& key : keys) {
    rajit::tune::TuneEntry e;
    e.device = rajit::test::kWorkerTuneDevice;
    e.spec = "fwd.bf16.ds56.r8.d64.causal.colbias";
    e.bucket = rajit::test::worker_tune_bucket(key);
    e.template_set_hash = rajit::gen::template_set_hash();
    e.tile = rajit::gen::TileConfig{64, 64, 4, 2};
    e.default_tile = e.tile;
    e.ms = e.default_ms = 1.0;
    e.candidates = 1;
    e.shape = "1x1x1x1";
    entries.push_back(e);
  }
  return store.record(entries, rajit::tune::current_meta());
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
  if (mode != "fake" && mode != "fake-tune" && mode != "nvrtc") return 2;
  const std::vector<std::string> keys(argv + 3, argv + argc);
  const int rc = compile_keys(dir, mode != "nvrtc", keys);
  if (mode == "fake-tune" && !record_tune_entries(dir, keys)) {
    std::fprintf(stderr, "worker: the tune file was not written\n");
    return 1;
  }
  return rc;
}
