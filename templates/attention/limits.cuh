/// The one set of validity rules for specs and tile shapes, shared by generator, tuner and kernels.
// Plain constexpr C++ with no includes beyond our own, so the host (no CUDA headers) and NVRTC (no
// include path) compile the same text (S19). Each rule sets one bit; generator/spec.cpp turns bits
// into messages that name the field and its allowed values.
#pragma once
#include "common/host_device.cuh"

namespace rajit::attn {

// ---- the spec: what is computed ------------------------------------------------------------
inline constexpr int kMaxDStd = 256;
inline constexpr int kMaxR = 256;
inline constexpr int kMaxContraction = 256;  // d_std + r; bounds registers and shared memory
inline constexpr int kChannelMultiple = 4;   // d_std and r: 8-byte (4-element) copy granularity
inline constexpr int kHeadDims[] = {32, 64, 96, 128, 256};

enum SpecRule : unsigned {
  kBadDStd = 1u << 0,         // d_std: multiple of 4 in [4, 256]
  kBadR = 1u << 1,            // r: multiple of 4 in [0, 256]
  kBadHeadDim = 1u << 2,      // head_dim: one of 32, 64, 96, 128, 256
  kBadContraction = 1u << 3,  // d_std + r <= 256
};

RAJIT_HOST_DEVICE constexpr bool is_supported_head_dim(int head_dim) {
  for (int d : kHeadDims) {
    if (d == head_dim) return true;
  }
  return false;
}

RAJIT_HOST_DEVICE constexpr unsigned check_spec(int d_std, int r, int head_dim) {
  unsigned bad = 0;
  if (d_std < kChannelMultiple || d_std > kMaxDStd || d_std % kChannelMultiple != 0) bad |= kBadDStd;
  if (r < 0 || r > kMaxR || r % kChannelMultiple != 0) bad |= kBadR;
  if (!is_supported_head_dim(head_dim)) bad |= kBadHeadDim;
  if (!(bad & (kBadDStd | kBadR)) && d_std + r > kMaxContraction) bad |= kBadContraction;
  return bad;
}

/// Width of the folded score contraction once padded to the MMA's k = 16.
RAJIT_HOST_DEVICE constexpr int padded_contraction(int d_std, int r) {
  return (d_std + r + 15) / 16 * 16;
}

/// Elements per global->shared copy: 8 (16 bytes) when both channel groups allow it, else 4.
RAJIT_HOST_DEVICE constexpr int copy_elems(int d_std, int r) {
  return (d_std % 8 == 0 && r % 8 == 0) ? 8 : 4;
}

// ---- the tile shape: how it is computed -----------------------------------------------------
inline constexpr int kBlockMs[] = {64, 128};
inline constexpr int kBlockNs[] = {32, 64, 128};
inline constexpr int kWarpCounts[] = {4, 8};
inline constexpr int kMinStages = 2;
inline constexpr int kMaxStages = 3;
inline constexpr int kMaxRowTilesPerWarp = 2;  // 16-row MMA tiles each warp owns

enum TileRule : unsigned {
  kBadBlockM = 1u << 0,     // block_m: 64 or 128
  kBadBlockN = 1u << 1,     // block_n: 32, 64 or 128
  kBadWarps = 1u << 2,      // warps: 4 or 8
  kBadStages = 1u << 3,     // stages: 2 or 3
  kBadRowsPerWarp = 1u << 4,  // block_m / (16 * warps) must be 1 or 2
  kBadSharedMemory = 1u << 5,  // the tile's shared memory exceeds the device's per-block limit
  kBadRegisters = 1u << 6,     // accumulators would not fit in 255 registers per thread
};

RAJIT_HOST_DEVICE constexpr bool in_list(int v, const int* first, int n) {
  for (int i = 0; i < n; ++i) {
    if (first[i] == v) return true;
  }
  return false;
}

/// Shared memory a forward tile uses, in bytes (mirrors the layout in attention/fwd.cuh).
RAJIT_HOST_DEVICE constexpr int fwd_shared_bytes(int d_std, int r, int head_dim, int block_m,
                                                 int block_n, int stages) {
  const int dqk = padded_contraction(d_std, r);
  // Every row is padded by 8 elements (16 bytes) so that ldmatrix is free of bank conflicts.
  const int q_or_o = block_m * ((dqk > head_dim ? dqk : head_dim) + 8) * 2;
  const int per_stage = block_n * (dqk + 8 + head_dim + 8) * 2 + block_n * 4;  // K, V, bias
  return q_or_o + stages * per_stage;
}

/// Whether the query fragments live in registers for the whole key loop (else they are re-read
/// from shared memory at every k-step): only when both they and the O accumulators are small.
RAJIT_HOST_DEVICE constexpr bool fwd_q_in_registers(int d_std, int r, int head_dim) {
  return padded_contraction(d_std, r) <= 128 && head_dim <= 128;
}

/// 32-bit registers per thread held by the accumulators and the query fragments (a lower bound on
/// what the kernel needs; the nvrtc tier checks the compiler's real count has no spills).
RAJIT_HOST_DEVICE constexpr int fwd_accumulator_registers(int d_std, int r, int head_dim,
                                                          int block_m, int block_n, int warps) {
  const int row_tiles = block_m / (16 * warps);
  const int dqk = padded_contraction(d_std, r);
  const int o_acc = row_tiles * (head_dim / 8) * 4;
  const int s_acc = row_tiles * (block_n / 8) * 4;
  const int q_frag = fwd_q_in_registers(d_std, r, head_dim) ? row_tiles * (dqk / 16) * 4 : 0;
  return o_acc + s_acc + q_frag;
}

inline constexpr int kRegisterBudget = 150;  // the rest holds addresses, P and softmax state;
                                             // the nvrtc tier proves no valid tile spills

RAJIT_HOST_DEVICE constexpr unsigned check_tile(int d_std, int r, int head_dim, int block_m,
                                                int block_n, int warps, int stages,
                                                int max_shared_bytes) {
  unsigned bad = 0;
  if (!in_list(block_m, kBlockMs, sizeof(kBlockMs) / sizeof(int))) bad |= kBadBlockM;
  if (!in_list(block_n, kBlockNs, sizeof(kBlockNs) / sizeof(int))) bad |= kBadBlockN;
  if (!in_list(warps, kWarpCounts, sizeof(kWarpCounts) / sizeof(int))) bad |= kBadWarps;
  if (stages < kMinStages || stages > kMaxStages) bad |= kBadStages;
  if (bad) return bad;
  const int rows_per_warp = block_m / warps;
  if (block_m % (16 * warps) != 0 || rows_per_warp / 16 > kMaxRowTilesPerWarp) {
    return bad | kBadRowsPerWarp;
  }
  if (check_spec(d_std, r, head_dim) != 0) return bad;  // spec errors are reported by check_spec
  if (fwd_shared_bytes(d_std, r, head_dim, block_m, block_n, stages) > max_shared_bytes) {
    bad |= kBadSharedMemory;
  }
  if (fwd_accumulator_registers(d_std, r, head_dim, block_m, block_n, warps) > kRegisterBudget) {
    bad |= kBadRegisters;
  }
  return bad;
}

// ---- the Hopper family: one warpgroup (4 warps, wgmma m64nNk16) per 64 query rows ---------------
inline constexpr int kWgmmaBlockMs[] = {64, 128, 192};
inline constexpr int kWgmmaBlockNs[] = {64, 128};
inline constexpr int kWgmmaHeadDims[] = {64, 128};  // the m64nN shapes ptx/wgmma.cuh spells out
inline constexpr int kWgmmaRegisterFile = 65536;     // 32-bit registers per SM (sm_90)
inline constexpr int kWgmmaRegisterOverhead = 48;    // addresses, softmax state, loop counters
inline constexpr int kWgmmaMaxAccumulators = 96;     // S + O fp32 registers per thread; 128
                                                     // (head_dim 128 x block_n 128) spills

enum WgmmaRule : unsigned {
  kBadWgmmaHeadDim = 1u << 7,  // head_dim: 64 or 128 for wgmma tiles
  kBadWgmmaShape = 1u << 8,    // block_m in {64, 128, 192}, block_n in {64, 128}, warps = block_m / 16
  kBadWgmmaStages = 1u << 9,   // stages: 3 or 4 (two key tiles in use while the rest load)
};
inline constexpr int kWgmmaMinStages = 3;
inline constexpr int kWgmmaMaxStages = 4;

/// 128-byte swizzle atoms are 64 elements wide: the contraction and V are stored as such slices.
RAJIT_HOST_DEVICE constexpr int wgmma_slices(int cols) { return (cols + 63) / 64; }

RAJIT_HOST_DEVICE constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }

