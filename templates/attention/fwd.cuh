/// The RA forward kernel: FlashAttention-2-style tiles with mma.sync, ldmatrix and cp.async.
// One CTA owns kBlockM query rows of one (batch, head); each warp owns kRowTiles 16-row MMA tiles
// and streams key tiles of kBlockN through a kStages-deep cp.async pipeline. RA's folded operands
// qf = [w_std q_std | w_rec k_low] and kf = [k_std | q_low] exist only in shared memory: the copy
// loop gathers them from their four strided sources, and the contraction is padded to 16 there.
#pragma once
#include "attention/limits.cuh"
#include "attention/params.cuh"
#include "attention/policies.cuh"
#include "attention/tile_copy.cuh"
#include "common/ptx.cuh"

namespace rajit::attn {

using dev::u32;

template <class Element_, int kDStd_, int kR_, int kHeadDim_, int kBlockM_, int kBlockN_,
          int kWarps_, int kStages_, class Mask_, class Bias_>
struct FwdConfig {
  using Element = Element_;
  using Mask = Mask_;
  using Bias = Bias_;
  static constexpr int kDStd = kDStd_, kR = kR_, kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kDqk = kDStd + kR;
  static constexpr int kDqkPad = padded_contraction(kDStd, kR);
  static constexpr int kCopyElems = copy_elems(kDStd, kR);
  static constexpr int kRowTiles = kBlockM / (16 * kWarps);  // 16-row MMA tiles per warp
  static constexpr int kSTiles = kBlockN / 8;                // n8 tiles of S per row tile
  static constexpr int kOTiles = kHeadDim / 8;               // n8 tiles of O per row tile
  static constexpr int kQkSteps = kDqkPad / 16;              // k16 steps of Q K^T
  static constexpr int kPvSteps = kBlockN / 16;              // k16 steps of P V
  static constexpr bool kQInRegisters = fwd_q_in_registers(kDStd, kR, kHeadDim);
  static constexpr int kQoCols = kDqkPad > kHeadDim ? kDqkPad : kHeadDim;
  // Shared memory, bytes: [Q (later O)] [stage 0: K | V | bias] [stage 1] ...
  static constexpr int kQoBytes = kBlockM * (kQoCols + 8) * 2;  // rows padded by 16 bytes
  static constexpr int kKBytes = kBlockN * (kDqkPad + 8) * 2;
  static constexpr int kVBytes = kBlockN * (kHeadDim + 8) * 2;
  static constexpr int kStageBytes = kKBytes + kVBytes + kBlockN * 4;
  static constexpr int kSharedBytes = kQoBytes + kStages * kStageBytes;

  static_assert(check_spec(kDStd, kR, kHeadDim) == 0, "invalid RA spec");
  static_assert(check_tile(kDStd, kR, kHeadDim, kBlockM, kBlockN, kWarps, kStages, 1 << 30) == 0,
                "invalid tile shape");
  static_assert(kSharedBytes == fwd_shared_bytes(kDStd, kR, kHeadDim, kBlockM, kBlockN, kStages),
                "limits.cuh and the kernel disagree on the shared-memory layout");
  static_assert(kSTiles % 2 == 0 && kOTiles % 2 == 0, "ldmatrix.x4 loads n8 tiles in pairs");
};

template <class Config>
struct FwdKernel {
  using C = Config;
  using E = typename C::Element;
  using QTile = PaddedTile<C::kBlockM, C::kDqkPad>;  // (kBlockM, kDqkPad) bf16/fp16
  using OTile = PaddedTile<C::kBlockM, C::kHeadDim>;  // (kBlockM, kHeadDim), aliases Q
  static_assert(OTile::kBytes <= C::kQoBytes && QTile::kBytes <= C::kQoBytes, "Q/O region");
  using KTile = PaddedTile<C::kBlockN, C::kDqkPad>;  // (kBlockN, kDqkPad)
  using VTile = PaddedTile<C::kBlockN, C::kHeadDim>;  // (kBlockN, kHeadDim)
  static constexpr float kLog2e = 1.4426950408889634f;
  static constexpr float kLn2 = 0.6931471805599453f;

