/// The backward facade: argument checks, tile choice, kernel lookup, workspace and launches (issue 5).
#include "tuner/backward.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "generator/backward_source.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/module.hpp"
#include "templates/attention/bwd_limits.cuh"
#include "templates/attention/bwd_params.cuh"
#include "tuner/device_support.hpp"
#include "tuner/tma_maps.hpp"
#include "tuner/heuristic.hpp"

namespace rajit::tune {
namespace {

using gen::BackwardKernel;
constexpr long long kMaxGridY = 65535;
constexpr std::size_t kAlign = 256;
constexpr int kMinBlockN = 64;  // the smallest dK/dV key block: bounds the dw partials' size

std::size_t round_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Dims {
  long long B, H, Tq, Tk;
};
Dims dims_of(const BackwardArgs& a) {
  return {a.q_std.shape[0], a.q_std.shape[1], a.q_std.shape[2], a.k_std.shape[2]};
}

struct WorkspaceLayout {
  std::size_t lse_log2 = 0, delta = 0, col_sums = 0, dw_partial = 0, gq = 0, q_packed = 0,
              total = 0;
};

// Whether the separate query-side tensors q_std and k_low can be packed into folded rows
// [q_std | k_low] for the TMA dK/dV kernel: 16-byte chunks on both sides and TMA-readable views.
// Independent of the device, so that the workspace size is too (backward() packs on sm_90 only).
bool packable_query(const BackwardArgs& a) {
  const gen::AttentionSpec& s = a.spec;
  return s.r > 0 && s.d_std % 8 == 0 && s.r % 8 == 0 &&
         !detail::tma_folded(a.q_std, a.k_low, s.d_std) && detail::tma_view_ok(a.q_std) &&
         detail::tma_view_ok(a.k_low);
}

WorkspaceLayout layout_of(const BackwardArgs& a) {
  const Dims d = dims_of(a);
  const auto rows_q = static_cast<std::size_t>(d.B * d.H * d.Tq);
  const auto rows_k = static_cast<std::size_t>(d.B * d.H * d.Tk);
  WorkspaceLayout w;
  std::size_t at = 0;
  w.lse_log2 = at;
  at += round_up(rows_q * 4);
  w.delta = at;
  at += round_up(rows_q * 4);
  w.col_sums = at;
  if (a.spec.bias == gen::BiasKind::kColumn) at += round_up(rows_k * 4);
  w.dw_partial = at;
  at += round_up(static_cast<std::size_t>(d.B * d.H * ((d.Tk + kMinBlockN - 1) / kMinBlockN)) * 8);
  w.gq = at;
  const auto row_width = static_cast<std::size_t>(a.spec.d_std + a.spec.r);
  if (!a.deterministic) at += round_up(rows_q * row_width * 4);
  w.q_packed = at;
  if (packable_query(a)) at += round_up(rows_q * row_width * 2);
  w.total = at;
  return w;
}

void check_grad(std::vector<std::string>& out, const char* name, const MutableTensorView& t,
                const std::array<long long, 4>& want) {
  detail::check_view(out, name, t.as_const(), want, 2);  // two-element (4-byte) stores
}

// The backward's tiles: the first valid entry of a fixed preference list, ordered by the H200
// sweeps in docs/perf-notes.md. On sm_90 the dK/dV kernels' wgmma tiles come first (where the
// spec's widths allow them); split-warp mma.sync tiles measured slowest: kept for the sweep, last.
gen::TileConfig choose_tile(const gen::AttentionSpec& s, BackwardKernel k, int max_shared, int cc) {
  const gen::MmaKind wg = gen::MmaKind::kWgmma;
  std::vector<gen::TileConfig> prefs;
  if (k != BackwardKernel::kDq && cc == 90) {
    // One warpgroup per CTA (two CTAs per SM) for width 64; two warpgroups per 128 keys for
    // width 128, where one CTA fills the registers (H200 sweep, docs/perf-notes.md).
    const bool wide = std::max(s.head_dim, s.d_std + s.r) > 64;
    prefs = wide ? std::vector<gen::TileConfig>{{64, 128, 8, 2, wg}, {64, 64, 4, 2, wg}}
                 : std::vector<gen::TileConfig>{{64, 64, 4, 2, wg}, {64, 128, 8, 2, wg}};
  }
  const std::vector<gen::TileConfig> sync_prefs =
      k == BackwardKernel::kDq
          ? std::vector<gen::TileConfig>{{128, 64, 8, 2}, {64, 64, 4, 2}, {64, 32, 4, 2}}
          : std::vector<gen::TileConfig>{{64, 128, 8, 2}, {64, 64, 4, 2}, {32, 128, 8, 2},
                                         {32, 64, 4, 2}, {16, 128, 8, 2}, {16, 64, 4, 2},
                                         {64, 64, 8, 2}, {32, 64, 8, 2}};
  prefs.insert(prefs.end(), sync_prefs.begin(), sync_prefs.end());
  for (const auto& t : prefs) {
    if (gen::validate_backward(s, k, t, max_shared).empty()) return t;
  }
  auto problems = gen::validate_backward(s, k, prefs.back(), max_shared);
  problems.insert(problems.begin(), fmt::format("{}: no backward tile fits this device", s.key()));
  throw gen::SpecError(std::move(problems));
}

struct HotEntry {
  rt::Kernel kernel;
  int shared_bytes = 0;
};

// (context, kernel key, entry) -> loaded kernel; compiles through the KernelCache on a miss.
HotEntry kernel_for(CUcontext ctx, int ordinal, int cc, const gen::AttentionSpec& s,
                    BackwardKernel k, const gen::TileConfig& tile, const std::string& suffix) {
  static std::mutex mu;
  static std::unordered_map<std::string, HotEntry> hot;
  const std::string key = fmt::format("{}|{}|{}|{}{}", static_cast<const void*>(ctx), s.key(),
                                      gen::to_string(k), tile.key(), suffix);
  {
    std::lock_guard lock(mu);
    if (auto it = hot.find(key); it != hot.end()) return it->second;
  }
  const gen::GeneratedSource src = gen::generate_backward(s, k, tile);
  rt::KernelRequest req;
  req.readable_name = src.readable_key;
  req.entry_name = src.entry + suffix;
  req.source = src.text;
  req.options = src.options;
  req.arch = arch_for(tile, cc);  // sm_90a for wgmma tiles
  req.extra_key = src.template_set_hash;
  HotEntry e{rt::KernelCache::global().get(req, ordinal), src.shared_bytes};
  std::lock_guard lock(mu);
  hot.emplace(key, e);
  return e;
}

attn::Operand2d operand(const TensorView& t) {
  return attn::Operand2d{t.ptr, t.stride[0], t.stride[1], t.stride[2]};
}
attn::OutOperand2d out_operand(const MutableTensorView& t) {
  return attn::OutOperand2d{t.ptr, t.stride[0], t.stride[1], t.stride[2]};
}

}  // namespace

std::vector<std::string> check_backward_args(const BackwardArgs& a) {
  std::vector<std::string> out = gen::validate_backward(a.spec);
  if (!out.empty()) return out;
  const gen::AttentionSpec& s = a.spec;
  const Dims d = dims_of(a);
  if (d.B < 1 || d.H < 1 || d.Tq < 1 || d.Tk < 1) {
    out.push_back(fmt::format("shape: batch={}, heads={}, seqlen_q={} (from q_std) and seqlen_k={} "
                              "(from k_std) must all be >= 1",
                              d.B, d.H, d.Tq, d.Tk));
    return out;
  }
  const int qk_align = attn::copy_elems(s.d_std, s.r);
  detail::check_view(out, "q_std", a.q_std, {d.B, d.H, d.Tq, s.d_std}, qk_align);
  detail::check_view(out, "k_std", a.k_std, {d.B, d.H, d.Tk, s.d_std}, qk_align);
  if (s.r > 0) {
    detail::check_view(out, "k_low", a.k_low, {d.B, d.H, d.Tq, s.r}, qk_align);
    detail::check_view(out, "q_low", a.q_low, {d.B, d.H, d.Tk, s.r}, qk_align);
  }
  detail::check_view(out, "v", a.v, {d.B, d.H, d.Tk, s.head_dim}, 8);
  detail::check_view(out, "o", a.o, {d.B, d.H, d.Tq, s.head_dim}, 8);
  detail::check_view(out, "d_o", a.d_o, {d.B, d.H, d.Tq, s.head_dim}, 8);
  if (a.lse == nullptr) out.push_back("lse: null pointer; pass the forward's LSE (B, H, Tq) fp32");
  check_grad(out, "dq_std", a.dq_std, {d.B, d.H, d.Tq, s.d_std});
  check_grad(out, "dk_std", a.dk_std, {d.B, d.H, d.Tk, s.d_std});
  if (s.r > 0) {
    check_grad(out, "dk_low", a.dk_low, {d.B, d.H, d.Tq, s.r});
    check_grad(out, "dq_low", a.dq_low, {d.B, d.H, d.Tk, s.r});
  }
  check_grad(out, "dv", a.dv, {d.B, d.H, d.Tk, s.head_dim});
  if (s.bias == gen::BiasKind::kColumn) {
    if (a.bias.ptr == nullptr) out.push_back("bias: spec.bias=column needs a bias pointer");
    if (a.bias.batch_stride < 0 || a.bias.head_stride < 0) {
      out.push_back("bias: strides must be non-negative (batch_stride 0 = shared over the batch)");
    }
    if (a.d_bias != nullptr && (a.d_bias_batch_stride < 0 || a.d_bias_head_stride < 0)) {
      out.push_back("d_bias: strides must be non-negative");
    }
  } else {
    if (a.bias.ptr != nullptr) {
      out.push_back("bias: a bias pointer was given but spec.bias=none (use --bias column)");
    }
    if (a.d_bias != nullptr) out.push_back("d_bias: must be null when spec.bias=none");
    if (a.dw_disc != nullptr) out.push_back("dw_disc: must be null when spec.bias=none");
  }
  if (s.r == 0 && a.dw_rec != nullptr) out.push_back("dw_rec: must be null when r=0");
  if (d.B * d.H > 0x7fffffffLL) out.push_back(fmt::format("batch*heads={}: must be < 2^31", d.B * d.H));
  if (d.Tq > kMaxGridY * 64 || d.Tk > kMaxGridY * 64) {
    out.push_back(fmt::format("seqlen_q={}, seqlen_k={}: at most {} rows per call", d.Tq, d.Tk,
                              kMaxGridY * 64));
  }
  if (!(a.scale >= 0) || std::isinf(a.scale)) {
    out.push_back(fmt::format("scale={}: must be finite and >= 0 (0 = 1/sqrt(d_std+r))", a.scale));
  }
  if (a.workspace != nullptr) {
    const std::size_t need = backward_workspace_bytes(a);
    if (a.workspace_bytes < need) {
      out.push_back(fmt::format("workspace_bytes={}: these shapes need at least {}",
                                a.workspace_bytes, need));
    }
    if (reinterpret_cast<std::uintptr_t>(a.workspace) % kAlign != 0) {
      out.push_back(fmt::format("workspace: pointer {} is not {}-byte aligned", a.workspace, kAlign));
    }
  }
  return out;
}

std::size_t backward_workspace_bytes(const BackwardArgs& a) {
  const Dims d = dims_of(a);
  if (d.B < 1 || d.H < 1 || d.Tq < 1 || d.Tk < 1) return 0;
  return layout_of(a).total;
}

DkvReadPlan plan_dkv_reads(const BackwardArgs& a, gen::TileConfig tile, int cc) {
  const gen::AttentionSpec& s = a.spec;
  // The dK/dV kernel reads the streamed query side by TMA when every pointer and stride of q_std
  // and dO is a multiple of 16 bytes: as folded rows (.tmafold) when k_low is stored right after
  // q_std (or r = 0), or when the preprocess kernel can pack separate q_std and k_low into folded
  // rows in the workspace (packable_query); else q_std by TMA and k_low by cp.async over its zero
  // columns (.tma). Packing costs one pass over the query side (~1-2% of the backward at the
  // seeds' shape) and beats .tma at both widths (docs/perf-notes.md, backward v5). .tma waits in
  // mid-step for the next block's boxes; at width 64 that wait does not hide (backward v4), so
  // there it is picked only when pinned. A pinned TMA tile the tensors do not allow is an error.
  const bool tma_ok = cc == 90 && !detail::tma_disabled_by_env() && detail::tma_view_ok(a.q_std) &&
                      detail::tma_view_ok(a.d_o);
  const bool folded = s.r == 0 || detail::tma_folded(a.q_std, a.k_low, s.d_std);
  const bool can_pack = tma_ok && packable_query(a);  // packable rows are never folded already
  const bool wide = std::max(s.head_dim, s.d_std + s.r) > 64;
  if (gen::is_tma(tile.mma)) {
    const bool allowed = tile.mma == gen::MmaKind::kTmaFolded ? tma_ok && (folded || can_pack)
                                                              : tma_ok && !folded;
    if (!allowed) {
      throw ArgumentError({fmt::format(
          "dkv_tile {}: {}", tile.key(),
          !tma_ok ? "the TMA dK/dV kernel needs 16-byte aligned pointers and strides for q_std "
                    "and d_o (and sm_90, RAJIT_TMA not 0); use the .wgmma tile"
          : folded ? "k_low is stored right after q_std: use the .tmafold tile"
                   : "separate q_std and k_low are read as folded rows only when d_std and r are "
                     "multiples of 8 and k_low is 16-byte aligned: use the .tma tile")});
    }
  } else if (tile.mma == gen::MmaKind::kWgmma && tma_ok) {  // mma.sync tiles stay as they are
    if (folded || can_pack) {
      tile.mma = gen::MmaKind::kTmaFolded;
    } else if (wide) {
      tile.mma = gen::MmaKind::kTma;
    }
  }
  return {tile, tile.mma == gen::MmaKind::kTmaFolded && !folded};
}

BackwardRecord backward(const BackwardArgs& a) {
  if (auto problems = check_backward_args(a); !problems.empty()) {
    throw ArgumentError(std::move(problems));
  }
  const gen::AttentionSpec& s = a.spec;
  const int ordinal = detail::device_of(a.q_std.ptr, "q_std");
  const CUcontext ctx = detail::context_for(ordinal);
  const detail::DeviceFacts dev = detail::device_facts(ordinal);
  const rt::DriverApi& api = rt::driver();
  const Dims d = dims_of(a);

  const BackwardKernel dkv_kind = a.deterministic ? BackwardKernel::kDkv : BackwardKernel::kDkvAtomicDq;
  const auto pick = [&](BackwardKernel k, const std::optional<gen::TileConfig>& pinned) {
    if (!pinned) return choose_tile(s, k, dev.max_shared, dev.cc);
    auto problems = gen::validate_backward(s, k, *pinned, dev.max_shared);
    if (problems.empty() && !gen::runs_on(*pinned, dev.cc)) {
      problems.push_back(fmt::format("tile {}: wgmma tiles run only on sm_90 (this device is sm_{})",
                                     pinned->key(), dev.cc));
    }
    if (!problems.empty()) throw gen::SpecError(std::move(problems));
    return *pinned;
  };
  gen::TileConfig dkv_tile = pick(dkv_kind, a.dkv_tile);
  const DkvReadPlan reads = plan_dkv_reads(a, dkv_tile, dev.cc);
  dkv_tile = reads.tile;
  const bool pack = reads.pack;
  const gen::TileConfig dq_tile =
      a.deterministic ? pick(BackwardKernel::kDq, a.dq_tile) : gen::TileConfig{};
  const HotEntry pre = kernel_for(ctx, ordinal, dev.cc, s, BackwardKernel::kAux, {}, "_preprocess");
  const HotEntry dkv = kernel_for(ctx, ordinal, dev.cc, s, dkv_kind, dkv_tile, "");
  HotEntry second;  // dQ kernel (deterministic) or the Gq conversion (atomic)
  if (a.deterministic) {
    second = kernel_for(ctx, ordinal, dev.cc, s, BackwardKernel::kDq, dq_tile, "");
  } else {
    second = kernel_for(ctx, ordinal, dev.cc, s, BackwardKernel::kAux, {}, "_convert");
  }
  const bool want_dw = a.dw_std != nullptr || a.dw_rec != nullptr;
  const bool has_bias = s.bias == gen::BiasKind::kColumn;
  const bool need_finalize = want_dw || has_bias;
  HotEntry fin;
  if (need_finalize) fin = kernel_for(ctx, ordinal, dev.cc, s, BackwardKernel::kAux, {}, "_finalize");

  // Workspace: the caller's, or stream-ordered scratch freed after the last kernel.
  const WorkspaceLayout w = layout_of(a);
  CUdeviceptr owned = 0;
  char* ws = static_cast<char*>(a.workspace);
  if (ws == nullptr) {
    RAJIT_CU_CHECK(api.cuMemAllocAsync(&owned, w.total, a.stream),
                   "allocating {} bytes of backward workspace", w.total);
    ws = reinterpret_cast<char*>(owned);
  }

  attn::BwdParams p{};
  p.q_std = operand(a.q_std);
  p.k_std = operand(a.k_std);
  p.k_low = s.r > 0 ? operand(a.k_low) : p.q_std;  // never read when r == 0
  p.q_low = s.r > 0 ? operand(a.q_low) : p.k_std;
  p.v = operand(a.v);
  p.o = operand(a.o);
  p.d_o = operand(a.d_o);
  p.lse = a.lse;
  p.bias = has_bias ? a.bias.ptr : nullptr;
  p.bias_batch_stride = a.bias.batch_stride;
  p.bias_head_stride = a.bias.head_stride;
  p.w_std = a.w_std;
  p.w_rec = a.w_rec;
  p.w_disc = a.w_disc;
  p.dq_std = out_operand(a.dq_std);
  p.dk_std = out_operand(a.dk_std);
  p.dk_low = s.r > 0 ? out_operand(a.dk_low) : p.dq_std;  // never written when r == 0
  p.dq_low = s.r > 0 ? out_operand(a.dq_low) : p.dk_std;
  p.dv = out_operand(a.dv);
  p.d_bias = has_bias ? a.d_bias : nullptr;
  p.d_bias_batch_stride = a.d_bias_batch_stride;
  p.d_bias_head_stride = a.d_bias_head_stride;
  p.dw_std = a.dw_std;
  p.dw_rec = a.dw_rec;
  p.dw_disc = has_bias ? a.dw_disc : nullptr;
  p.lse_log2 = reinterpret_cast<float*>(ws + w.lse_log2);
  p.delta = reinterpret_cast<float*>(ws + w.delta);
  p.col_sums = has_bias ? reinterpret_cast<float*>(ws + w.col_sums) : nullptr;
  p.dw_partial = want_dw ? reinterpret_cast<float*>(ws + w.dw_partial) : nullptr;
  p.gq = a.deterministic ? nullptr : reinterpret_cast<float*>(ws + w.gq);
  p.q_packed = pack ? ws + w.q_packed : nullptr;
  p.batch = static_cast<int>(d.B);
  p.heads = static_cast<int>(d.H);
  p.seqlen_q = static_cast<int>(d.Tq);
  p.seqlen_k = static_cast<int>(d.Tk);
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(s.d_std + s.r));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.num_n_blocks = static_cast<int>((d.Tk + dkv_tile.block_n - 1) / dkv_tile.block_n);
  p.num_m_blocks = a.deterministic ? static_cast<int>((d.Tq + dq_tile.block_m - 1) / dq_tile.block_m) : 0;
  p.gq_gated = 1;  // the dK/dV kernel multiplies dS by the gated key tile