/// Shared memory of a wgmma forward tile (mirrors attention/fwd_wgmma.cuh): 1024 bytes of
/// alignment slack, the Q tile (also the O staging tile), per stage K and V, then the stages' bias
/// vectors; every swizzled region starts 1024-byte aligned as the 128-byte swizzle requires.
RAJIT_HOST_DEVICE constexpr int wgmma_fwd_shared_bytes(int d_std, int r, int head_dim, int block_m,
                                                       int block_n, int stages) {
  const int q = block_m * wgmma_slices(padded_contraction(d_std, r)) * 128;
  const int o = block_m * wgmma_slices(head_dim) * 128;
  const int per_stage = block_n * wgmma_slices(padded_contraction(d_std, r)) * 128 +
                        block_n * wgmma_slices(head_dim) * 128;
  return 1024 + (q > o ? q : o) + stages * per_stage +
         round_up(stages * block_n * 4 + 64, 1024);  // bias vectors, then the stage mbarriers
}

/// Registers per thread the accumulators of a wgmma tile hold (S, O and the bf16 P fragments).
RAJIT_HOST_DEVICE constexpr int wgmma_fwd_registers(int head_dim, int block_n) {
  return block_n / 2 + head_dim / 2 + block_n / 4;
}

/// CTAs per SM a wgmma tile asks the compiler to fit (__launch_bounds__): 2 when two CTAs'
/// registers (at the accumulator estimate) and shared memory fit an sm_90 SM, else 1. Channel
/// widths that need 8-byte copies (d_std or r not a multiple of 8) double the copy loop's
/// address registers and spilled under the 128-register cap of two CTAs (nvrtc tier), so they get 1.
RAJIT_HOST_DEVICE constexpr int wgmma_fwd_min_blocks(int d_std, int r, int head_dim, int block_n,
                                                     int warps, int shared_bytes) {
  const bool regs_fit = 2 * warps * 32 * (wgmma_fwd_registers(head_dim, block_n) +
                                          kWgmmaRegisterOverhead) <= kWgmmaRegisterFile;
  return regs_fit && copy_elems(d_std, r) == 8 && 2 * shared_bytes <= 228 * 1024 ? 2 : 1;
}