  const FwdParams& p;
  char* smem;
  int tid, warp, lane;
  int b, h, m0;
  index_t q_std_off, k_low_off, k_std_off, q_low_off, v_off;

  __device__ __forceinline__ u32 q_addr(int row, int col) const {
    return dev::smem_addr(smem) + 2 * QTile::offset(row, col);
  }
  __device__ __forceinline__ char* stage_base(int stage) const {
    return smem + C::kQoBytes + stage * C::kStageBytes;
  }

  // The copy loops live in attention/tile_copy.cuh; these bind them to this kernel's config.
  template <class Tile, int kRows>
  __device__ __forceinline__ void load_folded(char* dst, const Operand2d& a, index_t a_off,
                                              const Operand2d& bop, index_t b_off, int row0,
                                              int rows_valid) const {
    attn::load_folded<Tile, kRows, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        dst, a, a_off, bop, b_off, row0, rows_valid, tid);
  }
  template <class Tile, int kRows>
  __device__ __forceinline__ void zero_pad(char* dst) const {
    attn::zero_pad<Tile, kRows, C::kDqk, C::kDqkPad, C::kThreads>(dst, tid);
  }

  __device__ __forceinline__ void load_kv(int tile, int stage) const {
    const int n0 = tile * C::kBlockN;
    char* base = stage_base(stage);
    load_folded<KTile, C::kBlockN>(base, p.k_std, k_std_off, p.q_low, q_low_off, n0, p.seqlen_k);
    load_plain<VTile, C::kBlockN, C::kHeadDim, C::kThreads>(base + C::kKBytes, p.v, v_off, n0,
                                                            p.seqlen_k, tid);
    if constexpr (C::Bias::kHasBias) {
      load_floats<C::kBlockN, C::kThreads>(
          dev::smem_addr(base + C::kKBytes + C::kVBytes),
          p.bias + b * p.bias_batch_stride + h * p.bias_head_stride, n0, p.seqlen_k, tid);
    }
  }

  // Multiplies the staged query tile by its gates once, so the MMA sees qf directly.
  __device__ __forceinline__ void scale_query_by_gates() const {
    scale_by_gates<E, QTile, C::kBlockM, C::kDStd, C::kR, C::kThreads>(
        smem, p.w_std ? p.w_std[h] : 1.f, p.w_rec ? p.w_rec[h] : 1.f, tid);
  }

  __device__ __forceinline__ void load_q_fragment(u32 (&a)[4], int row_tile, int step) const {
    const int row = warp * (C::kRowTiles * 16) + row_tile * 16 + (lane % 16);
    dev::ldmatrix_x4(a, q_addr(row, step * 16 + (lane / 16) * 8));
  }

  __device__ void run() {
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int diag = seqlen_k - seqlen_q;  // causal: key j visible to row i iff j <= i + diag

    int n_end = seqlen_k;
    if constexpr (C::Mask::kCausal) {
      const int last_visible = m0 + C::kBlockM - 1 + diag;
      n_end = last_visible + 1 < seqlen_k ? last_visible + 1 : seqlen_k;
    }
    const int n_tiles = n_end > 0 ? (n_end + C::kBlockN - 1) / C::kBlockN : 0;

    // Stage the query tile and the first kStages - 1 key tiles.
    load_folded<QTile, C::kBlockM>(smem, p.q_std, q_std_off, p.k_low, k_low_off, m0, seqlen_q);
    zero_pad<QTile, C::kBlockM>(smem);
    for (int s = 0; s < C::kStages; ++s) zero_pad<KTile, C::kBlockN>(stage_base(s));
    dev::cp_async_commit();  // group 0: the query tile
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < n_tiles) load_kv(s, s);
      dev::cp_async_commit();
    }
    dev::cp_async_wait<C::kStages - 1>();  // the query group is complete
    __syncthreads();
    scale_query_by_gates();
    __syncthreads();

    u32 q_frag[C::kQInRegisters ? C::kRowTiles : 1][C::kQInRegisters ? C::kQkSteps : 1][4];
    if constexpr (C::kQInRegisters) {
#pragma unroll
      for (int mt = 0; mt < C::kRowTiles; ++mt)
#pragma unroll
        for (int ks = 0; ks < C::kQkSteps; ++ks) load_q_fragment(q_frag[mt][ks], mt, ks);
    }

    float o_acc[C::kRowTiles][C::kOTiles][4];
    float row_max[C::kRowTiles][2], row_sum[C::kRowTiles][2];