  BackwardRecord rec;
  rec.dkv_tile = dkv_tile;
  // After the preprocess kernel, every kernel reads the query side from the packed rows.
  attn::BwdParams p_packed = p;
  TensorView q_view = a.q_std;
  if (pack) {
    const long long width = s.d_std + s.r;
    q_view = TensorView{p.q_packed, {d.B, d.H, d.Tq, width},
                        {d.H * d.Tq * width, d.Tq * width, width, 1}};
    p_packed.q_std = operand(q_view);
    p_packed.k_low = attn::Operand2d{static_cast<const char*>(p.q_packed) + 2 * s.d_std,
                                     q_view.stride[0], q_view.stride[1], q_view.stride[2]};
  }
  attn::BwdTmaMaps maps{};
  if (gen::is_tma(dkv_tile.mma)) {
    const bool folded_rows = dkv_tile.mma == gen::MmaKind::kTmaFolded;
    maps.q = detail::encode_tma_map(s.dtype, folded_rows ? s.d_std + s.r : s.d_std, q_view, 64,
                                    attn::kBwdWgmmaBlockM,
                                    pack          ? "q_std and k_low (packed)"
                                    : folded_rows ? "q_std (folded with k_low)"
                                                  : "q_std");
    maps.d_o = detail::encode_tma_map(s.dtype, s.head_dim, a.d_o, 64,
                                      attn::kBwdWgmmaBlockM, "d_o");
  }
  void* pre_args[] = {&p};
  void* dkv_args[] = {&p_packed, &maps};
  void* args[] = {&p_packed};
  const unsigned bh = static_cast<unsigned>(d.B * d.H);
  // Row kernels: grid (batch * heads, query blocks of kAuxRowsPerCta); <= 65535 blocks, since
  // seqlen_q <= kMaxGridY * 64 (checked above).
  const auto row_blocks =
      static_cast<unsigned>((d.Tq + attn::kAuxRowsPerCta - 1) / attn::kAuxRowsPerCta);
  try {
    rt::launch(pre.kernel, bh, row_blocks, 1, attn::kAuxThreadsHost, 0, a.stream, pre_args);
    rec.kernels.push_back(pre.kernel.name);
    rt::launch(dkv.kernel, bh, static_cast<unsigned>(p.num_n_blocks), 1,
               static_cast<unsigned>(dkv_tile.warps * 32), static_cast<unsigned>(dkv.shared_bytes),
               a.stream, dkv_args);
    rec.kernels.push_back(dkv.kernel.name);
    if (a.deterministic) {
      rt::launch(second.kernel, bh, static_cast<unsigned>(p.num_m_blocks), 1,
                 static_cast<unsigned>(dq_tile.warps * 32),
                 static_cast<unsigned>(second.shared_bytes), a.stream, args);
    } else {
      rt::launch(second.kernel, bh, row_blocks, 1, attn::kAuxThreadsHost, 0, a.stream, args);
    }
    rec.kernels.push_back(second.kernel.name);
    if (need_finalize) {
      rt::launch(fin.kernel, static_cast<unsigned>(d.H), 1, 1, attn::kAuxThreadsHost, 0, a.stream,
                 args);
      rec.kernels.push_back(fin.kernel.name);
    }
  } catch (...) {
    if (owned != 0) api.cuMemFreeAsync(owned, a.stream);
    throw;
  }
  if (owned != 0) {
    RAJIT_CU_CHECK(api.cuMemFreeAsync(owned, a.stream), "freeing the backward workspace");
  }
  return rec;
}

}  // namespace rajit::tune
