/// Loaded CUDA modules, the kernels inside them and launch(): the only code that turns cubin bytes into something runnable.
#pragma once

#include <cuda.h>

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>

namespace rajit::rt {

/// Deleter for a CUmodule (S34): unloads through the active driver table; logs failures and
/// never throws (S35).
struct ModuleUnload {
  void operator()(CUmod_st* module) const noexcept;
};
using ModuleHandle = std::unique_ptr<CUmod_st, ModuleUnload>;

/// Owns one CUmodule, loaded into the context current on the calling thread. Neither copyable
/// nor movable; share it through std::shared_ptr<const Module>. Thread-safe after construction.
class Module {
 public:
  /// Loads `image` (a cubin) with cuModuleLoadData. `name` identifies it in error messages.
  /// Throws: NoDriverError, DriverError (e.g. CUDA_ERROR_INVALID_IMAGE, NO_BINARY_FOR_GPU).
  Module(std::span<const char> image, std::string name);

  CUmodule get() const noexcept { return handle_.get(); }
  const std::string& name() const noexcept { return name_; }

  /// The extern "C" kernel `entry_name`. Throws: DriverError (CUDA_ERROR_NOT_FOUND if absent).
  CUfunction function(const std::string& entry_name) const;

  /// Unloads now and reports failure, unlike the destructor (S35). Throws: DriverError.
  void unload();

  /// Raises `fn`'s dynamic shared memory limit to at least `bytes`; each raise happens once per
  /// function and size, under a lock. `fn` must belong to this module. Throws: DriverError.
  void ensure_dynamic_smem(CUfunction fn, unsigned bytes, const std::string& kernel_name) const;

 private:
  ModuleHandle handle_;
  std::string name_;
  mutable std::mutex smem_mutex_;
  mutable std::unordered_map<CUfunction, unsigned> smem_limit_;
};

/// A kernel in a loaded module (S36). It does not own `fn`, but `owner` keeps the module loaded,
/// so a copy can never outlive it. Cheap to copy.
struct Kernel {
  CUfunction fn = nullptr;
  std::shared_ptr<const Module> owner;
  std::string name;
  int dynamic_smem_bytes = 0;  // filled in by whoever knows the launch shape (the tuner)
  int threads = 0;
};

/// Dynamic shared memory above this needs an explicit opt-in per function.
inline constexpr unsigned kDefaultDynamicSmemLimit = 48 * 1024;

/// Launches `kernel` on a (grid_x, grid_y, grid_z) grid of (block_x, 1, 1) blocks. When
/// `smem_bytes` exceeds 48 KiB it first raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
/// (once per function, thread-safe). The calling thread must have the kernel's context current.
/// Throws: DriverError naming the kernel and the launch shape.
void launch(const Kernel& kernel, unsigned grid_x, unsigned grid_y, unsigned grid_z,
            unsigned block_x, unsigned smem_bytes, CUstream stream, void** args);

}  // namespace rajit::rt
