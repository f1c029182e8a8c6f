/// librajit_c.so: the C ABI of rajit_c.h over rajit::forward/backward and the float64 reference;
/// every C++ exception becomes a status code and a thread-local message here, and nowhere else.
#include "tools/capi/rajit_c.h"

#include <fmt/format.h>

#include <cmath>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "generator/render.hpp"
#include "generator/spec.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/nvrtc.hpp"
#include "tuner/backward.hpp"
#include "tuner/forward.hpp"
#include "tuner/reference.hpp"

namespace {

using rajit::tune::ArgumentError;

thread_local std::string t_last_error;
thread_local std::string t_info_json;

// The one place exceptions stop: runs `body` and maps what it throws to a status (most derived
// classes first, since ArgumentError is a SpecError is an invalid_argument).
template <class Body>
rajit_status guarded(Body&& body) noexcept {
  t_last_error.clear();
  try {
    body();
    return RAJIT_OK;
  } catch (const rajit::gen::SpecError& e) {  // ArgumentError too: same problem-list text
    t_last_error = e.what();
    return RAJIT_INVALID_ARGUMENT;
  } catch (const rajit::rt::CompileError& e) {
    t_last_error = e.what();
    return RAJIT_COMPILE_ERROR;
  } catch (const rajit::rt::NvrtcError& e) {
    t_last_error = e.what();
    return RAJIT_NVRTC_ERROR;
  } catch (const rajit::rt::NoDriverError& e) {
    t_last_error = e.what();
    return RAJIT_NO_GPU;
  } catch (const rajit::rt::DriverError& e) {
    t_last_error = e.what();
    return RAJIT_DRIVER_ERROR;
  } catch (const std::exception& e) {
    try {
      t_last_error = fmt::format("internal error: {}", e.what());
    } catch (...) {
    }
    return RAJIT_INTERNAL;
  } catch (...) {
    t_last_error = "internal error: unknown exception";
    return RAJIT_INTERNAL;
  }
}

void require_args(const void* args, const char* function) {
  if (args == nullptr) throw ArgumentError({fmt::format("{}: args must not be NULL", function)});
}

rajit::gen::AttentionSpec to_spec(const rajit_spec& s) {
  std::vector<std::string> problems;
  if (s.causal != 0 && s.causal != 1) {
    problems.push_back(fmt::format("spec.causal={}: must be 0 or 1", s.causal));
  }
  if (s.bias != RAJIT_BIAS_NONE && s.bias != RAJIT_BIAS_COLUMN) {
    problems.push_back(fmt::format("spec.bias={}: must be 0 (none) or 1 (column)", s.bias));
  }
  if (s.dtype != RAJIT_FP16 && s.dtype != RAJIT_BF16) {
    problems.push_back(fmt::format("spec.dtype={}: must be 0 (fp16) or 1 (bf16)", s.dtype));
  }
  if (!problems.empty()) throw ArgumentError(std::move(problems));
  return {.d_std = s.d_std,
          .r = s.r,
          .head_dim = s.head_dim,
          .causal = s.causal == 1,
          .bias = s.bias == RAJIT_BIAS_COLUMN ? rajit::gen::BiasKind::kColumn
                                              : rajit::gen::BiasKind::kNone,
          .dtype = s.dtype == RAJIT_BF16 ? rajit::gen::Dtype::kBf16 : rajit::gen::Dtype::kFp16};
}

rajit::tune::TensorView to_view(const rajit_tensor& t) {
  rajit::tune::TensorView v;
  v.ptr = t.ptr;
  for (int d = 0; d < 4; ++d) {
    v.shape[d] = t.shape[d];
    v.stride[d] = t.stride[d];
  }
  return v;
}

rajit::tune::MutableTensorView to_mutable_view(const rajit_tensor& t) {
  const rajit::tune::TensorView v = to_view(t);
  return {t.ptr, v.shape, v.stride};
}

rajit::tune::BiasView to_bias(const rajit_bias& b) {
  return {static_cast<const float*>(b.ptr), b.batch_stride, b.head_stride};
}

rajit::tune::ForwardArgs to_forward(const rajit_forward_args& a) {
  rajit::tune::ForwardArgs f;
  f.spec = to_spec(a.spec);
  f.q_std = to_view(a.q_std);
  f.k_low = to_view(a.k_low);
  f.k_std = to_view(a.k_std);
  f.q_low = to_view(a.q_low);
  f.v = to_view(a.v);
  f.o = to_view(a.o);
  f.lse = a.lse;
  f.bias = to_bias(a.bias);
  f.w_std = a.w_std;
  f.w_rec = a.w_rec;
  f.w_disc = a.w_disc;
  f.scale = a.scale;
  f.stream = static_cast<CUstream>(a.stream);
  if (a.tile != nullptr && a.tile[0] != '\0') f.tile = rajit::gen::parse_tile_key(a.tile);
  return f;
}

rajit::tune::BackwardArgs to_backward(const rajit_backward_args& a) {
  rajit::tune::BackwardArgs b;
  b.spec = to_spec(a.spec);
  b.q_std = to_view(a.q_std);
  b.k_low = to_view(a.k_low);
  b.k_std = to_view(a.k_std);
  b.q_low = to_view(a.q_low);
  b.v = to_view(a.v);
  b.o = to_view(a.o);
  b.d_o = to_view(a.d_o);
  b.lse = a.lse;
  b.bias = to_bias(a.bias);
  b.w_std = a.w_std;
  b.w_rec = a.w_rec;
  b.w_disc = a.w_disc;
  b.scale = a.scale;
  b.dq_std = to_mutable_view(a.dq_std);
  b.dk_low = to_mutable_view(a.dk_low);
  b.dk_std = to_mutable_view(a.dk_std);
  b.dq_low = to_mutable_view(a.dq_low);
  b.dv = to_mutable_view(a.dv);
  b.d_bias = a.d_bias;
  b.d_bias_batch_stride = a.d_bias_batch_stride;
  b.d_bias_head_stride = a.d_bias_head_stride;
  b.dw_std = a.dw_std;
  b.dw_rec = a.dw_rec;
  b.dw_disc = a.dw_disc;
  b.workspace = a.workspace;
  b.workspace_bytes = a.workspace_bytes;
  b.deterministic = a.deterministic != 0;
  b.stream = static_cast<CUstream>(a.stream);
  return b;
}

// ---- the float64 reference on strided host tensors ------------------------------------------

struct RefDims {
  long long B = 0, H = 0, Tq = 0, Tk = 0;
};

// Checks one host tensor's pointer, shape and strides against `want`; adds a problem per field.
void check_host_tensor(std::vector<std::string>& out, const char* name, const rajit_tensor& t,
                       const std::array<long long, 4>& want) {
  if (t.ptr == nullptr) {
    out.push_back(fmt::format("{}: pointer must not be NULL", name));
    return;
  }
  for (int d = 0; d < 4; ++d) {
    if (t.shape[d] != want[d]) {
      out.push_back(fmt::format("{}: shape ({}, {}, {}, {}) must be ({}, {}, {}, {})", name,
                                t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0], want[1],
                                want[2], want[3]));
      break;
    }
  }
  for (int d = 0; d < 4; ++d) {
    if (t.stride[d] < 0) {
      out.push_back(fmt::format("{}: stride[{}]={} must be >= 0", name, d, t.stride[d]));
    }
  }
}

