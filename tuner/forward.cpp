/// The forward facade: argument checks, tile choice, kernel lookup (hot map, then KernelCache), launch.
#include "tuner/forward.hpp"

#include <fmt/format.h>

#include <cmath>
#include <mutex>
#include <unordered_map>

#include "generator/kernel_source.hpp"
#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/module.hpp"
#include "templates/attention/limits.cuh"
#include "templates/attention/params.cuh"
#include "tuner/bundle.hpp"
#include "tuner/device_support.hpp"
#include "tuner/heuristic.hpp"
#include "tuner/policy.hpp"
#include "tuner/tma_maps.hpp"

namespace rajit::tune {
namespace {

constexpr long long kMaxGridY = 65535;

using detail::check_view;
using detail::device_facts;
using detail::DeviceFacts;

// Compiling (seconds) or loading a module while `stream` records a CUDA graph would stall the
// capture or invalidate it with an obscure driver error; the first call for a kernel must come
// before capture (a warm-up), after which capturing only records the launch.
void refuse_if_capturing(CUstream stream, const gen::AttentionSpec& s, const gen::TileConfig& t) {
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  const CUresult r = rt::driver().cuStreamIsCapturing(stream, &status);
  // IMPLICIT: the legacy stream while another stream captures globally; that is capture too.
  if (r == CUDA_SUCCESS && status == CU_STREAM_CAPTURE_STATUS_NONE) return;
  if (r != CUDA_SUCCESS && r != CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) {
    RAJIT_CU_CHECK(r, "asking whether stream {} is capturing a CUDA graph",
                   static_cast<const void*>(stream));
  }
  throw rt::Error(fmt::format(
      "forward: spec {} tile {} is not loaded in this context yet, and stream {} is capturing a "
      "CUDA graph: compiling or loading a kernel during capture is refused. Call rajit::forward "
      "once with the same spec and shape before capturing (a warm-up); later calls capture and "
      "replay normally",
      s.key(), t.key(), static_cast<const void*>(stream)));
}

struct HotEntry {
  rt::Kernel kernel;
  int shared_bytes = 0;
  bool from_bundle = false;
};

}  // namespace

std::vector<std::string> check_forward_args(const ForwardArgs& a) {
  std::vector<std::string> out = gen::validate(a.spec);
  if (!out.empty()) return out;
  const gen::AttentionSpec& s = a.spec;
  const long long B = a.q_std.shape[0], H = a.q_std.shape[1], Tq = a.q_std.shape[2];
  const long long Tk = a.k_std.shape[2];
  if (B < 1 || H < 1 || Tq < 1 || Tk < 1) {
    out.push_back(fmt::format("shape: batch={}, heads={}, seqlen_q={} (from q_std) and seqlen_k={} "
                              "(from k_std) must all be >= 1",
                              B, H, Tq, Tk));
    return out;
  }
  const int qk_align = attn::copy_elems(s.d_std, s.r);
  check_view(out, "q_std", a.q_std, {B, H, Tq, s.d_std}, qk_align);
  check_view(out, "k_std", a.k_std, {B, H, Tk, s.d_std}, qk_align);
  if (s.r > 0) {
    check_view(out, "k_low", a.k_low, {B, H, Tq, s.r}, qk_align);
    check_view(out, "q_low", a.q_low, {B, H, Tk, s.r}, qk_align);
  }
  check_view(out, "v", a.v, {B, H, Tk, s.head_dim}, 8);
  check_view(out, "o", a.o, {B, H, Tq, s.head_dim}, 8);
  if (s.bias == gen::BiasKind::kColumn) {
    if (a.bias.ptr == nullptr) out.push_back("bias: spec.bias=column needs a bias pointer");
    if (a.bias.batch_stride < 0 || a.bias.head_stride < 0) {
      out.push_back("bias: strides must be non-negative (batch_stride 0 = shared over the batch)");
    }
  } else if (a.bias.ptr != nullptr) {
    out.push_back("bias: a bias pointer was given but spec.bias=none (use --bias column)");
  }
  if (B * H > 0x7fffffffLL) out.push_back(fmt::format("batch*heads={}: must be < 2^31", B * H));
  if (Tq > kMaxGridY * 64) {
    out.push_back(fmt::format("seqlen_q={}: at most {} rows per call", Tq, kMaxGridY * 64));
  }
  if (!(a.scale >= 0) || std::isinf(a.scale)) {
    out.push_back(fmt::format("scale={}: must be finite and >= 0 (0 = 1/sqrt(d_std+r))", a.scale));
  } else if (a.scale > 0 && a.scale < kMinScale) {
    // The kernels take the raw scores' maximum and scale in fp32 (scale * log2(e)): a scale
    // that rounds to 0 or a subnormal there would turn masked scores into NaN.
    out.push_back(fmt::format("scale={}: must be 0 (1/sqrt(d_std+r)) or at least {:g}", a.scale,
                              kMinScale));
  }
  return out;
}

LaunchRecord forward(const ForwardArgs& a) {
  if (auto problems = check_forward_args(a); !problems.empty()) {
    throw ArgumentError(std::move(problems));
  }
  const gen::AttentionSpec& s = a.spec;
  const int ordinal = detail::device_of(a.q_std.ptr, "q_std");
  const CUcontext ctx = detail::context_for(ordinal);
  const DeviceFacts dev = device_facts(ordinal);

  const Shape shape{static_cast<int>(a.q_std.shape[0]), static_cast<int>(a.q_std.shape[1]),
                    static_cast<int>(a.q_std.shape[2]), static_cast<int>(a.k_std.shape[2])};
  if (a.tile) {
    gen::require_valid(s, *a.tile, dev.max_shared);
    if (!gen::runs_on(*a.tile, dev.cc)) {
      throw ArgumentError({fmt::format("tile {}: wgmma tiles run only on sm_90 GPUs (H100, H200); "
                                       "this device is sm_{}: pin an mma.sync tile",
                                       a.tile->key(), dev.cc)});
    }
  }
  const TileDecision decision =
      choose_forward_tile(s, shape, ordinal, dev.cc, dev.max_shared, a.tile, a.tune);
  gen::TileConfig tile = decision.tile;
  if (gen::is_tma(tile.mma)) {  // pinned as such: the tensors must allow exactly this kernel
    gen::TileConfig shape_only = tile;
    shape_only.mma = gen::MmaKind::kWgmma;
    std::string why;
    const gen::MmaKind allowed = detail::tma_kind_for(a, shape_only, dev.max_shared, &why);
    if (allowed != tile.mma) {
      shape_only.mma = allowed;
      throw ArgumentError({fmt::format(
          "tile {} (from {}): {}; use tile {} for these tensors", tile.key(),
          to_string(decision.source),
          gen::is_tma(allowed) ? "the TMA kernel for the other operand layout (.tma: separate "
                                 "operands, .tmafold: q_low right after k_std and k_low right "
                                 "after q_std)"
                               : "these tensors cannot be read by TMA (" + why + ")",
          shape_only.key())});
    }
  }
  // A wgmma tile runs as the TMA kernel of the same shape when the tensors allow TMA (and, with a
  // bundle active, when the bundle ships that kernel: a deployment without NVRTC must not compile).
  if (tile.mma == gen::MmaKind::kWgmma && dev.cc == 90) {
    gen::TileConfig tma = tile;
    tma.mma = detail::tma_kind_for(a, tile, dev.max_shared);
    const auto bundle = gen::is_tma(tma.mma) ? active_bundle() : nullptr;
    if (gen::is_tma(tma.mma) && (!bundle || bundle->kernel(s.key(), tma.key(), "sm_90a"))) {
      tile = tma;
    }
  }
  if (!gen::runs_on(tile, dev.cc)) {  // e.g. a wgmma tile from RAJIT_TILE or another GPU's file
    throw ArgumentError({fmt::format("tile {} (from {}): wgmma tiles run only on sm_90 GPUs; this "
                                     "device is sm_{}",
                                     tile.key(), to_string(decision.source), dev.cc)});
  }

  // Hot path: (context, spec, tile) -> loaded kernel, without hashing the source again.
  static std::mutex hot_mu;
  static std::unordered_map<std::string, HotEntry> hot;
  const std::string hot_key =
      fmt::format("{}|{}|{}", static_cast<const void*>(ctx), s.key(), tile.key());
  HotEntry entry;
  {
    std::lock_guard lock(hot_mu);
    if (auto it = hot.find(hot_key); it != hot.end()) entry = it->second;
  }
  if (!entry.kernel.fn) {
    refuse_if_capturing(a.stream, s, tile);
    const gen::GeneratedSource src = gen::generate_forward(s, tile);
    rt::KernelRequest req;
    req.readable_name = src.readable_key;
    req.entry_name = src.entry;
    req.source = src.text;
    req.options = src.options;
    req.arch = arch_for(tile, dev.cc);
    req.extra_key = src.template_set_hash;
    const auto bundle = active_bundle();
    const BundleKernel* bk = bundle ? bundle->kernel(s.key(), tile.key(), req.arch) : nullptr;
    if (bk == nullptr && bundle && dev.cc == 90) bk = bundle->kernel(s.key(), tile.key(), "sm_90a");
    if (bk != nullptr) {  // deployment: no NVRTC, no disk cache; the hash is checked first
      auto module = std::make_shared<const rt::Module>(bundle->read_cubin(*bk), src.readable_key);
      entry.kernel = rt::Kernel{module->function(src.entry), module, src.entry, src.shared_bytes,
                                src.threads};
      entry.from_bundle = true;
    } else {
      entry.kernel = rt::KernelCache::global().get(req, ordinal);
    }
    entry.shared_bytes = src.shared_bytes;
    std::lock_guard lock(hot_mu);
    hot.emplace(hot_key, entry);
  }

  attn::FwdParams p{};
  const auto operand = [](const TensorView& t) {
    return attn::Operand2d{t.ptr, t.stride[0], t.stride[1], t.stride[2]};
  };
  p.q_std = operand(a.q_std);
  p.k_std = operand(a.k_std);
  p.k_low = s.r > 0 ? operand(a.k_low) : p.q_std;  // never read when r == 0
  p.q_low = s.r > 0 ? operand(a.q_low) : p.k_std;
  p.v = operand(a.v);
  p.o = const_cast<void*>(a.o.ptr);
  p.o_batch_stride = a.o.stride[0];
  p.o_head_stride = a.o.stride[1];
  p.o_row_stride = a.o.stride[2];
  p.lse = a.lse;
  p.bias = s.bias == gen::BiasKind::kColumn ? a.bias.ptr : nullptr;
  p.bias_batch_stride = a.bias.batch_stride;
  p.bias_head_stride = a.bias.head_stride;
  p.w_std = a.w_std;
  p.w_rec = a.w_rec;
  p.w_disc = a.w_disc;
  p.batch = shape.batch;
  p.heads = shape.heads;
  p.seqlen_q = shape.seqlen_q;
  p.seqlen_k = shape.seqlen_k;
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(s.d_std + s.r));
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.num_m_blocks = (shape.seqlen_q + tile.block_m - 1) / tile.block_m;
  if (p.num_m_blocks > kMaxGridY) {
    throw ArgumentError({fmt::format("seqlen_q={}: needs {} query blocks of {}, at most {}",
                                     shape.seqlen_q, p.num_m_blocks, tile.block_m, kMaxGridY)});
  }
  // The TMA kernel keeps the scaled bias of each CTA's first key tiles (all of them when they
  // fit) in shared memory after its per-stage vectors; the launch sizes that row (limits.cuh).
  if (gen::is_tma(tile.mma)) {
    p.bias_row_keys = detail::bias_row_keys(a, tile, tile.mma == gen::MmaKind::kTmaFolded,
                                            dev.max_shared);
  }
  const int shared_bytes = entry.shared_bytes + p.bias_row_keys * 4;
  attn::FwdTmaMaps maps{};
  void* args[] = {&p, &maps};
  if (gen::is_tma(tile.mma)) maps = detail::encode_tma_maps(a, tile);
  rt::launch(entry.kernel, static_cast<unsigned>(shape.batch * shape.heads),
             static_cast<unsigned>(p.num_m_blocks), 1, static_cast<unsigned>(tile.warps * 32),
             static_cast<unsigned>(shared_bytes), a.stream, args);
  return {tile, entry.kernel.name, decision.source, entry.from_bundle, p.bias_row_keys};
}

}  // namespace rajit::tune