RAJIT_HOST_DEVICE constexpr unsigned check_wgmma_tile(int d_std, int r, int head_dim, int block_m,
                                                      int block_n, int warps, int stages,
                                                      int max_shared_bytes) {
  unsigned bad = 0;
  if (!in_list(block_m, kWgmmaBlockMs, sizeof(kWgmmaBlockMs) / sizeof(int)) ||
      !in_list(block_n, kWgmmaBlockNs, sizeof(kWgmmaBlockNs) / sizeof(int)) ||
      warps * 16 != block_m) {
    bad |= kBadWgmmaShape;
  }
  if (stages < kWgmmaMinStages || stages > kWgmmaMaxStages) bad |= kBadWgmmaStages;
  if (bad) return bad;
  if (check_spec(d_std, r, head_dim) != 0) return bad;
  if (!in_list(head_dim, kWgmmaHeadDims, sizeof(kWgmmaHeadDims) / sizeof(int))) {
    return bad | kBadWgmmaHeadDim;
  }
  if (wgmma_fwd_shared_bytes(d_std, r, head_dim, block_m, block_n, stages) > max_shared_bytes) {
    bad |= kBadSharedMemory;
  }
  if (warps * 32 * (wgmma_fwd_registers(head_dim, block_n) + kWgmmaRegisterOverhead) >
          kWgmmaRegisterFile ||
      block_n / 2 + head_dim / 2 > kWgmmaMaxAccumulators) {
    bad |= kBadRegisters;
  }
  return bad;
}

