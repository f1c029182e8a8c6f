/// KernelCache: key derivation, the three cache layers, first-use progress messages and failure dumps.
#include "runtime/kernel_cache.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

namespace rajit::rt {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxReadableChars = 120;  // keeps file names well below NAME_MAX
constexpr std::size_t kFileHashChars = 16;

struct CompilerSlot {
  std::mutex mutex;
  KernelCache::Compiler compiler;
};

CompilerSlot& compiler_slot() {
  static CompilerSlot* s = new CompilerSlot();
  return *s;
}

KernelCache::Compiler test_compiler() {
  CompilerSlot& s = compiler_slot();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return s.compiler;
}

std::string key_nvrtc_version() {
  if (test_compiler()) return "fake";
  return nvrtc_version_string();
}

void add_field(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
  out += '\n';
}

// Maps everything outside [A-Za-z0-9._-] to '_', so names are safe in any file system and shell.
std::string file_name_safe(std::string text) {
  for (char& c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return text;
}

std::string sanitized_readable(const KernelRequest& request) {
  std::string name = request.readable_name.empty() ? request.entry_name : request.readable_name;
  if (name.empty()) name = "kernel";
  if (name.size() > kMaxReadableChars) name.resize(kMaxReadableChars);
  name = file_name_safe(std::move(name));
  if (name.front() == '.') name.front() = '_';  // a leading dot would hide it from list()
  return name;
}

std::string file_name_for(const KernelRequest& request, const std::string& digest) {
  std::string arch = request.arch;
  arch.erase(std::remove(arch.begin(), arch.end(), '_'), arch.end());
  std::string version = key_nvrtc_version();
  std::replace(version.begin(), version.end(), '.', '-');
  return sanitized_readable(request) + "." + file_name_safe(arch) + ".nvrtc" +
         file_name_safe(version) + "." + digest.substr(0, kFileHashChars) + ".cubin";
}

std::string stem_of(const std::string& cubin_file_name) {
  static constexpr std::string_view kExt = ".cubin";
  return cubin_file_name.substr(0, cubin_file_name.size() - kExt.size());
}

bool dump_source_requested() {
  const char* v = std::getenv("RAJIT_DUMP_SOURCE");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

}  // namespace

std::string full_key(const KernelRequest& request) {
  std::vector<std::string> options = request.options;
  std::sort(options.begin(), options.end());  // option order does not change the binary
  std::string key;
  key.reserve(request.source.size() + 256);
  add_field(key, "rajit-kernel-cache");
  add_field(key, std::to_string(KernelCache::kFormatVersion));
  add_field(key, request.extra_key);
  add_field(key, request.source);
  add_field(key, std::to_string(options.size()));
  for (const std::string& opt : options) add_field(key, opt);
  add_field(key, request.arch);
  add_field(key, key_nvrtc_version());
  return key;
}

std::string cache_file_name(const KernelRequest& request) {
  return file_name_for(request, sha256_hex(full_key(request)));
}

KernelCache::KernelCache(std::optional<fs::path> disk_root) {
  if (disk_root) disk_.emplace(std::move(*disk_root));
}

KernelCache& KernelCache::global() {
  static KernelCache* cache = new KernelCache(DiskCache::default_root());
  return *cache;
}

void KernelCache::set_compiler_for_testing(Compiler compiler) {
  CompilerSlot& s = compiler_slot();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.compiler = std::move(compiler);
}

KernelCache::Counters KernelCache::counters() const noexcept {
  Counters c;
  c.memory_hits = memory_hits_.load(std::memory_order_relaxed);
  c.memory_misses = memory_misses_.load(std::memory_order_relaxed);
  c.disk_hits = disk_hits_.load(std::memory_order_relaxed);
  c.disk_misses = disk_misses_.load(std::memory_order_relaxed);
  c.compiles = compiles_.load(std::memory_order_relaxed);
  return c;
}

void KernelCache::clear_memory() {
  std::map<MemoryKey, std::shared_future<Kernel>> dropped;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(memory_);
  }
  // Modules unload here, outside the lock.
}

Kernel KernelCache::get(const KernelRequest& request, int device_ordinal) {
  const CUcontext context = make_primary_context_current(device_ordinal);
  const std::string key = full_key(request);
  const std::string digest = sha256_hex(key);
  const MemoryKey memory_key{digest, request.entry_name, context};

  std::promise<Kernel> promise;
  std::shared_future<Kernel> future;
  bool builder = false;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto it = memory_.find(memory_key);
    if (it != memory_.end()) {
      memory_hits_.fetch_add(1, std::memory_order_relaxed);
      future = it->second;
    } else {
      memory_misses_.fetch_add(1, std::memory_order_relaxed);
      future = promise.get_future().share();
      memory_.emplace(memory_key, future);
      builder = true;
    }
  }
  // Someone else is (or was) building this key: wait for them outside the lock, so other keys
  // proceed (S38); their failure rethrows here.
  if (!builder) return future.get();

  try {
    Kernel kernel = build(request, key, digest, device_ordinal);
    promise.set_value(kernel);
    return kernel;
  } catch (...) {
    promise.set_exception(std::current_exception());
    // Forget the failure so that a later call retries (the error may be transient).
    const std::lock_guard<std::mutex> lock(mutex_);
    memory_.erase(memory_key);
    throw;
  }
}

