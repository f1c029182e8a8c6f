/// The compile-and-load cache: memory (per context) over disk (per machine) over NVRTC, with keys per S38-S40.
#pragma once

#include <cuda.h>

#include <atomic>
#include <compare>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/disk_cache.hpp"
#include "runtime/module.hpp"
#include "runtime/nvrtc.hpp"

namespace rajit::rt {

/// Everything needed to build one kernel. The runtime treats all of it as opaque text.
struct KernelRequest {
  std::string readable_name;  // e.g. "fwd.bf16.d64.bm64.bn64.w4.s2"; file-name prefix and logs
  std::string entry_name;     // extern "C" kernel in `source`
  std::string source;         // self-contained CUDA C++
  std::vector<std::string> options;  // NVRTC options, without the architecture
  std::string arch;                  // "sm_90a"
  std::string extra_key;  // anything else the binary depends on, e.g. the template-set hash
};

/// The canonical key text (S39): length-prefixed fields "<len>:<bytes>\n" for a tag, the cache
/// format version, extra_key, source, the option count and the sorted options, arch and the
/// NVRTC version ("13.0"). Identical inputs give identical bytes on every machine.
/// Throws: NvrtcError when NVRTC is unavailable (its version is part of the key).
std::string full_key(const KernelRequest& request);

/// "<readable>.<arch without '_'>.nvrtc<major>-<minor>.<16 hex of SHA-256(full key)>.cubin" (S40),
/// e.g. "fwd.bf16.d64.bm64.bn64.w4.s2.sm90a.nvrtc13-0.3f9c1e0a5b7d2c41.cubin". Characters outside
/// [A-Za-z0-9._-] in the readable name become '_'. Throws: NvrtcError as full_key().
std::string cache_file_name(const KernelRequest& request);

/// Turns KernelRequests into loaded Kernels, compiling each at most once.
///
/// Layers: memory, keyed by (full key, entry name, CUcontext) because modules belong to a context
/// (S38); then an optional DiskCache of cubins; then NVRTC. Concurrent get()s for one key compile
/// once (a per-key std::shared_future) while other keys proceed. A failed build is not cached, so
/// a later call retries. Thread-safe.
class KernelCache {
 public:
  /// Bumped when the key or the meaning of a cached cubin changes; part of every key.
  static constexpr int kFormatVersion = 1;

  /// `disk_root` = nullopt keeps compiled kernels in memory only.
  explicit KernelCache(std::optional<std::filesystem::path> disk_root);
  KernelCache(const KernelCache&) = delete;
  KernelCache& operator=(const KernelCache&) = delete;

  /// The kernel for `request`, loaded in `device_ordinal`'s primary context, which this makes
  /// current on the calling thread. The first use logs "compiling ..." at info level.
  /// Throws: CompileError (NVRTC rejected the source; it is dumped to a file named in the error),
  /// NvrtcError, NoDriverError, DriverError (load or lookup failed, naming the kernel). A cubin
  /// from disk that the driver rejects as CUDA_ERROR_INVALID_IMAGE / NO_BINARY_FOR_GPU is evicted
  /// and rebuilt once before an error is raised.
  Kernel get(const KernelRequest& request, int device_ordinal);

  /// The cubin for `request` from disk or a fresh compile (stored to disk); needs no GPU and does
  /// not use the memory layer. Throws: CompileError, NvrtcError.
  std::vector<char> get_cubin(const KernelRequest& request);

  struct Counters {
    std::size_t memory_hits = 0;    // get() found the key (possibly still compiling)
    std::size_t memory_misses = 0;  // get() had to build
    std::size_t disk_hits = 0;      // cubins taken from disk
    std::size_t disk_misses = 0;    // disk lookups that found nothing usable
    std::size_t compiles = 0;       // NVRTC (or test compiler) invocations
  };
  Counters counters() const noexcept;

  /// Null for a memory-only cache.
  DiskCache* disk() noexcept { return disk_ ? &*disk_ : nullptr; }

  /// Drops loaded kernels (modules unload once no Kernel copy holds them). Counters stay.
  void clear_memory();

  /// The process-wide cache on DiskCache::default_root(). Never destroyed, so that no module is
  /// unloaded after the driver has shut down at exit.
  static KernelCache& global();

  using Compiler = std::function<CompileResult(const CompileRequest&)>;
  /// Replaces NVRTC for every KernelCache (host tests); nullptr restores NVRTC. While set, the
  /// NVRTC version in keys and file names is "fake", so fake cubins never mix with real ones.
  static void set_compiler_for_testing(Compiler compiler);

 private:
  struct MemoryKey {
    std::string digest;
    std::string entry_name;
    CUcontext context;
    auto operator<=>(const MemoryKey&) const = default;
  };
  struct Cubin {
    std::vector<char> bytes;
    bool from_disk = false;
  };

  Kernel build(const KernelRequest& request, const std::string& key, const std::string& digest,
               int device_ordinal);
  Cubin obtain_cubin(const KernelRequest& request, const std::string& key,
                     const std::string& file_name, bool allow_disk);
  std::vector<char> compile_and_store(const KernelRequest& request, const std::string& key,
                                      const std::string& file_name);
  std::filesystem::path dump_source(const std::string& file_name, const std::string& source);

  std::optional<DiskCache> disk_;
  std::mutex mutex_;
  std::map<MemoryKey, std::shared_future<Kernel>> memory_;
  std::atomic<std::size_t> memory_hits_{0}, memory_misses_{0}, disk_hits_{0}, disk_misses_{0},
      compiles_{0};
};

}  // namespace rajit::rt
