/// NVRTC loaded with dlopen (S30) and a value-returning compile() to CUBIN with ptxas resource usage (S33, S37).
#pragma once

#include <nvrtc.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rajit::rt {

// The NVRTC entry points we use; members are named exactly like the C functions (S28).
#define RAJIT_NVRTC_API(X)   \
  X(nvrtcVersion)            \
  X(nvrtcGetErrorString)     \
  X(nvrtcGetNumSupportedArchs) \
  X(nvrtcGetSupportedArchs)  \
  X(nvrtcCreateProgram)      \
  X(nvrtcDestroyProgram)     \
  X(nvrtcCompileProgram)     \
  X(nvrtcGetProgramLogSize)  \
  X(nvrtcGetProgramLog)      \
  X(nvrtcGetPTXSize)         \
  X(nvrtcGetPTX)             \
  X(nvrtcGetCUBINSize)       \
  X(nvrtcGetCUBIN)

struct NvrtcApi {
#define RAJIT_NVRTC_MEMBER(name) decltype(&::name) name = nullptr;
  RAJIT_NVRTC_API(RAJIT_NVRTC_MEMBER)
#undef RAJIT_NVRTC_MEMBER
};

struct NvrtcStatus {
  bool ok = false;
  std::string reason;   // why not ok: every library tried, with the last dlerror()
  int major = 0;        // nvrtcVersion()
  int minor = 0;
  std::string library;  // the name or path that dlopen accepted
};

/// Loads libnvrtc once per process: $RAJIT_NVRTC_LIBRARY if set (and nothing else), else
/// libnvrtc.so.<CUDA major>, libnvrtc.so.<major>.9 ... .0, libnvrtc.so, then the same names under
/// $RAJIT_CUDA_HOME, $CUDA_HOME and /usr/local/cuda (lib64/, lib/). Thread-safe. Throws: nothing.
NvrtcStatus probe_nvrtc() noexcept;

/// The loaded table. Thread-safe. Throws: NvrtcError(NvrtcError::kNotLoaded) if probe_nvrtc() fails.
const NvrtcApi& nvrtc_api();

/// "13.0". Throws: NvrtcError if NVRTC is unavailable.
std::string nvrtc_version_string();

/// The GPU architectures this NVRTC can target, e.g. {75, 80, 86, ..., 120}.
/// Throws: NvrtcError.
std::vector<int> nvrtc_supported_archs();

/// Owner of an nvrtcProgram (S34). The deleter never throws.
struct ProgramDestroy {
  void operator()(_nvrtcProgram* program) const noexcept;
};
using NvrtcProgram = std::unique_ptr<_nvrtcProgram, ProgramDestroy>;

/// Per-kernel resources as reported by `ptxas -v`; -1 where the report did not say.
struct ResourceUsage {
  int registers = -1;
  int shared_bytes = -1;  // static shared memory only; dynamic smem is a launch parameter
  int spill_store_bytes = -1;
  int spill_load_bytes = -1;
  int stack_bytes = -1;
  // ptxas reported that it serialised the entry's wgmma.mma_async instructions (a wait after
  // each: "Potential Performance Loss", C7510-C7519), which costs the overlap they exist for.
  bool wgmma_serialized = false;
};

/// Reads the ptxas verbose report in an NVRTC log for `entry_name` (the first entry function
/// when empty). Exposed so its format assumptions are tested on their own. Throws: nothing.
ResourceUsage parse_ptxas_resources(std::string_view log, std::string_view entry_name) noexcept;

struct CompileRequest {
  std::string program_name;  // appears in NVRTC diagnostics ("<name>(12): error: ...")
  std::string source;        // self-contained: no include path is set
  std::vector<std::string> options;  // without --gpu-architecture; compile() adds it
  std::string arch;                  // "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"
  bool want_ptx = false;
  bool want_cubin = true;
  std::string entry_name;  // extern "C" kernel whose resources to report
};

struct CompileResult {
  bool ok = false;
  std::string log;  // kept on success too: it has warnings and the ptxas report (S37)
  std::vector<char> cubin;
  std::string ptx;
  ResourceUsage resources;
  std::vector<std::string> options_used;  // exactly what NVRTC was given
};

/// The option compile() adds to get the ptxas resource report.
inline constexpr std::string_view kPtxasVerboseOption = "--ptxas-options=-v";

/// Compiles `request` to CUBIN for `request.arch` (and PTX if asked). A source or option that
/// NVRTC rejects gives ok = false with the log; so does a malformed request (bad arch, an arch
/// option in `options`). Thread-safe.
/// Throws: NvrtcError when NVRTC is missing or fails internally (e.g. out of memory).
CompileResult compile(const CompileRequest& request);

}  // namespace rajit::rt