// Copies a strided host tensor of doubles into a contiguous vector (or back).
std::vector<double> gather(const rajit_tensor& t) {
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3]));
  const auto* p = static_cast<const double*>(t.ptr);
  for (long long a = 0; a < t.shape[0]; ++a)
    for (long long b = 0; b < t.shape[1]; ++b)
      for (long long c = 0; c < t.shape[2]; ++c)
        for (long long d = 0; d < t.shape[3]; ++d)
          out.push_back(p[a * t.stride[0] + b * t.stride[1] + c * t.stride[2] + d * t.stride[3]]);
  return out;
}

void scatter(const std::vector<double>& src, const rajit_tensor& t) {
  auto* p = static_cast<double*>(t.ptr);
  std::size_t i = 0;
  for (long long a = 0; a < t.shape[0]; ++a)
    for (long long b = 0; b < t.shape[1]; ++b)
      for (long long c = 0; c < t.shape[2]; ++c)
        for (long long d = 0; d < t.shape[3]; ++d)
          p[a * t.stride[0] + b * t.stride[1] + c * t.stride[2] + d * t.stride[3]] = src[i++];
}

std::vector<double> gates(const double* g, long long heads) {
  return g == nullptr ? std::vector<double>{} : std::vector<double>(g, g + heads);
}

