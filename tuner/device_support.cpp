/// View checks, per-device facts and context selection shared by tuner/forward.cpp and backward.cpp.
#include "tuner/device_support.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "runtime/driver.hpp"
#include "templates/attention/limits.cuh"

namespace rajit::tune::detail {

void check_view(std::vector<std::string>& out, const char* name, const TensorView& t,
                const std::array<long long, 4>& want, int align_elems) {
  if (t.ptr == nullptr) {
    out.push_back(fmt::format("{}: null pointer", name));
    return;
  }
  if (t.shape != want) {
    out.push_back(fmt::format("{}: shape ({}, {}, {}, {}) must be ({}, {}, {}, {}) = (batch, heads, "
                              "rows, width)",
                              name, t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0],
                              want[1], want[2], want[3]));
  }
  if (t.stride[3] != 1) {
    out.push_back(fmt::format("{}: last stride is {}; it must be 1 (no hidden copies are made)", name,
                              t.stride[3]));
  }
  const auto bytes = static_cast<long long>(align_elems) * 2;
  if (reinterpret_cast<std::uintptr_t>(t.ptr) % static_cast<std::uintptr_t>(bytes) != 0) {
    out.push_back(fmt::format("{}: pointer {} is not {}-byte aligned", name, t.ptr, bytes));
  }
  for (int d = 0; d < 3; ++d) {
    if (t.stride[d] < 0 || t.stride[d] % align_elems != 0) {
      out.push_back(fmt::format("{}: stride[{}] = {} must be a non-negative multiple of {} elements",
                                name, d, t.stride[d], align_elems));
    }
  }
}

DeviceFacts device_facts(int ordinal) {
  static std::mutex mu;
  static std::unordered_map<int, DeviceFacts> facts;
  std::lock_guard lock(mu);
  if (auto it = facts.find(ordinal); it != facts.end()) return it->second;
  const rt::DeviceInfo info = rt::device_info(ordinal);
  const int cc = info.cc_major * 10 + info.cc_minor;
  DeviceFacts f{cc, std::min(info.max_smem_per_block_optin, attn::max_shared_bytes_for_cc(cc))};
  facts.emplace(ordinal, f);
  return f;
}

std::string arch_for(int cc) { return fmt::format("sm_{}", cc); }

int device_of(const void* ptr, const char* name) {
  const rt::DriverApi& api = rt::driver();
  int ordinal = -1;
  const CUresult r = api.cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                               reinterpret_cast<CUdeviceptr>(ptr));
  if (r != CUDA_SUCCESS) {
    throw ArgumentError({fmt::format("{}: pointer {} is not CUDA device memory ({})", name, ptr,
                                     rt::result_name(r))});
  }
  return ordinal;
}

CUcontext context_for(int ordinal) {
  const rt::DriverApi& api = rt::driver();
  CUcontext ctx = nullptr;
  RAJIT_CU_CHECK(api.cuCtxGetCurrent(&ctx), "querying the current context");
  CUdevice current = -1;
  if (ctx == nullptr || api.cuCtxGetDevice(&current) != CUDA_SUCCESS || current != ordinal) {
    ctx = rt::make_primary_context_current(ordinal);  // keep a caller's own context if it fits
  }
  return ctx;
}

}  // namespace rajit::tune::detail
