/// The CUDA driver API as a dlopen'd table of entry points (S27-S29, S32), plus context and device helpers; no libcuda at link time.
#pragma once

#include <cuda.h>
#include <fmt/format.h>

#include <cstddef>
#include <span>
#include <string>

#include "runtime/error.hpp"

// The member names of DriverApi come from cuda.h's macros; per-thread-stream builds rename
// cuLaunchKernel and friends, which would give DriverApi a different layout in different files.
#if defined(__CUDA_API_PER_THREAD_DEFAULT_STREAM)
#error "rajit's runtime must not be built with CUDA_API_PER_THREAD_DEFAULT_STREAM"
#endif

namespace rajit::rt {

// Every driver entry point the project may call, with the ABI version that cuGetProcAddress must
// be asked for. The version is the suffix of the PFN_<name>_v<NNNN> typedef in <cudaTypedefs.h>
// whose signature matches what `decltype(&::name)` sees: cuda.h maps some names to _v2 symbols
// (cuMemAlloc -> cuMemAlloc_v2, so 3020, not 2000), and driver.cpp static_asserts every pair.
//
// NOTE: because cuda.h #defines names such as cuMemAlloc to cuMemAlloc_v2, the member for such an
// entry is spelled cuMemAlloc_v2 after preprocessing. Code that writes `api.cuMemAlloc` goes
// through the same macro, so it still works and still greps; only the declared name differs.
#define RAJIT_DRIVER_API(X)                                                              \
  X(cuInit, 2000)                                                                        \
  X(cuDriverGetVersion, 2020)                                                            \
  X(cuDeviceGet, 2000)                                                                   \
  X(cuDeviceGetCount, 2000)                                                              \
  X(cuDeviceGetName, 2000)                                                               \
  X(cuDeviceGetAttribute, 2000)                                                          \
  X(cuDeviceTotalMem, 3020)                                                              \
  X(cuDevicePrimaryCtxRetain, 7000)                                                      \
  X(cuDevicePrimaryCtxRelease, 11000)                                                    \
  X(cuCtxGetCurrent, 4000)                                                               \
  X(cuCtxSetCurrent, 4000)                                                               \
  X(cuCtxGetDevice, 2000)                                                                \
  X(cuCtxSynchronize, 2000)                                                              \
  X(cuModuleLoadData, 2000)                                                              \
  X(cuModuleUnload, 2000)                                                                \
  X(cuModuleGetFunction, 2000)                                                           \
  X(cuModuleGetGlobal, 3020)                                                             \
  X(cuFuncSetAttribute, 9000)                                                            \
  X(cuFuncGetAttribute, 2020)                                                            \
  X(cuOccupancyMaxActiveBlocksPerMultiprocessor, 6050)                                   \
  X(cuLaunchKernel, 4000)                                                                \
  X(cuGetErrorName, 6000)                                                                \
  X(cuGetErrorString, 6000)                                                              \
  X(cuMemAlloc, 3020)                                                                    \
  X(cuMemFree, 3020)                                                                     \
  X(cuMemcpyHtoD, 3020)                                                                  \
  X(cuMemcpyDtoH, 3020)                                                                  \
  X(cuMemcpyDtoD, 3020)                                                                  \
  X(cuMemcpyHtoDAsync, 3020)                                                             \
  X(cuMemcpyDtoHAsync, 3020)                                                             \
  X(cuMemsetD8, 3020)                                                                    \
  X(cuMemsetD32, 3020)                                                                   \
  X(cuMemsetD8Async, 3020)                                                               \
  X(cuMemsetD32Async, 3020)                                                              \
  X(cuStreamCreate, 2000)                                                                \
  X(cuStreamDestroy, 4000)                                                               \
  X(cuStreamSynchronize, 2000)                                                           \
  X(cuStreamIsCapturing, 10000)                                                          \
  X(cuEventCreate, 2000)                                                                 \
  X(cuEventDestroy, 4000)                                                                \
  X(cuEventRecord, 2000)                                                                 \
  X(cuEventSynchronize, 2000)                                                            \
  X(cuEventElapsedTime, 12080)                                                           \
  X(cuMemGetInfo, 3020)                                                                  \
  X(cuPointerGetAttribute, 4000)                                                         \
  X(cuMemAllocAsync, 11020)                                                              \
  X(cuMemFreeAsync, 11020)                                                               \
  X(cuTensorMapEncodeTiled, 12000)

/// A table of driver entry points. The real one is filled by probe_driver(); tests build fakes
/// (S56) and leave the entries they don't need null.
struct DriverApi {
#define RAJIT_DRIVER_MEMBER(name, version) decltype(&::name) name = nullptr;
  RAJIT_DRIVER_API(RAJIT_DRIVER_MEMBER)
#undef RAJIT_DRIVER_MEMBER
};

/// One row of RAJIT_DRIVER_API, for `rajit info` and for tests.
struct DriverEntry {
  const char* name;  // the name given to cuGetProcAddress ("cuMemAlloc", not "cuMemAlloc_v2")
  int version;
};
std::span<const DriverEntry> driver_entries() noexcept;

struct DriverStatus {
  bool ok = false;
  std::string reason;  // why not ok: the dlerror() text, "cuInit: CUDA_ERROR_NO_DEVICE", ...
  int version = 0;     // cuDriverGetVersion, e.g. 13000; 0 when unknown
};

/// Loads libcuda.so.1, resolves the table and calls cuInit(0), once per process; later calls
/// return the cached result. With a fake installed, reports the fake's status instead.
/// Thread-safe. Throws: nothing.
DriverStatus probe_driver() noexcept;

/// The active table: the fake if one is installed, else the real driver.
/// Thread-safe. Throws: NoDriverError(reason) when probe_driver() fails.
const DriverApi& driver();

/// Replaces the driver with `fake` for host tests (S56); nullptr restores the real driver.
/// The fake's cuInit/cuDriverGetVersion (if non-null) are called here to form its status, so a
/// fake whose cuInit fails makes driver() throw NoDriverError. `fake` must outlive every object
/// created through it (modules, kernels, caches). Not for production use.
void install_driver_for_testing(const DriverApi* fake);

namespace detail {
/// Builds the DriverError for a failed check; out of line so the macro stays small.
[[noreturn]] void throw_driver_error(CUresult result, const char* expression,
                                     const std::string& subject);
}  // namespace detail

/// "CUDA_ERROR_INVALID_IMAGE": from the active driver when it can tell, else a built-in table,
/// so fakes and unloaded drivers still produce readable messages. Throws: nothing.
const char* result_name(CUresult result) noexcept;
/// The driver's description of `result` ("device kernel image is invalid"), or "" if unknown.
const char* result_string(CUresult result) noexcept;

/// Evaluates `expr` (a CUresult) and, if it is not CUDA_SUCCESS, throws DriverError with
/// "<call> failed: CUDA_ERROR_X (description) — <subject>", where the subject is formatted from
/// the remaining fmt arguments only on failure (S32), e.g.
///   RAJIT_CU_CHECK(api.cuModuleLoadData(&m, image), "loading {} on device {}", name, dev);
#define RAJIT_CU_CHECK(expr, ...)                                                  \
  do {                                                                             \
    const CUresult rajit_cu_check_result_ = (expr);                                \
    if (rajit_cu_check_result_ != CUDA_SUCCESS) {                                  \
      ::rajit::rt::detail::throw_driver_error(rajit_cu_check_result_, #expr,       \
                                              ::fmt::format(__VA_ARGS__));         \
    }                                                                              \
  } while (0)

/// Makes `device_ordinal`'s primary context current on the calling thread (if no context or a
/// different one is current) and returns it. The primary context is retained once per device and
/// never released, because cached modules live in it. Thread-safe.
/// Throws: NoDriverError, DriverError (bad ordinal, device unavailable).
CUcontext make_primary_context_current(int device_ordinal);

/// The device of the calling thread's current context. Throws: DriverError if none is current.
int current_device();

/// Number of CUDA devices. Throws: NoDriverError, DriverError.
int device_count();

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  std::size_t total_mem = 0;
  int max_smem_per_block_optin = 0;  // bytes a block may use after opting in (S37)
  int l2_bytes = 0;
};

/// Queries device properties; needs no current context. Throws: NoDriverError, DriverError.
DeviceInfo device_info(int ordinal);

}  // namespace rajit::rt
