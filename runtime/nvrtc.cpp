/// Loading libnvrtc by soname search, compiling to CUBIN, and parsing the ptxas -v report.
#include "runtime/nvrtc.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdlib>

#include "runtime/error.hpp"
#include "runtime/log.hpp"

namespace rajit::rt {
namespace {

struct LoadedNvrtc {
  NvrtcApi api;
  NvrtcStatus status;
};

std::vector<std::string> candidate_libraries() {
  std::vector<std::string> names;
  const std::string major = std::to_string(RAJIT_CUDA_MAJOR);
  names.push_back("libnvrtc.so." + major);
  // Some distributions ship only the full major.minor soname (jitify's search order).
  for (int minor = 9; minor >= 0; --minor) {
    names.push_back(fmt::format("libnvrtc.so.{}.{}", major, minor));
  }
  names.push_back("libnvrtc.so");
  // The toolkit is often installed without being registered with ldconfig.
  std::vector<std::string> homes;
  for (const char* var : {"RAJIT_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') homes.emplace_back(v);
  }
  homes.emplace_back("/usr/local/cuda");
  for (const std::string& home : homes) {
    for (const char* dir : {"lib64", "lib"}) {
      names.push_back(fmt::format("{}/{}/libnvrtc.so.{}", home, dir, major));
    }
  }
  return names;
}

LoadedNvrtc* load_nvrtc() noexcept {
  auto* n = new LoadedNvrtc();
  NvrtcStatus& st = n->status;
  try {
    // RAJIT_DISABLE_NVRTC=1 makes NVRTC unavailable, as on a deployment machine that ships only
    // a kernel bundle; the bundle tests run under it.
    if (const char* off = std::getenv("RAJIT_DISABLE_NVRTC"); off != nullptr && std::string(off) == "1") {
      st.reason = "disabled by RAJIT_DISABLE_NVRTC=1";
      return n;
    }
    std::vector<std::string> names;
    const char* override_path = std::getenv("RAJIT_NVRTC_LIBRARY");
    const bool overridden = override_path != nullptr && *override_path != '\0';
    if (overridden) {
      names.emplace_back(override_path);  // an explicit choice: no silent fallback to another
    } else {
      names = candidate_libraries();
    }
    void* handle = nullptr;
    std::string last_error;
    for (const std::string& name : names) {
      handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) {
        st.library = name;
        break;
      }
      const char* e = dlerror();
      last_error = e != nullptr ? e : "dlopen failed";
    }
    if (handle == nullptr) {
      st.reason = overridden ? fmt::format("RAJIT_NVRTC_LIBRARY={}: {}", override_path, last_error)
                             : fmt::format("no libnvrtc found (tried {} and {} more; last: {})",
                                           names.front(), names.size() - 1, last_error);
      return n;
    }
    std::string missing;
#define RAJIT_NVRTC_RESOLVE(name)                                                  \
  n->api.name = reinterpret_cast<decltype(n->api.name)>(dlsym(handle, #name));     \
  if (n->api.name == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(#name);
    RAJIT_NVRTC_API(RAJIT_NVRTC_RESOLVE)
#undef RAJIT_NVRTC_RESOLVE
    if (!missing.empty()) {
      st.reason = fmt::format("{} lacks {}", st.library, missing);
      return n;
    }
    if (n->api.nvrtcVersion(&st.major, &st.minor) != NVRTC_SUCCESS) {
      st.reason = fmt::format("{}: nvrtcVersion failed", st.library);
      return n;
    }
    st.ok = true;
  } catch (...) {
    st.ok = false;
    st.reason = "out of memory while loading libnvrtc";
  }
  return n;
}

// Leaked on purpose, like the driver table: never dlclose a library whose code may still run.
LoadedNvrtc& loaded() noexcept {
  static LoadedNvrtc* n = load_nvrtc();
  return *n;
}

[[noreturn]] void throw_nvrtc(const NvrtcApi& api, nvrtcResult r, const char* call,
                              std::string_view subject) {
  throw NvrtcError(static_cast<int>(r), call,
                   fmt::format("{} failed: {} \u2014 {}", call, api.nvrtcGetErrorString(r), subject));
}

bool valid_arch(std::string_view arch) noexcept {
  // sm_<digits> with an optional arch-specific ('a') or family ('f') suffix.
  if (arch.size() < 4 || arch.substr(0, 3) != "sm_") return false;
  std::size_t i = 3;
  while (i < arch.size() && std::isdigit(static_cast<unsigned char>(arch[i]))) ++i;
  if (i == 3) return false;
  if (i == arch.size()) return true;
  return i + 1 == arch.size() && (arch[i] == 'a' || arch[i] == 'f');
}

bool is_arch_option(std::string_view opt) noexcept {
  for (std::string_view prefix : {"--gpu-architecture", "-arch", "--gpu-name", "-code"}) {
    if (opt.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

// First integer found before `label` on the same line, e.g. ("Used 8 registers", "registers").
int number_before(std::string_view line, std::string_view label) noexcept {
  const std::size_t at = line.find(label);
  if (at == std::string_view::npos) return -1;
  std::size_t end = at;
  while (end > 0 && line[end - 1] == ' ') --end;
  std::size_t begin = end;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(line[begin - 1]))) --begin;
  if (begin == end) return -1;
  int value = -1;
  std::from_chars(line.data() + begin, line.data() + end, value);
  return value;
}

std::string_view next_line(std::string_view& rest) noexcept {
  const std::size_t eol = rest.find('\n');
  const std::string_view line = rest.substr(0, eol);
  rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
  return line;
}

}  // namespace

NvrtcStatus probe_nvrtc() noexcept {
  try {
    return loaded().status;
  } catch (...) {
    return NvrtcStatus{false, "out of memory", 0, 0, {}};
  }
}

const NvrtcApi& nvrtc_api() {
  LoadedNvrtc& n = loaded();
  if (!n.status.ok) {
    throw NvrtcError(NvrtcError::kNotLoaded, "dlopen", "NVRTC unavailable: " + n.status.reason);
  }
  return n.api;
}

std::string nvrtc_version_string() {
  nvrtc_api();
  const NvrtcStatus& st = loaded().status;
  return fmt::format("{}.{}", st.major, st.minor);
}

std::vector<int> nvrtc_supported_archs() {
  const NvrtcApi& api = nvrtc_api();
  int count = 0;
  nvrtcResult r = api.nvrtcGetNumSupportedArchs(&count);
  if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetNumSupportedArchs", "listing archs");
  std::vector<int> archs(static_cast<std::size_t>(count));
  r = api.nvrtcGetSupportedArchs(archs.data());
  if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetSupportedArchs", "listing archs");
  return archs;
}

void ProgramDestroy::operator()(_nvrtcProgram* program) const noexcept {
  if (program == nullptr) return;
  // A program exists only if nvrtc_api() once succeeded, so loaded() is ready and cannot throw.
  const NvrtcApi& api = loaded().api;
  const nvrtcResult r = api.nvrtcDestroyProgram(&program);
  if (r != NVRTC_SUCCESS) log_warn("nvrtcDestroyProgram failed: {}", api.nvrtcGetErrorString(r));
}

ResourceUsage parse_ptxas_resources(std::string_view log, std::string_view entry_name) noexcept {
  // ptxas -v (CUDA 12/13) writes, per entry:
  //   ptxas info    : Compiling entry function 'k' for 'sm_90a'
  //   ptxas info    : Function properties for k
  //   ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
  //   ptxas info    : Used 8 registers, used 1 barriers, 1024 bytes smem, 360 bytes cmem[0]
  // "Function properties" blocks for non-inlined device functions may follow, so the entry's
  // block is matched by name and its "Used" line by position within the entry's section.
  ResourceUsage usage;
  static constexpr std::string_view kEntryMarker = "Compiling entry function '";
  // ptxas reports wgmma serialisation ahead of the entry's section, naming the function:
  //   ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are
  //   serialized due to ... in the function 'k'
  static constexpr std::string_view kSerialized = "wgmma.mma_async instructions are serialized";
  static constexpr std::string_view kInFunction = "in the function '";
  for (std::string_view scan = log; !scan.empty();) {
    const std::string_view line = next_line(scan);
    const std::size_t at = line.find(kInFunction);
    if (line.find(kSerialized) == std::string_view::npos || at == std::string_view::npos) continue;
    const std::string_view name = line.substr(at + kInFunction.size());
    if (entry_name.empty() || name.substr(0, name.find('\'')) == entry_name) {
      usage.wgmma_serialized = true;
    }
  }
  std::string_view rest = log;
  bool in_entry = false;
  std::string_view entry;
  while (!rest.empty()) {
    const std::string_view line = next_line(rest);
    const std::size_t marker = line.find(kEntryMarker);
    if (marker != std::string_view::npos) {
      if (in_entry) break;  // the next entry starts: ours is complete
      const std::string_view name = line.substr(marker + kEntryMarker.size());
      const std::string_view found = name.substr(0, name.find('\''));
      if (entry_name.empty() || found == entry_name) {
        in_entry = true;
        entry = found;
      }
      continue;
    }
    if (!in_entry) continue;
    if (line.find("Function properties for ") != std::string_view::npos &&
        line.substr(line.find("Function properties for ") + 24) == entry && !rest.empty()) {
      const std::string_view props = next_line(rest);
      usage.stack_bytes = number_before(props, "bytes stack frame");
      usage.spill_store_bytes = number_before(props, "bytes spill stores");
      usage.spill_load_bytes = number_before(props, "bytes spill loads");
      continue;
    }
    if (line.find(": Used ") != std::string_view::npos) {
      usage.registers = number_before(line, "registers");
      // No "smem" field means the kernel declares no static shared memory.
      const int smem = number_before(line, "bytes smem");
      usage.shared_bytes = smem < 0 ? 0 : smem;
    }
  }
  return usage;
}

CompileResult compile(const CompileRequest& request) {
  CompileResult result;
  const std::string program_name =
      request.program_name.empty() ? std::string("rajit_program.cu") : request.program_name;
  if (!valid_arch(request.arch)) {
    result.log = fmt::format("rajit: invalid CompileRequest::arch '{}' for {} (expected e.g. sm_90a)",
                             request.arch, program_name);
    return result;
  }
  for (const std::string& opt : request.options) {
    if (is_arch_option(opt)) {
      result.log = fmt::format(
          "rajit: option '{}' for {} selects an architecture; set CompileRequest::arch instead", opt,
          program_name);
      return result;
    }
  }
  result.options_used = request.options;
  result.options_used.push_back("--gpu-architecture=" + request.arch);
  result.options_used.emplace_back(kPtxasVerboseOption);

  const NvrtcApi& api = nvrtc_api();
  _nvrtcProgram* raw = nullptr;
  nvrtcResult r = api.nvrtcCreateProgram(&raw, request.source.c_str(), program_name.c_str(), 0,
                                         nullptr, nullptr);
  if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcCreateProgram", program_name);
  const NvrtcProgram program(raw);

  std::vector<const char*> argv;
  argv.reserve(result.options_used.size());
  for (const std::string& opt : result.options_used) argv.push_back(opt.c_str());
  const nvrtcResult compiled =
      api.nvrtcCompileProgram(program.get(), static_cast<int>(argv.size()), argv.data());

  std::size_t log_size = 0;
  r = api.nvrtcGetProgramLogSize(program.get(), &log_size);
  if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetProgramLogSize", program_name);
  if (log_size > 1) {
    result.log.resize(log_size);
    r = api.nvrtcGetProgramLog(program.get(), result.log.data());
    if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetProgramLog", program_name);
    result.log.resize(log_size - 1);  // the size counts the terminating NUL
  }
  if (compiled == NVRTC_ERROR_COMPILATION || compiled == NVRTC_ERROR_INVALID_OPTION) {
    return result;  // rejected: the log says why (S33)
  }
  if (compiled != NVRTC_SUCCESS) throw_nvrtc(api, compiled, "nvrtcCompileProgram", program_name);

  if (request.want_cubin) {
    std::size_t size = 0;
    r = api.nvrtcGetCUBINSize(program.get(), &size);
    if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetCUBINSize", program_name);
    result.cubin.resize(size);
    r = api.nvrtcGetCUBIN(program.get(), result.cubin.data());
    if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetCUBIN", program_name);
  }
  if (request.want_ptx) {
    std::size_t size = 0;
    r = api.nvrtcGetPTXSize(program.get(), &size);
    if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetPTXSize", program_name);
    result.ptx.resize(size);
    r = api.nvrtcGetPTX(program.get(), result.ptx.data());
    if (r != NVRTC_SUCCESS) throw_nvrtc(api, r, "nvrtcGetPTX", program_name);
    while (!result.ptx.empty() && result.ptx.back() == '\0') result.ptx.pop_back();
  }
  result.resources = parse_ptxas_resources(result.log, request.entry_name);
  result.ok = true;
  return result;
}

}  // namespace rajit::rt
