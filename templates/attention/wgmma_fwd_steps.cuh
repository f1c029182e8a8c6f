/// The per-tile steps both Hopper forward kernels share: mask test, online softmax, P packing, O rescale, epilogue.
// fwd_wgmma.cuh (cp.async-fed) and fwd_tma.cuh (TMA-fed) differ in how tiles reach shared memory
// and where a tile's bias comes from; everything a warpgroup does with its S and O accumulators
// is this one code. Config C provides kBlockM, kBlockN, kHeadDim, kThreads, kSRegs, kORegs,
// kPvSteps, Element, Mask and Bias.
#pragma once
#include "attention/params.cuh"
#include "attention/tile_copy.cuh"
#include "common/ptx.cuh"

namespace rajit::attn::wgmma_fwd {

using dev::u32;

/// Whether key tile `tile` crosses the causal diagonal or the end of the keys for this warp's
/// rows: only those tiles run the masked softmax.
template <class C>
__device__ __forceinline__ bool needs_mask(const FwdParams& p, int tile, int warp_row0, int diag) {
  const int n0 = tile * C::kBlockN;
  bool masked = n0 + C::kBlockN > p.seqlen_k;
  if constexpr (C::Mask::kCausal) masked = masked || n0 + C::kBlockN - 1 > warp_row0 + diag;
  return masked;
}

/// Online softmax in base 2 over S of key tile `tile`: S becomes P (fp32), the running row maxima
/// and sums advance, and `correction` is the factor O must be rescaled by.
/// `bias_pair(lane, nt, b0, b1)` gives this thread's two bias columns of n8 tile nt, already
/// scaled to base 2 (called only when kAddBias; each pair is used for both rows, then dies).
/// kAddBias is false for a spec without a bias and for tiles whose bias the MMA already added.
template <class C, bool kMasked, bool kAddBias, class BiasPair>
__device__ __forceinline__ void softmax_tile(const FwdParams& p, float (&s)[C::kSRegs], int tile,
                                             int warp_row0, int diag, BiasPair&& bias_pair,
                                             float (&row_max)[2], float (&row_sum)[2],
                                             float (&correction)[2]) {
  const int n0 = tile * C::kBlockN;
  const int seqlen_k = p.seqlen_k;
  const int lane = dev::lane_id();
  // With a bias to add, the scores are scaled and biased first and the maximum taken over those;
  // without one, the maximum is taken over the raw scores (p.scale_log2 > 0: the host validates
  // scale) and the scale joins the exp2's FFMA, one multiply per score fewer (FlashAttention-2's
  // order). row_max is in scaled units either way.
  const float kNegInf = -__int_as_float(0x7f800000);
  float mx[2] = {kAddBias ? row_max[0] : kNegInf, kAddBias ? row_max[1] : kNegInf};
  // Masked tiles: key column c is visible to this thread's row of `half` iff c <= last[half]
  // (the causal diagonal and the end of the keys folded into one bound).
  int last[2] = {0, 0};
  if constexpr (kMasked) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warp_row0 + lane / 4 + half * 8;
      last[half] = C::Mask::kCausal ? min(row + diag, seqlen_k - 1) : seqlen_k - 1;
      last[half] -= n0 + 2 * (lane % 4);  // relative to this thread's first column
    }
  }
#pragma unroll
  for (int nt = 0; nt < C::kBlockN / 8; ++nt) {
    float bias[2] = {0.f, 0.f};
    if constexpr (kAddBias) bias_pair(lane, nt, bias[0], bias[1]);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[nt * 4 + half * 2 + e];
        if constexpr (kAddBias) x = fmaf(x, p.scale_log2, bias[e]);
        if constexpr (kMasked) {
          if (nt * 8 + e > last[half]) x = kNegInf;
        }
        mx[half] = fmaxf(mx[half], x);  // FMNMX; `x > m ? x : m` is a compare + select
      }
    }
  }
  float base[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float m = mx[half];
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    if constexpr (!kAddBias) m = fmaxf(row_max[half], m * p.scale_log2);
    // A row with nothing visible yet keeps max = -inf; subtract 0 then so exp2 gives 0.
    base[half] = m == kNegInf ? 0.f : m;
    correction[half] = dev::exp2_approx(row_max[half] - base[half]);
    row_max[half] = m;
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < C::kBlockN / 8; ++nt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[nt * 4 + half * 2 + e];
        x = dev::exp2_approx(kAddBias ? x - base[half] : fmaf(x, p.scale_log2, -base[half]));
        sum[half] += x;
      }
    }
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    row_sum[half] = row_sum[half] * correction[half] + sum[half];
  }
}