#pragma unroll
    for (int mt = 0; mt < C::kRowTiles; ++mt) {
#pragma unroll
      for (int nt = 0; nt < C::kOTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o_acc[mt][nt][e] = 0.f;
      row_max[mt][0] = row_max[mt][1] = -__int_as_float(0x7f800000);
      row_sum[mt][0] = row_sum[mt][1] = 0.f;
    }
    // A key's bias in the units of a raw score (w_disc log2(e) / scale_log2): S starts at it and
    // Q K^T accumulates onto it, so the softmax is the plain one (raw maximum, the scale in the
    // exp2's FFMA) and the bias costs no add per score (perf-notes v13).
    const float bias_to_score =
        C::Bias::kHasBias ? (p.w_disc ? p.w_disc[h] : 1.f) * kLog2e / p.scale_log2 : 0.f;
    const int warp_row0 = m0 + warp * (C::kRowTiles * 16);

    for (int tile = 0; tile < n_tiles; ++tile) {
      dev::cp_async_wait<C::kStages - 2>();
      __syncthreads();  // tile `tile` has landed and every warp is done with the stage we refill
      {
        const int next = tile + C::kStages - 1;
        if (next < n_tiles) load_kv(next, next % C::kStages);
        dev::cp_async_commit();
      }
      const int stage = tile % C::kStages;
      const char* kbase = stage_base(stage);
      const u32 k_smem = dev::smem_addr(kbase);
      const u32 v_smem = dev::smem_addr(kbase + C::kKBytes);
      const float* bias_smem = reinterpret_cast<const float*>(kbase + C::kKBytes + C::kVBytes);
      const int n0 = tile * C::kBlockN;

      // S = bias + qf kf^T for this warp's rows.                   // (kRowTiles, kSTiles, 4) fp32
      // This thread's two bias columns of each n8 tile start both of its rows.
      float s[C::kRowTiles][C::kSTiles][4];
#pragma unroll
      for (int nt = 0; nt < C::kSTiles; ++nt) {
        float2 bv = make_float2(0.f, 0.f);
        if constexpr (C::Bias::kHasBias) {
          bv = *reinterpret_cast<const float2*>(bias_smem + nt * 8 + 2 * (lane % 4));
          bv.x *= bias_to_score;
          bv.y *= bias_to_score;
        }
#pragma unroll
        for (int mt = 0; mt < C::kRowTiles; ++mt) {
          s[mt][nt][0] = s[mt][nt][2] = bv.x;
          s[mt][nt][1] = s[mt][nt][3] = bv.y;
        }
      }
#pragma unroll
      for (int ks = 0; ks < C::kQkSteps; ++ks) {
        u32 a[C::kRowTiles][4];
#pragma unroll
        for (int mt = 0; mt < C::kRowTiles; ++mt) {
          if constexpr (C::kQInRegisters) {
#pragma unroll
            for (int e = 0; e < 4; ++e) a[mt][e] = q_frag[mt][ks][e];
          } else {
            load_q_fragment(a[mt], mt, ks);
          }
        }
#pragma unroll
        for (int nt = 0; nt < C::kSTiles; nt += 2) {
          u32 bk[4];
          const int krow = nt * 8 + (lane % 8) + 8 * (lane / 16);
          const int kcol = ks * 16 + 8 * ((lane / 8) % 2);
          dev::ldmatrix_x4(bk, k_smem + 2 * KTile::offset(krow, kcol));
#pragma unroll
          for (int mt = 0; mt < C::kRowTiles; ++mt) {
            E::mma(s[mt][nt], a[mt], bk[0], bk[1]);
            E::mma(s[mt][nt + 1], a[mt], bk[2], bk[3]);
          }
        }
      }

      // Online softmax in base 2. Only tiles that cross the diagonal or the end need the mask.
      bool needs_mask = n0 + C::kBlockN > seqlen_k;
      if constexpr (C::Mask::kCausal) needs_mask = needs_mask || n0 + C::kBlockN - 1 > m0 + diag;
      // The softmax over this tile's rows, masked or not: a separate copy per case (with the
      // mask test inside one copy every tile pays its compares and selects per score).
      const auto softmax_rows = [&](auto masked) {
#pragma unroll
        for (int mt = 0; mt < C::kRowTiles; ++mt) {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            float mx = -__int_as_float(0x7f800000);
#pragma unroll
            for (int nt = 0; nt < C::kSTiles; ++nt) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                // The maximum over the raw score (p.scale_log2 > 0: the host validates scale),
                // the scale joining the exp2's FFMA below: one multiply per score fewer
                // (FlashAttention-2's order, as wgmma_fwd_steps.cuh).
                float x = s[mt][nt][half * 2 + e];
                if constexpr (decltype(masked)::value) {
                  const int row = warp_row0 + mt * 16 + lane / 4 + half * 8;
                  const int c = nt * 8 + 2 * (lane % 4) + e;
                  const bool visible =
                      n0 + c < seqlen_k && (!C::Mask::kCausal || n0 + c <= row + diag);
                  if (!visible) x = -__int_as_float(0x7f800000);
                }
                s[mt][nt][half * 2 + e] = x;
                mx = fmaxf(mx, x);  // FMNMX; `x > mx ? x : mx` is a compare + select
              }
            }
            for (int mask = 1; mask <= 2; mask <<= 1) {
              const float other = __shfl_xor_sync(0xffffffffu, mx, mask);
              mx = fmaxf(mx, other);
            }
            mx = fmaxf(row_max[mt][half], mx * p.scale_log2);
            // A row with nothing visible yet keeps max = -inf; subtract 0 then so exp2 gives 0.
            const float base = mx == -__int_as_float(0x7f800000) ? 0.f : mx;
            const float correction = dev::exp2_approx(row_max[mt][half] - base);
            row_max[mt][half] = mx;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < C::kSTiles; ++nt) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const float x = s[mt][nt][half * 2 + e];
                const float pe = dev::exp2_approx(fmaf(x, p.scale_log2, -base));
                s[mt][nt][half * 2 + e] = pe;
                sum += pe;
              }
            }
            row_sum[mt][half] = row_sum[mt][half] * correction + sum;
            // Unconditional: skipping it where the correction is 1 (as wgmma_fwd_steps.cuh's
            // rescale_o does) measured slower here (perf-notes v12).
