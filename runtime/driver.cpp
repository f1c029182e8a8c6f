/// Loading libcuda with dlopen + cuGetProcAddress, the fake-driver hook, error text and context/device helpers.
#include "runtime/driver.hpp"

#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <array>
#include <atomic>
#include <cctype>
#include <map>
#include <mutex>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/log.hpp"

namespace rajit::rt {

// Each table entry's version must name the PFN typedef whose signature `decltype(&::name)` has;
// otherwise cuGetProcAddress would hand back a function with a different ABI (S28).
#define RAJIT_DRIVER_CHECK_VERSION(name, version)                              \
  static_assert(std::is_same_v<decltype(&::name), PFN_##name##_v##version>, \
                "RAJIT_DRIVER_API: wrong ABI version for " #name);
RAJIT_DRIVER_API(RAJIT_DRIVER_CHECK_VERSION)
#undef RAJIT_DRIVER_CHECK_VERSION

namespace {

constexpr DriverEntry kDriverEntries[] = {
#define RAJIT_DRIVER_ENTRY(name, version) DriverEntry{#name, version},
    RAJIT_DRIVER_API(RAJIT_DRIVER_ENTRY)
#undef RAJIT_DRIVER_ENTRY
};

struct RealDriver {
  DriverApi api;
  DriverStatus status;
};

std::string dlerror_text(const char* fallback) {
  const char* e = dlerror();
  return e != nullptr ? std::string(e) : std::string(fallback);
}

const char* builtin_result_name(CUresult r) noexcept {
  switch (r) {
#define RAJIT_RESULT_CASE(x) \
  case x: return #x;
    RAJIT_RESULT_CASE(CUDA_SUCCESS)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_VALUE)
    RAJIT_RESULT_CASE(CUDA_ERROR_OUT_OF_MEMORY)
    RAJIT_RESULT_CASE(CUDA_ERROR_NOT_INITIALIZED)
    RAJIT_RESULT_CASE(CUDA_ERROR_DEINITIALIZED)
    RAJIT_RESULT_CASE(CUDA_ERROR_NO_DEVICE)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_DEVICE)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_IMAGE)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_CONTEXT)
    RAJIT_RESULT_CASE(CUDA_ERROR_NO_BINARY_FOR_GPU)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_PTX)
    RAJIT_RESULT_CASE(CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_SOURCE)
    RAJIT_RESULT_CASE(CUDA_ERROR_FILE_NOT_FOUND)
    RAJIT_RESULT_CASE(CUDA_ERROR_SHARED_OBJECT_INIT_FAILED)
    RAJIT_RESULT_CASE(CUDA_ERROR_OPERATING_SYSTEM)
    RAJIT_RESULT_CASE(CUDA_ERROR_INVALID_HANDLE)
    RAJIT_RESULT_CASE(CUDA_ERROR_NOT_FOUND)
    RAJIT_RESULT_CASE(CUDA_ERROR_NOT_READY)
    RAJIT_RESULT_CASE(CUDA_ERROR_ILLEGAL_ADDRESS)
    RAJIT_RESULT_CASE(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
    RAJIT_RESULT_CASE(CUDA_ERROR_LAUNCH_TIMEOUT)
    RAJIT_RESULT_CASE(CUDA_ERROR_LAUNCH_FAILED)
    RAJIT_RESULT_CASE(CUDA_ERROR_ILLEGAL_INSTRUCTION)
    RAJIT_RESULT_CASE(CUDA_ERROR_MISALIGNED_ADDRESS)
    RAJIT_RESULT_CASE(CUDA_ERROR_NOT_SUPPORTED)
    RAJIT_RESULT_CASE(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)
    RAJIT_RESULT_CASE(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    RAJIT_RESULT_CASE(CUDA_ERROR_UNKNOWN)
#undef RAJIT_RESULT_CASE
    default: return "CUDA_ERROR_(unknown code)";
  }
}

// Never returns: the outer noexcept makes any throw here a crash, so every path builds a status.
RealDriver* load_real_driver() noexcept {
  auto* d = new RealDriver();
  DriverStatus& st = d->status;
  // RTLD_LOCAL keeps libcuda's symbols out of the global namespace; ".so.1" is the only name that
  // containers guarantee (S27). The handle is never closed: modules may outlive any owner.
  void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    st.reason = dlerror_text("dlopen(libcuda.so.1) failed");
    return d;
  }
  // cuGetProcAddress_v2 (ABI 12000) reports per-symbol status; the v1 symbol cannot tell "missing"
  // from "driver too old".
  auto* get_proc = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(handle, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    st.reason = "libcuda.so.1 has no cuGetProcAddress_v2 (driver older than CUDA 12.0): " +
                dlerror_text("symbol not found");
    return d;
  }
  std::vector<std::string> missing;
  auto resolve = [&](const char* name, int version, void** slot) {
    CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    const CUresult r = get_proc(name, slot, version, CU_GET_PROC_ADDRESS_DEFAULT, &found);
    if (r != CUDA_SUCCESS || found != CU_GET_PROC_ADDRESS_SUCCESS || *slot == nullptr) {
      *slot = nullptr;
      missing.push_back(fmt::format("{} (ABI {}{})", name, version,
                                    found == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                        ? ", driver too old"
                                        : ""));
    }
  };
  DriverApi& api = d->api;