// Validates a reference call the way check_forward_args validates a GPU call, and builds the
// contiguous RefProblem.
rajit::tune::RefProblem to_ref_problem(const rajit_reference_args& a, RefDims& dims) {
  rajit::tune::RefProblem p;
  p.spec = to_spec(a.spec);
  rajit::gen::require_valid(p.spec);
  const auto& s = p.spec;
  dims = {a.q_std.shape[0], a.q_std.shape[1], a.q_std.shape[2], a.k_std.shape[2]};
  std::vector<std::string> out;
  if (dims.B < 1 || dims.H < 1 || dims.Tq < 1 || dims.Tk < 1) {
    throw ArgumentError({fmt::format("shape: batch={}, heads={}, seqlen_q={} (from q_std) and "
                                     "seqlen_k={} (from k_std) must all be >= 1",
                                     dims.B, dims.H, dims.Tq, dims.Tk)});
  }
  const long long B = dims.B, H = dims.H, Tq = dims.Tq, Tk = dims.Tk;
  check_host_tensor(out, "q_std", a.q_std, {B, H, Tq, s.d_std});
  check_host_tensor(out, "k_std", a.k_std, {B, H, Tk, s.d_std});
  if (s.r > 0) {
    check_host_tensor(out, "k_low", a.k_low, {B, H, Tq, s.r});
    check_host_tensor(out, "q_low", a.q_low, {B, H, Tk, s.r});
  }
  check_host_tensor(out, "v", a.v, {B, H, Tk, s.head_dim});
  const bool has_bias = s.bias == rajit::gen::BiasKind::kColumn;
  if (has_bias && a.bias.ptr == nullptr) out.push_back("bias: spec.bias=column needs a bias pointer");
  if (!has_bias && a.bias.ptr != nullptr) {
    out.push_back("bias: a bias pointer was given but spec.bias=none");
  }
  if (a.bias.batch_stride < 0 || a.bias.head_stride < 0) {
    out.push_back("bias: strides must be non-negative (batch_stride 0 = shared over the batch)");
  }
  if (!(a.scale >= 0) || std::isinf(a.scale)) {
    out.push_back(fmt::format("scale={}: must be finite and >= 0 (0 = 1/sqrt(d_std+r))", a.scale));
  }
  if (!out.empty()) throw ArgumentError(std::move(out));

  p.batch = static_cast<int>(B);
  p.heads = static_cast<int>(H);
  p.seqlen_q = static_cast<int>(Tq);
  p.seqlen_k = static_cast<int>(Tk);
  p.scale = a.scale;
  p.q_std = gather(a.q_std);
  p.k_std = gather(a.k_std);
  if (s.r > 0) {
    p.k_low = gather(a.k_low);
    p.q_low = gather(a.q_low);
  }
  p.v = gather(a.v);
  if (has_bias) {
    p.bias_batch = a.bias.batch_stride == 0 ? 1 : static_cast<int>(B);
    const auto* beta = static_cast<const double*>(a.bias.ptr);
    for (long long b = 0; b < p.bias_batch; ++b)
      for (long long h = 0; h < H; ++h)
        for (long long j = 0; j < Tk; ++j)
          p.bias.push_back(beta[b * a.bias.batch_stride + h * a.bias.head_stride + j]);
  }
  p.w_std = gates(a.w_std, H);
  p.w_rec = gates(a.w_rec, H);
  p.w_disc = gates(a.w_disc, H);
  return p;
}

