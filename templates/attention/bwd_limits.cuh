/// Validity rules and resource formulas for the backward kernels' tile shapes (S19), host and device.
// Kept apart from limits.cuh (the forward's rules) so the two families evolve independently; the
// spec rules (check_spec) are shared. Two tile families:
//   dK/dV kernel: one CTA per (b*h, key block of block_n); each warp owns 16 key rows, so
//                 warps = block_n / 16, or two warps share them (warps = 8, block_n = 64: split
//                 accumulators); block_m query rows stream through `stages` buffers.
//   dQ kernel (deterministic mode): one CTA per (b*h, query block of block_m); each warp owns 16
//                 query rows, so warps = block_m / 16; block_n key rows stream.
#pragma once
#include "attention/limits.cuh"

namespace rajit::attn {

// The backward keeps dK and dV (or dQ) accumulators for a warp's 16 rows in registers, so it
// supports the narrower half of the forward's spec space.
inline constexpr int kBwdMaxHeadDim = 128;
inline constexpr int kBwdMaxContraction = 128;  // padded d_std + r

enum BwdSpecRule : unsigned {
  kBwdBadHeadDim = 1u << 8,      // head_dim <= 128
  kBwdBadContraction = 1u << 9,  // padded d_std + r <= 128
};

RAJIT_HOST_DEVICE constexpr unsigned check_bwd_spec(int d_std, int r, int head_dim) {
  unsigned bad = check_spec(d_std, r, head_dim);
  if (bad) return bad;
  if (head_dim > kBwdMaxHeadDim) bad |= kBwdBadHeadDim;
  if (padded_contraction(d_std, r) > kBwdMaxContraction) bad |= kBwdBadContraction;
  return bad;
}

/// Shared memory of the dK/dV kernel: resident gated key tile and V, `stages` buffers of
/// (query tile, dO tile, lse, delta), and the dS^T tile the atomic dQ product reads.
RAJIT_HOST_DEVICE constexpr int bwd_dkv_shared_bytes(int d_std, int r, int head_dim, int block_m,
                                                     int block_n, int stages, bool atomic_dq) {
  const int dqk = padded_contraction(d_std, r);
  const int resident = block_n * (dqk + 8) * 2 + block_n * (head_dim + 8) * 2;
  const int per_stage = block_m * (dqk + 8) * 2 + block_m * (head_dim + 8) * 2 + block_m * 8;
  const int ds = atomic_dq ? block_n * (block_m + 8) * 2 : 0;
  return resident + stages * per_stage + ds;
}

/// Shared memory of the dQ kernel: resident gated query tile and dO, `stages` buffers of
/// (key tile, V tile, bias).
RAJIT_HOST_DEVICE constexpr int bwd_dq_shared_bytes(int d_std, int r, int head_dim, int block_m,
                                                    int block_n, int stages) {
  const int dqk = padded_contraction(d_std, r);
  const int resident = block_m * (dqk + 8) * 2 + block_m * (head_dim + 8) * 2;
  const int per_stage = block_n * (dqk + 8) * 2 + block_n * (head_dim + 8) * 2 + block_n * 4;
  return resident + stages * per_stage;
}

/// Accumulator registers per thread (a lower bound; the nvrtc tier proves there are no spills).
/// Unsplit warps hold dK, dV, S^T and dP^T; split warps (two per 16 key rows) hold either dV and
/// S^T, or dK, S^T and dP^T.
RAJIT_HOST_DEVICE constexpr int bwd_dkv_accumulator_registers(int d_std, int r, int head_dim,
                                                              int block_m, bool split = false) {
  const int dk = padded_contraction(d_std, r) / 2, dv = head_dim / 2, s = block_m / 2;
  if (!split) return dk + dv + 2 * s;
  return dk + 2 * s > dv + s ? dk + 2 * s : dv + s;
}
RAJIT_HOST_DEVICE constexpr int bwd_dq_accumulator_registers(int d_std, int r, int block_n) {
  return padded_contraction(d_std, r) / 2 + block_n;  // dQ, S and dP
}

inline constexpr int kBwdRegisterBudget = 144;  // measured: 160 spills (d96 bm64, d128 bm32)
inline constexpr int kAuxThreadsHost = 256;  // block size of the small backward kernels
// Query rows of one (b, h) per CTA of the row kernels (preprocess, Gq conversion): their grid is
// (batch * heads, ceil(seqlen_q / 64)), so no thread divides a flat row index by seqlen_q, and
// 64 keeps grid.y within 65535 for every seqlen_q the facade accepts.
inline constexpr int kAuxRowsPerCta = 64;

enum BwdTileRule : unsigned {
  kBwdBadBlockM = 1u << 0,    // dkv: 16, 32 or 64 (wgmma: 64); dq: 64 or 128
  kBwdBadBlockN = 1u << 1,    // dkv: 64 or 128; dq: 32 or 64
  kBwdBadWarps = 1u << 2,     // dkv: block_n / 16 (or 8 with block_n 64); dq: block_m / 16
  kBwdBadStages = 1u << 3,    // 2 (double-buffered cp.async)
  kBwdBadSharedMemory = 1u << 5,
  kBwdBadRegisters = 1u << 6,
  kBwdBadWgmmaWidth = 1u << 7,  // wgmma dK/dV: head_dim and padded d_std + r both 64 or 128
};

RAJIT_HOST_DEVICE constexpr unsigned check_bwd_dkv_tile(int d_std, int r, int head_dim,
                                                        int block_m, int block_n, int warps,
                                                        int stages, bool atomic_dq,
                                                        int max_shared_bytes) {
  unsigned bad = 0;
  if (block_m != 16 && block_m != 32 && block_m != 64) bad |= kBwdBadBlockM;
  if (block_n != 64 && block_n != 128) bad |= kBwdBadBlockN;
  // warps = block_n / 16 (one warp per 16 key rows) or, for block_n 64, 8 (two warps per 16 key
  // rows with split accumulators: see BwdDkvKernel).
  const bool split = block_n == 64 && warps == 8;
  if (warps * 16 != block_n && !split) bad |= kBwdBadWarps;
  if (stages != 2) bad |= kBwdBadStages;
  if (bad || check_bwd_spec(d_std, r, head_dim) != 0) return bad;
  // 16-query blocks only where 32 would not fit the registers (they starve the MMAs otherwise).
  if (block_m == 16 &&
      bwd_dkv_accumulator_registers(d_std, r, head_dim, 32, split) <= kBwdRegisterBudget) {
    return bad | kBwdBadBlockM;
  }
  if (bwd_dkv_shared_bytes(d_std, r, head_dim, block_m, block_n, stages, atomic_dq) >
      max_shared_bytes) {
    bad |= kBwdBadSharedMemory;
  }
  if (bwd_dkv_accumulator_registers(d_std, r, head_dim, block_m, split) > kBwdRegisterBudget) {
    bad |= kBwdBadRegisters;
  }
  return bad;
}

RAJIT_HOST_DEVICE constexpr unsigned check_bwd_dq_tile(int d_std, int r, int head_dim, int block_m,
                                                       int block_n, int warps, int stages,
                                                       int max_shared_bytes) {
  unsigned bad = 0;
  if (block_m != 64 && block_m != 128) bad |= kBwdBadBlockM;
  if (block_n != 32 && block_n != 64) bad |= kBwdBadBlockN;
  if (warps * 16 != block_m) bad |= kBwdBadWarps;
  if (stages != 2) bad |= kBwdBadStages;
  if (bad || check_bwd_spec(d_std, r, head_dim) != 0) return bad;
  if (bwd_dq_shared_bytes(d_std, r, head_dim, block_m, block_n, stages) > max_shared_bytes) {
    bad |= kBwdBadSharedMemory;
  }
  if (bwd_dq_accumulator_registers(d_std, r, block_n) > kBwdRegisterBudget) {
    bad |= kBwdBadRegisters;
  }
  return bad;
}

// ---- the Hopper dK/dV family (sm_90a): one warpgroup (4 warps, wgmma m64) per 64 key rows ------
// Each step takes block_m = 64 query rows: S^T and dP^T are m64n64 per warpgroup, dV and dK
// m64n{head_dim}/m64n{d_std + r} with P^T / dS^T as register A operands, and the atomic variant's
// dQ is m64n64 per 64-column slice of the gated key tile, from dS staged in shared memory.
inline constexpr int kBwdWgmmaBlockM = 64;
inline constexpr int kBwdWgmmaMinStages = 2;
inline constexpr int kBwdWgmmaMaxStages = 2;  // 3 measured no faster (H200) and spills at width 128
inline constexpr int kBwdWgmmaRegisterBudget = 192;  // dV + dK + S^T + dP^T fp32 per thread

/// Shared memory of a wgmma dK/dV tile (mirrors attention/bwd_wgmma.cuh): 1024 bytes of alignment
/// slack, the resident gated key tile and V, `stages` buffers of (query tile, [ones], dO tile), the
/// dS tile (atomic dQ only), then the stages' lse and delta vectors. With a bias each stage holds a
/// 64-column slice of ones right after its query tile: the dK product then runs 8 columns wider and
/// its last 8 columns are the column sums of dS (the bias gradient) at no extra instruction. Every
/// swizzled region starts 1024-byte aligned, as the 128-byte swizzle requires.
RAJIT_HOST_DEVICE constexpr int bwd_dkv_wgmma_ones_bytes(bool bias) {
  return bias ? kBwdWgmmaBlockM * 128 : 0;
}
RAJIT_HOST_DEVICE constexpr int bwd_dkv_wgmma_shared_bytes(int d_std, int r, int head_dim,
                                                           int block_n, int stages, bool atomic_dq,
                                                           bool bias) {
  const int qk_row = wgmma_slices(padded_contraction(d_std, r)) * 128;
  const int v_row = wgmma_slices(head_dim) * 128;
  const int resident = block_n * (qk_row + v_row);
  const int per_stage = kBwdWgmmaBlockM * (qk_row + v_row) + bwd_dkv_wgmma_ones_bytes(bias);
  const int ds = atomic_dq ? kBwdWgmmaBlockM * block_n * 2 : 0;
  // lse and delta per stage, then 64 bytes of mbarriers (the TMA variant's per-stage "landed").
  return 1024 + resident + stages * per_stage + ds +
         round_up(stages * kBwdWgmmaBlockM * 8 + 64, 1024);
}

RAJIT_HOST_DEVICE constexpr int bwd_dkv_wgmma_registers(int d_std, int r, int head_dim) {
  return head_dim / 2 + padded_contraction(d_std, r) / 2 + kBwdWgmmaBlockM;
}

RAJIT_HOST_DEVICE constexpr unsigned check_bwd_dkv_wgmma_tile(int d_std, int r, int head_dim,
                                                              int block_m, int block_n, int warps,
                                                              int stages, bool atomic_dq, bool bias,
                                                              int max_shared_bytes) {
  unsigned bad = 0;
  if (block_m != kBwdWgmmaBlockM) bad |= kBwdBadBlockM;
  if (block_n != 64 && block_n != 128) bad |= kBwdBadBlockN;
  if (warps * 16 != block_n) bad |= kBwdBadWarps;
  if (stages < kBwdWgmmaMinStages || stages > kBwdWgmmaMaxStages) bad |= kBwdBadStages;
  if (bad || check_bwd_spec(d_std, r, head_dim) != 0) return bad;
  const int dqk = padded_contraction(d_std, r);
  if ((head_dim != 64 && head_dim != 128) || (dqk != 64 && dqk != 128)) {
    return bad | kBwdBadWgmmaWidth;
  }
  if (bwd_dkv_wgmma_shared_bytes(d_std, r, head_dim, block_n, stages, atomic_dq, bias) >
      max_shared_bytes) {
    bad |= kBwdBadSharedMemory;
  }
  if (bwd_dkv_wgmma_registers(d_std, r, head_dim) > kBwdWgmmaRegisterBudget) {
    bad |= kBwdBadRegisters;
  }
  return bad;
}

}  // namespace rajit::attn
