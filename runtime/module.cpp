/// Module loading/unloading and kernel launch, including the >48 KiB dynamic shared memory opt-in.
#include "runtime/module.hpp"

#include <cstring>
#include <utility>
#include <vector>

#include "runtime/driver.hpp"
#include "runtime/log.hpp"

namespace rajit::rt {

void ModuleUnload::operator()(CUmod_st* module) const noexcept {
  if (module == nullptr) return;
  try {
    const DriverApi& api = driver();
    const CUresult r = api.cuModuleUnload(module);
    // At process exit the driver may already be torn down; the module is gone with it.
    if (r != CUDA_SUCCESS && r != CUDA_ERROR_DEINITIALIZED) {
      log_warn("cuModuleUnload failed: {}; the module's memory is leaked", result_name(r));
    }
  } catch (const std::exception& e) {
    log_warn("cannot unload a module: {}", e.what());
  }
}

Module::Module(std::span<const char> image, std::string name) : name_(std::move(name)) {
  const DriverApi& api = driver();
  // cuModuleLoadData takes no length: an image that is not ELF is read as NUL-terminated PTX
  // text, so corrupt bytes without a terminator would be read past their end. Give them one.
  std::vector<char> terminated;
  const char* data = image.data();
  const bool elf = image.size() >= 4 && std::memcmp(image.data(), "\x7f" "ELF", 4) == 0;
  if (!elf && (image.empty() || image.back() != '\0')) {
    terminated.assign(image.begin(), image.end());
    terminated.push_back('\0');
    data = terminated.data();
  }
  CUmodule raw = nullptr;
  RAJIT_CU_CHECK(api.cuModuleLoadData(&raw, data), "loading {} ({} bytes)", name_, image.size());
  handle_.reset(raw);
}

CUfunction Module::function(const std::string& entry_name) const {
  CUfunction fn = nullptr;
  RAJIT_CU_CHECK(driver().cuModuleGetFunction(&fn, handle_.get(), entry_name.c_str()),
                 "looking up kernel {} in {}", entry_name, name_);
  return fn;
}

void Module::unload() {
  CUmodule raw = handle_.release();
  if (raw == nullptr) return;
  RAJIT_CU_CHECK(driver().cuModuleUnload(raw), "unloading {}", name_);
}

void Module::ensure_dynamic_smem(CUfunction fn, unsigned bytes,
                                 const std::string& kernel_name) const {
  const std::lock_guard<std::mutex> lock(smem_mutex_);
  unsigned& limit = smem_limit_.try_emplace(fn, kDefaultDynamicSmemLimit).first->second;
  if (bytes <= limit) return;
  // tiny-cuda-nn's note: without this opt-in, launches above 48 KiB fail with
  // CUDA_ERROR_INVALID_VALUE even on GPUs with 227 KiB per block.
  RAJIT_CU_CHECK(driver().cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                             static_cast<int>(bytes)),
                 "allowing {} bytes of dynamic shared memory for {}", bytes, kernel_name);
  limit = bytes;
}

void launch(const Kernel& kernel, unsigned grid_x, unsigned grid_y, unsigned grid_z,
            unsigned block_x, unsigned smem_bytes, CUstream stream, void** args) {
  const DriverApi& api = driver();
  if (smem_bytes > kDefaultDynamicSmemLimit) {
    if (kernel.owner != nullptr) {
      kernel.owner->ensure_dynamic_smem(kernel.fn, smem_bytes, kernel.name);
    } else {
      // No module to remember the opt-in in: set it every time (idempotent, just slower).
      RAJIT_CU_CHECK(api.cuFuncSetAttribute(kernel.fn,
                                            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            static_cast<int>(smem_bytes)),
                     "allowing {} bytes of dynamic shared memory for {}", smem_bytes, kernel.name);
    }
  }
  RAJIT_CU_CHECK(api.cuLaunchKernel(kernel.fn, grid_x, grid_y, grid_z, block_x, 1, 1, smem_bytes,
                                    stream, args, nullptr),
                 "launching {} with grid ({}, {}, {}), block {}, {} bytes dynamic smem",
                 kernel.name, grid_x, grid_y, grid_z, block_x, smem_bytes);
}

}  // namespace rajit::rt