void copy_gate_grad(const std::vector<double>& g, double* out) {
  if (out != nullptr) std::copy(g.begin(), g.end(), out);
}

}  // namespace

extern "C" {

const char* rajit_version(void) { return RAJIT_VERSION; }

int rajit_abi_version(void) { return RAJIT_C_ABI_VERSION; }

const char* rajit_last_error(void) { return t_last_error.c_str(); }

const char* rajit_status_name(int status) {
  switch (status) {
    case RAJIT_OK: return "RAJIT_OK";
    case RAJIT_INVALID_ARGUMENT: return "RAJIT_INVALID_ARGUMENT";
    case RAJIT_COMPILE_ERROR: return "RAJIT_COMPILE_ERROR";
    case RAJIT_NVRTC_ERROR: return "RAJIT_NVRTC_ERROR";
    case RAJIT_DRIVER_ERROR: return "RAJIT_DRIVER_ERROR";
    case RAJIT_NO_GPU: return "RAJIT_NO_GPU";
    case RAJIT_INTERNAL: return "RAJIT_INTERNAL";
    default: return "RAJIT_UNKNOWN_STATUS";
  }
}

rajit_status rajit_info_json(const char** json) {
  return guarded([&] {
    require_args(json, "rajit_info_json");
    nlohmann::json j;
    j["version"] = RAJIT_VERSION;
    j["abi"] = RAJIT_C_ABI_VERSION;
    j["templates"] = rajit::gen::template_set_hash();
    j["cache_dir"] = rajit::rt::DiskCache::default_root().string();
    const rajit::rt::NvrtcStatus nv = rajit::rt::probe_nvrtc();
    j["nvrtc"] = {{"ok", nv.ok},
                  {"version", nv.ok ? fmt::format("{}.{}", nv.major, nv.minor) : ""},
                  {"library", nv.library},
                  {"reason", nv.reason}};
    const rajit::rt::DriverStatus drv = rajit::rt::probe_driver();
    j["driver"] = {{"ok", drv.ok},
                   {"version", drv.version > 0 ? fmt::format("{}.{}", drv.version / 1000,
                                                             (drv.version % 1000) / 10)
                                               : ""},
                   {"reason", drv.reason}};
    nlohmann::json gpus = nlohmann::json::array();
    if (drv.ok) {
      try {
        const int n = rajit::rt::device_count();
        for (int i = 0; i < n; ++i) {
          const rajit::rt::DeviceInfo d = rajit::rt::device_info(i);
          gpus.push_back({{"ordinal", i},
                          {"name", d.name},
                          {"cc", fmt::format("sm_{}{}", d.cc_major, d.cc_minor)},
                          {"sm_count", d.sm_count},
                          {"total_mem", d.total_mem},
                          {"max_smem_per_block", d.max_smem_per_block_optin}});
        }
      } catch (const rajit::rt::Error& e) {
        j["driver"]["reason"] = e.what();  // the driver loaded but listing devices failed
      }
    }
    j["gpus"] = gpus;
    t_info_json = j.dump();
    *json = t_info_json.c_str();
  });
}

int rajit_device_count(void) {
  if (!rajit::rt::probe_driver().ok) return 0;
  try {
    return rajit::rt::device_count();
  } catch (...) {
    return 0;
  }
}

rajit_status rajit_check_forward(const rajit_forward_args* args) {
  return guarded([&] {
    require_args(args, "rajit_check_forward");
    const rajit::tune::ForwardArgs f = to_forward(*args);
    if (auto problems = rajit::tune::check_forward_args(f); !problems.empty()) {
      throw ArgumentError(std::move(problems));
    }
  });
}

rajit_status rajit_forward(const rajit_forward_args* args) {
  return guarded([&] {
    require_args(args, "rajit_forward");
    rajit::tune::forward(to_forward(*args));
  });
}

rajit_status rajit_backward(const rajit_backward_args* args) {
  return guarded([&] {
    require_args(args, "rajit_backward");
    rajit::tune::backward(to_backward(*args));
  });
}

rajit_status rajit_backward_workspace_bytes(const rajit_backward_args* args, size_t* bytes) {
  return guarded([&] {
    require_args(args, "rajit_backward_workspace_bytes");
    require_args(bytes, "rajit_backward_workspace_bytes (bytes)");
    *bytes = rajit::tune::backward_workspace_bytes(to_backward(*args));
  });
}

rajit_status rajit_reference_forward(const rajit_reference_args* args, rajit_tensor o,
                                     double* lse) {
  return guarded([&] {
    require_args(args, "rajit_reference_forward");
    RefDims d;
    const rajit::tune::RefProblem p = to_ref_problem(*args, d);
    std::vector<std::string> out;
    check_host_tensor(out, "o", o, {d.B, d.H, d.Tq, p.spec.head_dim});
    if (!out.empty()) throw ArgumentError(std::move(out));
    const rajit::tune::RefForward r = rajit::tune::reference_forward(p);
    scatter(r.o, o);
    if (lse != nullptr) std::copy(r.lse.begin(), r.lse.end(), lse);
  });
}

rajit_status rajit_reference_backward(const rajit_reference_args* args, rajit_tensor d_o,
                                      const rajit_reference_grads* grads) {
  return guarded([&] {
    require_args(args, "rajit_reference_backward");
    require_args(grads, "rajit_reference_backward (grads)");
    RefDims d;
    const rajit::tune::RefProblem p = to_ref_problem(*args, d);
    const auto& s = p.spec;
    std::vector<std::string> out;
    check_host_tensor(out, "d_o", d_o, {d.B, d.H, d.Tq, s.head_dim});
    auto check_optional = [&](const char* name, const rajit_tensor& t,
                              std::array<long long, 4> want) {
      if (t.ptr != nullptr) check_host_tensor(out, name, t, want);
    };
    check_optional("dq_std", grads->dq_std, {d.B, d.H, d.Tq, s.d_std});
    check_optional("dk_std", grads->dk_std, {d.B, d.H, d.Tk, s.d_std});
    if (s.r > 0) {
      check_optional("dk_low", grads->dk_low, {d.B, d.H, d.Tq, s.r});
      check_optional("dq_low", grads->dq_low, {d.B, d.H, d.Tk, s.r});
    }
    check_optional("dv", grads->dv, {d.B, d.H, d.Tk, s.head_dim});
    if (grads->d_bias != nullptr && s.bias != rajit::gen::BiasKind::kColumn) {
      out.push_back("d_bias: given but spec.bias=none");
    }
    if (!out.empty()) throw ArgumentError(std::move(out));

    const rajit::tune::RefGradients g = rajit::tune::reference_backward(p, gather(d_o));
    auto put = [](const std::vector<double>& src, const rajit_tensor& t) {
      if (t.ptr != nullptr) scatter(src, t);
    };
    put(g.dq_std, grads->dq_std);
    put(g.dk_std, grads->dk_std);
    if (s.r > 0) {
      put(g.dk_low, grads->dk_low);
      put(g.dq_low, grads->dq_low);
    }
    put(g.dv, grads->dv);
    if (grads->d_bias != nullptr) {
      const long long bias_batch = p.bias_batch;
      for (long long b = 0; b < bias_batch; ++b)
        for (long long h = 0; h < d.H; ++h)
          for (long long j = 0; j < d.Tk; ++j)
            grads->d_bias[b * grads->d_bias_batch_stride + h * grads->d_bias_head_stride + j] =
                g.dbias[static_cast<std::size_t>((b * d.H + h) * d.Tk + j)];
    }
    copy_gate_grad(g.dw_std, grads->dw_std);
    copy_gate_grad(g.dw_rec, grads->dw_rec);
    copy_gate_grad(g.dw_disc, grads->dw_disc);
  });
}

}  // extern "C"