// ---- the TMA forward (attention/fwd_tma.cuh): same tile shapes as the wgmma family ----------
/// Columns read into 128-byte-swizzled slices: the whole folded row when q_low follows k_std in
/// memory (one box per 64 columns), else k_std alone.
RAJIT_HOST_DEVICE constexpr int tma_swizzled_cols(int d_std, int r, bool folded) {
  return folded ? d_std + r : d_std;
}
/// With separate operands, the last 8 columns of q_std / k_std when d_std stops 8 columns into a
/// k16 step and r fills an odd number of 8-column groups: those columns then share a k16 step with
/// the low part instead of padding their own (one k16 step fewer: 3 + 1 instead of 4 + 1 at
/// d_std 56, r 8). Elsewhere moving them saves nothing, and they stay in the swizzled slices.
RAJIT_HOST_DEVICE constexpr int tma_std_tail_groups(int d_std, int r, bool folded) {
  return !folded && d_std % 16 != 0 && d_std % 16 <= 8 && ((r + 7) / 8) % 2 == 1 ? 1 : 0;
}
/// k16 steps of Q K^T over the swizzled slices.
RAJIT_HOST_DEVICE constexpr int tma_std_steps(int d_std, int r, bool folded) {
  return (tma_swizzled_cols(d_std, r, folded) - 8 * tma_std_tail_groups(d_std, r, folded) + 15) /
         16;
}
/// 8-column groups (16-byte rows, no swizzle) that boxes fill when not folded: the q_std / k_std
/// tail group, if any, then q_low / k_low.
RAJIT_HOST_DEVICE constexpr int tma_low_operand_groups(int d_std, int r, bool folded) {
  return folded ? 0 : tma_std_tail_groups(d_std, r, folded) + (r + 7) / 8;
}
/// Those groups padded to whole k16 steps.
RAJIT_HOST_DEVICE constexpr int tma_low_groups(int d_std, int r, bool folded) {
  return round_up(tma_low_operand_groups(d_std, r, folded), 2);
}
inline constexpr int kTmaBarrierBytes = 128;  // 2 per stage (landed, released) + the query's
/// Bytes after a TMA tile's bias row that its bias step may read (fwd_tma.cuh, kBiasByMma): the
/// last 8-key group's core matrices reach 112 bytes past the row; they hold zeros. Reserved for
/// every TMA tile with a bias (unused where the loads add the bias), so one rule sizes them all.
inline constexpr int kTmaBiasRowPadBytes = 128;

/// Shared memory of a TMA forward tile as compiled (mirrors attention/fwd_tma.cuh): alignment
/// slack, the query tile (swizzled slices, low groups; O staging aliases it), per stage K
/// (slices, low groups) and V, the mbarriers, then with a bias one bias vector per stage and the
/// bias row's padding.
/// Swizzled regions start 1024-byte aligned. A launch in the bias-row mode adds the row after it.
RAJIT_HOST_DEVICE constexpr int tma_fwd_shared_bytes(int d_std, int r, int head_dim, int block_m,
                                                     int block_n, int stages, bool bias,
                                                     bool folded) {
  const int slices = wgmma_slices(tma_swizzled_cols(d_std, r, folded));
  const int groups = tma_low_groups(d_std, r, folded);
  const int q = block_m * slices * 128 + groups * block_m * 16;
  const int o = block_m * wgmma_slices(head_dim) * 128;
  const int per_stage = block_n * slices * 128 + round_up(groups * block_n * 16, 1024) +
                        block_n * wgmma_slices(head_dim) * 128;
  return 1024 + round_up(q > o ? q : o, 1024) + stages * per_stage + kTmaBarrierBytes +
         (bias ? stages * block_n * 4 + kTmaBiasRowPadBytes : 0);
}