/// The softmax of one key tile, masked or not. A separate copy per case: with the mask test
/// inside one copy, the compiler if-converts it and every tile pays two compares and a select
/// per element.
template <class C, bool kAddBias = C::Bias::kHasBias, class BiasPair>
__device__ __forceinline__ void softmax(const FwdParams& p, float (&s)[C::kSRegs], int tile,
                                        int warp_row0, int diag, BiasPair&& bias_pair,
                                        float (&row_max)[2], float (&row_sum)[2],
                                        float (&correction)[2]) {
  if (needs_mask<C>(p, tile, warp_row0, diag)) {
    softmax_tile<C, true, kAddBias>(p, s, tile, warp_row0, diag, bias_pair, row_max, row_sum,
                                   correction);
  } else {
    softmax_tile<C, false, kAddBias>(p, s, tile, warp_row0, diag, bias_pair, row_max, row_sum,
                                    correction);
  }
}

/// P as k16 A fragments: the S accumulators of two n8 tiles are one k16 fragment.
template <class C>
__device__ __forceinline__ void pack_p(u32 (&pa)[C::kPvSteps][4], const float (&s)[C::kSRegs]) {
  using E = typename C::Element;
#pragma unroll
  for (int kk = 0; kk < C::kPvSteps; ++kk) {
    pa[kk][0] = E::pack(s[8 * kk + 0], s[8 * kk + 1]);
    pa[kk][1] = E::pack(s[8 * kk + 2], s[8 * kk + 3]);
    pa[kk][2] = E::pack(s[8 * kk + 4], s[8 * kk + 5]);
    pa[kk][3] = E::pack(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

/// O *= correction, per row. Once a row's maximum settles (most tiles of a long row) its
/// correction is exactly exp2(0) = 1: skip the kHeadDim / 2 multiplies, a large share of the
/// per-tile FP32 work.
template <class C>
__device__ __forceinline__ void rescale_o(float (&o_acc)[C::kORegs], const float (&correction)[2]) {
  if (correction[0] != 1.f || correction[1] != 1.f) {
#pragma unroll
    for (int nt = 0; nt < C::kHeadDim / 8; ++nt) {
      o_acc[nt * 4 + 0] *= correction[0];
      o_acc[nt * 4 + 1] *= correction[0];
      o_acc[nt * 4 + 2] *= correction[1];
      o_acc[nt * 4 + 3] *= correction[1];
    }
  }
}

/// Normalises O, writes the LSE, stages O through shared memory at `smem_s` (where Q was: every
/// warpgroup must be done reading Q) and writes it with 16-byte coalesced stores.
template <class C>
__device__ __forceinline__ void store_output(const FwdParams& p, const float (&o_acc)[C::kORegs],
                                             const float (&row_max)[2], const float (&row_sum)[2],
                                             u32 smem_s, int warp_row0, int m0, int b, int h,
                                             int tid) {
  using E = typename C::Element;
  using OTile = Sw128Tile<C::kBlockM>;
  constexpr float kLn2 = 0.6931471805599453f;
  // The generic address is rebuilt from smem_s, so the caller's `smem` need not stay live.
  char* const out_smem = dev::shared_to_generic(smem_s);
  const int lane = dev::lane_id();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;  // no visible key: O = 0, never NaN
    // From warp_row0, which the loop kept live anyway: a separate copy of this warp's row
    // offset would be held across the loop and spill at the 128-register limit.
    const int row = warp_row0 + lane / 4 + half * 8;
    const int local_row = row - m0;
#pragma unroll
    for (int nt = 0; nt < C::kHeadDim / 8; ++nt) {
      const int col = nt * 8 + 2 * (lane % 4);
      *reinterpret_cast<u32*>(out_smem + OTile::byte_offset(local_row, col)) =
          E::pack(o_acc[nt * 4 + half * 2] * inv, o_acc[nt * 4 + half * 2 + 1] * inv);
    }
    if (p.lse != nullptr && lane % 4 == 0 && row < p.seqlen_q) {
      const float lse = sum > 0.f ? (row_max[half] + dev::log2_approx(sum)) * kLn2
                                  : -__int_as_float(0x7f800000);
      p.lse[(static_cast<index_t>(b) * p.heads + h) * p.seqlen_q + row] = lse;
    }
  }
  __syncthreads();
  constexpr int kOUnits = C::kHeadDim / 8;
  char* o_base = static_cast<char*>(p.o) + 2 * (b * p.o_batch_stride + h * p.o_head_stride);
  for (int idx = tid; idx < C::kBlockM * kOUnits; idx += C::kThreads) {
    const int row = idx / kOUnits;
    const int col = (idx % kOUnits) * 8;
    if (m0 + row < p.seqlen_q) {
      const uint4 v = *reinterpret_cast<const uint4*>(out_smem + OTile::byte_offset(row, col));
      *reinterpret_cast<uint4*>(o_base + 2 * ((m0 + row) * p.o_row_stride + col)) = v;
    }
  }
}

}  // namespace rajit::attn::wgmma_fwd