#pragma unroll
            for (int nt = 0; nt < C::kOTiles; ++nt) {
              o_acc[mt][nt][half * 2 + 0] *= correction;
              o_acc[mt][nt][half * 2 + 1] *= correction;
            }
          }
        }
      };
      if (needs_mask) {
        softmax_rows(dev::BoolConstant<true>{});
      } else {
        softmax_rows(dev::BoolConstant<false>{});
      }

      // O += P V: the S accumulators of two n8 tiles are exactly one k16 A fragment.
#pragma unroll
      for (int kk = 0; kk < C::kPvSteps; ++kk) {
        u32 pa[C::kRowTiles][4];
#pragma unroll
        for (int mt = 0; mt < C::kRowTiles; ++mt) {
          pa[mt][0] = E::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = E::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = E::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = E::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int nd = 0; nd < C::kOTiles; nd += 2) {
          u32 bv[4];
          const int vrow = kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int vcol = nd * 8 + 8 * (lane / 16);
          dev::ldmatrix_x4_trans(bv, v_smem + 2 * VTile::offset(vrow, vcol));
#pragma unroll
          for (int mt = 0; mt < C::kRowTiles; ++mt) {
            E::mma(o_acc[mt][nd], pa[mt], bv[0], bv[1]);
            E::mma(o_acc[mt][nd + 1], pa[mt], bv[2], bv[3]);
          }
        }
      }
    }
    dev::cp_async_wait<0>();
    __syncthreads();  // every warp is done reading Q from shared memory; O reuses it

    // Normalise, stage O through shared memory, and write it with 16-byte coalesced stores.