#define RAJIT_DRIVER_RESOLVE(name, version) \
  resolve(#name, version, reinterpret_cast<void**>(&api.name));
  RAJIT_DRIVER_API(RAJIT_DRIVER_RESOLVE)
#undef RAJIT_DRIVER_RESOLVE

  if (api.cuDriverGetVersion != nullptr) api.cuDriverGetVersion(&st.version);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
    st.reason = fmt::format(
        "libcuda.so.1 (driver version {}) lacks {}; rajit needs a driver for CUDA {}.{} or newer",
        st.version, list, RAJIT_CUDA_MAJOR, RAJIT_CUDA_MINOR);
    return d;
  }
  const CUresult init = api.cuInit(0);
  if (init != CUDA_SUCCESS) {
    const char* name = nullptr;
    if (api.cuGetErrorName(init, &name) != CUDA_SUCCESS || name == nullptr) {
      name = builtin_result_name(init);
    }
    st.reason = fmt::format("cuInit: {}", name);
    return d;
  }
  st.ok = true;
  return d;
}

// Leaked on purpose: objects destroyed at exit (cached modules) still call through the table,
// and a destroyed table would be a use-after-free in static destruction order.
RealDriver& real_driver() noexcept {
  static RealDriver* d = load_real_driver();
  return *d;
}

struct FakeSlot {
  std::mutex mutex;
  std::atomic<bool> installed{false};
  const DriverApi* api = nullptr;
  DriverStatus status;
};

FakeSlot& fake_slot() noexcept {
  static FakeSlot* s = new FakeSlot();
  return *s;
}

// Primary contexts we retained, keyed by table too so a fake never sees the real driver's handles.
struct RetainedContext {
  CUcontext context = nullptr;
  bool through_fake = false;
};
struct RetainedContexts {
  std::mutex mutex;
  std::map<std::pair<const DriverApi*, int>, RetainedContext> contexts;
};

RetainedContexts& retained_contexts() noexcept {
  static RetainedContexts* r = new RetainedContexts();
  return *r;
}

bool is_installed_fake(const DriverApi* api) noexcept {
  FakeSlot& f = fake_slot();
  if (!f.installed.load(std::memory_order_acquire)) return false;
  const std::lock_guard<std::mutex> lock(f.mutex);
  return f.api == api;
}

// The table to ask for error names: never throws and never loads libcuda on a fake's behalf.
const DriverApi* api_for_messages() noexcept {
  FakeSlot& f = fake_slot();
  if (f.installed.load(std::memory_order_acquire)) {
    const std::lock_guard<std::mutex> lock(f.mutex);
    return f.api;
  }
  return &real_driver().api;
}

std::string_view entry_point_name(std::string_view expr) noexcept {
  // "api.cuModuleLoadData(&m, data)" -> "cuModuleLoadData": the first identifier starting with
  // "cu" that is called.
  for (std::size_t i = 0; i + 2 < expr.size(); ++i) {
    const bool starts_identifier =
        i == 0 || !(std::isalnum(static_cast<unsigned char>(expr[i - 1])) || expr[i - 1] == '_');
    if (!starts_identifier || expr.compare(i, 2, "cu") != 0) continue;
    std::size_t end = i;
    while (end < expr.size() &&
           (std::isalnum(static_cast<unsigned char>(expr[end])) || expr[end] == '_')) {
      ++end;
    }
    std::size_t next = end;
    while (next < expr.size() && expr[next] == ' ') ++next;
    if (next < expr.size() && expr[next] == '(') return expr.substr(i, end - i);
  }
  return expr;
}

}  // namespace

std::span<const DriverEntry> driver_entries() noexcept { return kDriverEntries; }

DriverStatus probe_driver() noexcept {
  FakeSlot& f = fake_slot();
  if (f.installed.load(std::memory_order_acquire)) {
    const std::lock_guard<std::mutex> lock(f.mutex);
    if (f.api != nullptr) return f.status;
  }
  return real_driver().status;
}

const DriverApi& driver() {
  FakeSlot& f = fake_slot();
  if (f.installed.load(std::memory_order_acquire)) {
    const std::lock_guard<std::mutex> lock(f.mutex);
    if (f.api != nullptr) {
      if (!f.status.ok) throw NoDriverError(f.status.reason);
      return *f.api;
    }
  }
  RealDriver& d = real_driver();
  if (!d.status.ok) throw NoDriverError(d.status.reason);
  return d.api;
}