std::vector<char> KernelCache::get_cubin(const KernelRequest& request) {
  const std::string key = full_key(request);
  return obtain_cubin(request, key, file_name_for(request, sha256_hex(key)), true).bytes;
}

Kernel KernelCache::build(const KernelRequest& request, const std::string& key,
                          const std::string& digest, int device_ordinal) {
  const std::string file_name = file_name_for(request, digest);
  const std::string module_name =
      fmt::format("{} ({}) on device {}", sanitized_readable(request), request.arch, device_ordinal);
  Cubin cubin = obtain_cubin(request, key, file_name, true);
  std::shared_ptr<const Module> module;
  try {
    module = std::make_shared<const Module>(cubin.bytes, module_name);
  } catch (const DriverError& e) {
    // Every "this image is not for this driver/GPU" answer; not out-of-memory and the like.
    const bool bad_image = e.result() == CUDA_ERROR_INVALID_IMAGE ||
                           e.result() == CUDA_ERROR_NO_BINARY_FOR_GPU ||
                           e.result() == CUDA_ERROR_INVALID_PTX ||
                           e.result() == CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
    if (!cubin.from_disk || !bad_image) throw;
    // A cubin that passed its checksum but not the driver was written by a different toolchain
    // or for a different GPU under the same key; rebuilding it once is cheap and self-healing.
    log_warn("cached {} was rejected by the driver ({}); evicting it and recompiling",
             (disk_->root() / file_name).string(), result_name(e.result()));
    disk_->remove(file_name);
    cubin = obtain_cubin(request, key, file_name, false);
    module = std::make_shared<const Module>(cubin.bytes, module_name);
  }
  Kernel kernel;
  kernel.fn = module->function(request.entry_name);
  kernel.owner = std::move(module);
  kernel.name = request.readable_name.empty() ? request.entry_name : request.readable_name;
  return kernel;
}

KernelCache::Cubin KernelCache::obtain_cubin(const KernelRequest& request, const std::string& key,
                                             const std::string& file_name, bool allow_disk) {
  if (!disk_) return Cubin{compile_and_store(request, key, file_name), false};
  if (allow_disk) {
    if (std::optional<std::vector<char>> hit = disk_->load(file_name, key)) {
      disk_hits_.fetch_add(1, std::memory_order_relaxed);
      return Cubin{std::move(*hit), true};
    }
    disk_misses_.fetch_add(1, std::memory_order_relaxed);
  }
  // Another process may be compiling the same entry; wait for it and re-check (S41).
  const DiskCache::FileLock lock = disk_->lock(file_name);
  if (allow_disk && lock.locked()) {
    if (std::optional<std::vector<char>> hit = disk_->load(file_name, key)) {
      disk_hits_.fetch_add(1, std::memory_order_relaxed);
      return Cubin{std::move(*hit), true};
    }
  }
  return Cubin{compile_and_store(request, key, file_name), false};
}

std::vector<char> KernelCache::compile_and_store(const KernelRequest& request,
                                                 const std::string& key,
                                                 const std::string& file_name) {
  CompileRequest compile_request;
  compile_request.program_name = sanitized_readable(request) + ".cu";
  compile_request.source = request.source;
  compile_request.options = request.options;
  compile_request.arch = request.arch;
  compile_request.want_cubin = true;
  compile_request.entry_name = request.entry_name;

  const std::string& shown = compile_request.program_name;
  // Compiles take seconds; say so before starting so that a first call never looks hung.
  log_info("compiling {} for {} (first use; cached afterwards)...", sanitized_readable(request),
           request.arch);
  const auto start = std::chrono::steady_clock::now();
  const Compiler override_compiler = test_compiler();
  CompileResult result = override_compiler ? override_compiler(compile_request)
                                           : compile(compile_request);
  compiles_.fetch_add(1, std::memory_order_relaxed);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::string source_file = stem_of(file_name) + ".cu";
  if (!result.ok) {
    const fs::path dumped = dump_source(source_file, request.source);
    throw CompileError(shown, request.arch, std::move(result.log), std::move(result.options_used),
                       dumped);
  }
  const ResourceUsage& r = result.resources;
  log_info("compiled {} in {:.1f}s ({} registers, {} bytes static smem, {}/{} bytes spilled)",
           sanitized_readable(request), seconds, r.registers, r.shared_bytes, r.spill_store_bytes,
           r.spill_load_bytes);
  if (dump_source_requested()) dump_source(source_file, request.source);
  if (disk_) disk_->store(file_name, key, result.cubin);
  return std::move(result.cubin);
}

fs::path KernelCache::dump_source(const std::string& file_name, const std::string& source) {
  std::optional<fs::path> written;
  if (disk_) {
    written = disk_->write_file(file_name, source);
  } else {
    // No cache directory: a private directory under the temp dir still gives the user a file
    // to open or hand to nvcc.
    std::error_code ec;
    fs::path tmp = fs::temp_directory_path(ec);
    if (ec) tmp = "/tmp";
    DiskCache dumps(tmp / ("rajit-" + std::to_string(::getuid())) / "sources");
    written = dumps.write_file(file_name, source);
  }
  return written.value_or(fs::path());
}

}  // namespace rajit::rt