#pragma unroll
    for (int mt = 0; mt < C::kRowTiles; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float sum = row_sum[mt][half];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;  // no visible key: O = 0, never NaN
        const int local_row = warp * (C::kRowTiles * 16) + mt * 16 + lane / 4 + half * 8;
#pragma unroll
        for (int nt = 0; nt < C::kOTiles; ++nt) {
          const int col = nt * 8 + 2 * (lane % 4);
          *reinterpret_cast<u32*>(smem + 2 * OTile::offset(local_row, col)) =
              E::pack(o_acc[mt][nt][half * 2] * inv, o_acc[mt][nt][half * 2 + 1] * inv);
        }
        const int row = m0 + local_row;
        if (p.lse != nullptr && lane % 4 == 0 && row < seqlen_q) {
          const float lse = sum > 0.f ? (row_max[mt][half] + dev::log2_approx(sum)) * kLn2
                                      : -__int_as_float(0x7f800000);
          p.lse[(static_cast<index_t>(b) * p.heads + h) * seqlen_q + row] = lse;
        }
      }
    }
    __syncthreads();
    constexpr int kOUnits = C::kHeadDim / 8;
    char* o_base = static_cast<char*>(p.o) + 2 * (b * p.o_batch_stride + h * p.o_head_stride);
    for (int idx = tid; idx < C::kBlockM * kOUnits; idx += C::kThreads) {
      const int row = idx / kOUnits;
      const int col = (idx % kOUnits) * 8;
      if (m0 + row < seqlen_q) {
        const uint4 v = *reinterpret_cast<const uint4*>(smem + 2 * OTile::offset(row, col));
        *reinterpret_cast<uint4*>(o_base + 2 * ((m0 + row) * p.o_row_stride + col)) = v;
      }
    }
  }

};

/// Kernel body; the generated shim supplies Config and the extern "C" entry point.
template <class Config>
__device__ __forceinline__ void fwd(const FwdParams& p) {
  extern __shared__ __align__(128) char smem[];
  // Heavy rows first: with a causal mask the last query blocks see the most keys, so grid row 0
  // takes the last block and the tail of the grid is made of the cheapest blocks.
  const int m_block = p.num_m_blocks - 1 - static_cast<int>(blockIdx.y);
  const int bh = static_cast<int>(blockIdx.x);
  FwdKernel<Config> k{p, smem};
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32;
  k.lane = k.tid % 32;
  k.b = bh / p.heads;
  k.h = bh % p.heads;
  k.m0 = m_block * Config::kBlockM;
  k.q_std_off = k.b * p.q_std.batch_stride + k.h * p.q_std.head_stride;
  k.k_low_off = k.b * p.k_low.batch_stride + k.h * p.k_low.head_stride;
  k.k_std_off = k.b * p.k_std.batch_stride + k.h * p.k_std.head_stride;
  k.q_low_off = k.b * p.q_low.batch_stride + k.h * p.q_low.head_stride;
  k.v_off = k.b * p.v.batch_stride + k.h * p.v.head_stride;
  k.run();
}

}  // namespace rajit::attn