void install_driver_for_testing(const DriverApi* fake) {
  DriverStatus status;
  if (fake != nullptr) {
    status.ok = true;
    if (fake->cuDriverGetVersion != nullptr) fake->cuDriverGetVersion(&status.version);
    if (fake->cuInit != nullptr) {
      const CUresult r = fake->cuInit(0);
      if (r != CUDA_SUCCESS) {
        const char* name = nullptr;
        if (fake->cuGetErrorName == nullptr || fake->cuGetErrorName(r, &name) != CUDA_SUCCESS ||
            name == nullptr) {
          name = builtin_result_name(r);
        }
        status.ok = false;
        status.reason = fmt::format("cuInit: {}", name);
      }
    }
  }
  {
    // A new fake may reuse an old one's address, so contexts retained through it are stale.
    RetainedContexts& rc = retained_contexts();
    const std::lock_guard<std::mutex> lock(rc.mutex);
    for (auto it = rc.contexts.begin(); it != rc.contexts.end();) {
      it = it->second.through_fake ? rc.contexts.erase(it) : std::next(it);
    }
  }
  FakeSlot& f = fake_slot();
  const std::lock_guard<std::mutex> lock(f.mutex);
  f.api = fake;
  f.status = std::move(status);
  f.installed.store(fake != nullptr, std::memory_order_release);
}

const char* result_name(CUresult result) noexcept {
  const DriverApi* api = api_for_messages();
  const char* name = nullptr;
  if (api != nullptr && api->cuGetErrorName != nullptr &&
      api->cuGetErrorName(result, &name) == CUDA_SUCCESS && name != nullptr) {
    return name;
  }
  return builtin_result_name(result);
}

const char* result_string(CUresult result) noexcept {
  const DriverApi* api = api_for_messages();
  const char* text = nullptr;
  if (api != nullptr && api->cuGetErrorString != nullptr &&
      api->cuGetErrorString(result, &text) == CUDA_SUCCESS && text != nullptr) {
    return text;
  }
  return "";
}

namespace detail {

void throw_driver_error(CUresult result, const char* expression, const std::string& subject) {
  const std::string call(entry_point_name(expression));
  const char* description = result_string(result);
  std::string message = fmt::format("{} failed: {}", call, result_name(result));
  if (*description != '\0') message += fmt::format(" ({})", description);
  if (!subject.empty()) message += " \u2014 " + subject;
  throw DriverError(result, call, message);
}

}  // namespace detail

CUcontext make_primary_context_current(int device_ordinal) {
  const DriverApi& api = driver();
  CUcontext ctx = nullptr;
  {
    RetainedContexts& rc = retained_contexts();
    const std::lock_guard<std::mutex> lock(rc.mutex);
    auto it = rc.contexts.find({&api, device_ordinal});
    if (it != rc.contexts.end()) {
      ctx = it->second.context;
    } else {
      CUdevice device = 0;
      RAJIT_CU_CHECK(api.cuDeviceGet(&device, device_ordinal), "device {}", device_ordinal);
      RAJIT_CU_CHECK(api.cuDevicePrimaryCtxRetain(&ctx, device),
                     "retaining the primary context of device {}", device_ordinal);
      rc.contexts.emplace(std::make_pair(&api, device_ordinal),
                          RetainedContext{ctx, is_installed_fake(&api)});
    }
  }
  CUcontext current = nullptr;
  RAJIT_CU_CHECK(api.cuCtxGetCurrent(&current), "device {}", device_ordinal);
  if (current != ctx) {
    RAJIT_CU_CHECK(api.cuCtxSetCurrent(ctx), "making device {}'s primary context current",
                   device_ordinal);
  }
  return ctx;
}

int current_device() {
  const DriverApi& api = driver();
  CUdevice device = 0;
  RAJIT_CU_CHECK(api.cuCtxGetDevice(&device), "querying the current context's device");
  return static_cast<int>(device);
}

int device_count() {
  const DriverApi& api = driver();
  int count = 0;
  RAJIT_CU_CHECK(api.cuDeviceGetCount(&count), "counting devices");
  return count;
}

DeviceInfo device_info(int ordinal) {
  const DriverApi& api = driver();
  CUdevice device = 0;
  RAJIT_CU_CHECK(api.cuDeviceGet(&device, ordinal), "device {}", ordinal);
  DeviceInfo info;
  info.ordinal = ordinal;
  std::array<char, 256> name{};
  RAJIT_CU_CHECK(api.cuDeviceGetName(name.data(), static_cast<int>(name.size()), device),
                 "device {}", ordinal);
  info.name = name.data();
  auto attribute = [&](CUdevice_attribute attr, const char* what) {
    int value = 0;
    RAJIT_CU_CHECK(api.cuDeviceGetAttribute(&value, attr, device), "{} of device {}", what,
                   ordinal);
    return value;
  };
  info.cc_major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "compute capability");
  info.cc_minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "compute capability");
  info.sm_count = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count");
  info.max_smem_per_block_optin =
      attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "opt-in shared memory");
  info.l2_bytes = attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2 size");
  std::size_t total = 0;
  RAJIT_CU_CHECK(api.cuDeviceTotalMem(&total, device), "device {}", ordinal);
  info.total_mem = total;
  return info;
}

}  // namespace rajit::rt