/// CTAs per SM for a TMA tile: 2 when two CTAs' registers and shared memory fit an sm_90 SM.
/// (No copy-width condition: the compute warps hold no copy addresses.)
RAJIT_HOST_DEVICE constexpr int tma_fwd_min_blocks(int head_dim, int block_n, int warps,
                                                   int shared_bytes) {
  const bool regs_fit = 2 * warps * 32 * (wgmma_fwd_registers(head_dim, block_n) +
                                          kWgmmaRegisterOverhead) <= kWgmmaRegisterFile;
  return regs_fit && 2 * shared_bytes <= 228 * 1024 ? 2 : 1;
}

// The bias-row mode: each CTA reads the bias of its first key tiles once, scales it by
// w_disc log2(e) and keeps it in shared memory after the per-stage vectors, so those tiles'
// softmax reads ready values (perf-notes v7); tiles past the row take the per-stage vectors by
// TMA as before. The row holds as many whole key tiles as fit without lowering the tile's CTAs
// per SM, up to the whole of seqlen_k.
inline constexpr int kSm90SharedPerSm = 228 * 1024;
inline constexpr int kSm90SharedReservedPerCta = 1024;  // the driver's per-CTA reservation

/// Keys (a multiple of block_n) the bias row of a TMA tile with a bias can hold: as many as fit
/// beside the tile's shared memory without lowering its CTAs per SM.
RAJIT_HOST_DEVICE constexpr int tma_fwd_bias_row_capacity(int d_std, int r, int head_dim,
                                                          int block_m, int block_n, int warps,
                                                          int stages, bool folded,
                                                          int max_shared_bytes) {
  const int compiled =
      tma_fwd_shared_bytes(d_std, r, head_dim, block_m, block_n, stages, true, folded);
  const int blocks = tma_fwd_min_blocks(head_dim, block_n, warps, compiled);
  int budget = kSm90SharedPerSm / blocks - kSm90SharedReservedPerCta;
  if (budget > max_shared_bytes) budget = max_shared_bytes;
  return budget > compiled ? (budget - compiled) / 4 / block_n * block_n : 0;
}

/// Keys of the bias row for a call with `seqlen_k` keys: all of them (rounded up to whole key
/// tiles) when they fit, else the capacity; 0 = no row.
RAJIT_HOST_DEVICE constexpr int tma_fwd_bias_row_keys(int seqlen_k, int block_n, int capacity) {
  const int keys = round_up(seqlen_k, block_n);
  return keys < capacity ? keys : capacity;
}

RAJIT_HOST_DEVICE constexpr unsigned check_tma_tile(int d_std, int r, int head_dim, int block_m,
                                                    int block_n, int warps, int stages, bool bias,
                                                    bool folded, int max_shared_bytes) {
  unsigned bad = check_wgmma_tile(d_std, r, head_dim, block_m, block_n, warps, stages, 1 << 30);
  if (bad != 0 || check_spec(d_std, r, head_dim) != 0) return bad;
  if (tma_fwd_shared_bytes(d_std, r, head_dim, block_m, block_n, stages, bias, folded) >
      max_shared_bytes) {
    bad |= kBadSharedMemory;
  }
  return bad;
}

/// Opt-in shared memory per block for a compute capability (major * 10 + minor), in bytes.
RAJIT_HOST_DEVICE constexpr int max_shared_bytes_for_cc(int cc) {
  return cc >= 90 ? 227 * 1024 : cc == 80 ? 163 * 1024 : cc == 87 ? 163 * 1024 : 99 * 1024;
}

}  // namespace rajit::attn
