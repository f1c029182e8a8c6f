/// The RA backward kernels: dK/dV (+ atomic dQ), deterministic dQ, and the small row/head kernels.
// FlashAttention-2's backward split, with RA's folded operands formed in shared memory only:
//   dkv: one CTA per (b*h, key block); the key tile is held *gated*, kg = [w_std k_std | w_rec
//        q_low], so the streamed query tile qr = [q_std | k_low] needs no per-tile gate pass
//        (S = scale * qr . kg is the forward's product). Each warp owns 16 key rows and computes
//        S^T and dP^T with keys as MMA rows, so P^T and dS^T feed dV += P^T dO and
//        dKr += dS^T qr straight from registers. dk_std = scale * w_std * dKr[:Ds] and
//        dq_low = scale * w_rec * dKr[Ds:]: the gates are applied once in the epilogue. Column
//        sums of dS (the bias gradient) and the dw_std / dw_rec partial sums are reduced in
//        registers in a fixed order, so they are deterministic. With kAtomicDq, dS^T is staged
//        in shared memory and Gq += dS kg is added into an fp32 workspace with red.global.add.
//   dq:  deterministic mode: one CTA per (b*h, query block), the forward's structure (gated query
//        tile resident, key tiles streamed), recomputing S and dP; no atomics anywhere.
//   aux: Delta = rowsum(dO * O) and LSE * log2(e); the gq -> dq_std/dk_low conversion; per-head
//        sums for dw_* and the bias gradient.
#pragma once
#include "attention/bwd_limits.cuh"
#include "attention/bwd_params.cuh"
#include "attention/policies.cuh"
#include "attention/tile_copy.cuh"
#include "common/ptx.cuh"

namespace rajit::attn {

namespace bwd_detail {

inline constexpr float kLog2e = 1.4426950408889634f;
__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ void red_add(float* addr, float v) {
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(addr), "f"(v) : "memory");
}

// addr[0] += a, addr[1] += b (addr 8-byte aligned): one vector reduction on sm_90 (PTX 8.1's
// red.global.add.v2.f32), which halves the L2 atomic operations of the dQ accumulation.
__device__ __forceinline__ void red_add2(float* addr, float a, float b) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(addr), "f"(a), "f"(b) : "memory");
#else
  red_add(addr, a);
  red_add(addr + 1, b);
#endif
}

// stmatrix (sm_90): four 8x8 b16 matrices; register i is matrix i in the MMA accumulator layout
// (thread t: row t / 4, columns 2 (t % 4) and + 1); thread t supplies the row address of matrix
// t / 8. Here rather than in common/ptx.cuh: only the dK/dV kernels store fragments to shared
// memory.
#if __CUDA_ARCH__ >= 900
__device__ __forceinline__ void stmatrix_x4(dev::u32 addr, dev::u32 r0, dev::u32 r1, dev::u32 r2,
                                            dev::u32 r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
               "r"(r0), "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}
// The same with .trans: matrix i is stored transposed, so stored row k holds the fragment's
// column k (thread t still supplies the address of stored row t % 8 of matrix t / 8).
__device__ __forceinline__ void stmatrix_x4_trans(dev::u32 addr, const dev::u32 (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(
                   addr),
               "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
}
#endif

__device__ __forceinline__ float warp_sum(float x) {  // fixed butterfly: deterministic
  for (int m = 16; m >= 1; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
  return x;
}

// Address of element (row, col) of a gradient view for (b, h), as a T* (u32: two elements).
template <class T>
__device__ __forceinline__ T* elem(const OutOperand2d& op, int b, int h, index_t row, int col) {
  return reinterpret_cast<T*>(static_cast<dev::u16*>(op.ptr) + b * op.batch_stride +
                              h * op.head_stride + row * op.row_stride + col);
}

}  // namespace bwd_detail

// The first query block of a causal dK/dV key block starting at key n0 (0 without a mask): the
// block of the first query that sees any of its keys, clamped to m_blocks.
template <class C>
__device__ __forceinline__ int dkv_first_query_block(const BwdParams& p, int n0, int m_blocks) {
  if constexpr (!C::Mask::kCausal) return 0;
  const int first_row = n0 - (p.seqlen_k - p.seqlen_q);  // the first query that sees key n0
  const int m_first = first_row > 0 ? first_row / C::kBlockM : 0;
  return m_first < m_blocks ? m_first : m_blocks;
}

// This thread's two key rows' bias (rows key_row0 and + 8 of the block at n0), scaled by
// w_disc * log2(e) for the base-2 exponent; 0 without a bias or past the last key.
template <class C>
__device__ __forceinline__ void dkv_bias_rows(const BwdParams& p, int b, int h, int n0,
                                              int key_row0, float (&bias_row)[2]) {
  bias_row[0] = bias_row[1] = 0.f;
  if constexpr (C::Bias::kHasBias) {
    const float bias_log2 = (p.w_disc ? p.w_disc[h] : 1.f) * bwd_detail::kLog2e;
    const float* bias = p.bias + b * p.bias_batch_stride + h * p.bias_head_stride;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = n0 + key_row0 + 8 * half;
      bias_row[half] = j < p.seqlen_k ? bias[j] * bias_log2 : 0.f;
    }
  }
}

// One warp's 16 key rows of the dK/dV kernels (mma.sync and wgmma both hold S^T in the m16n8
// accumulator layout). P^T = exp2(S^T scale log2e + bias - LSE log2e) in place of S^T; with kDoK
// also dS^T = P^T (dP^T - Delta) in place of dP^T, summed into col_sum. Elementwise only (no
// shuffle, ldmatrix or MMA), so warps may take different copies. Masked: query column m0 + c0 + k is
// visible to this thread's key row of `half` iff first[half] <= k <= last, with c0 this
// thread's first column; first folds the causal diagonal and the end of the keys, last the end
// of the queries, so the test is two compares against compile-time k. kSumColumns = false leaves
// col_sum alone (the wgmma kernel sums dS^T's rows on the tensor cores instead).
template <class C, bool kMasked, bool kDoK, int kMTiles, bool kSumColumns = true>
__device__ __forceinline__ void dkv_probs_and_grads(const BwdParams& p, int n0, int lane,
                                                    float (&st)[kMTiles][4],
                                                    float (&dpt)[kDoK ? kMTiles : 1][4],
                                                    float (&col_sum)[2],
                                                    const float (&bias_row)[2], const float* lse_s,
                                                    const float* delta_s, int m0, int key_row0) {
  using namespace bwd_detail;
  int first[2] = {0, 0}, last = 0;
  if constexpr (kMasked) {
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int c0 = m0 + 2 * (lane % 4);
    last = seqlen_q - 1 - c0;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = n0 + key_row0 + 8 * half;
      // Key j is visible to queries i >= j - diag (causal); a key past the end to none.
      const int first_query =
          j >= seqlen_k ? seqlen_q : C::Mask::kCausal ? j - (seqlen_k - seqlen_q) : 0;
      first[half] = first_query - c0;
    }
  }
#pragma unroll
  for (int nt = 0; nt < kMTiles; ++nt) {
    const float2 lse2 = *reinterpret_cast<const float2*>(lse_s + nt * 8 + 2 * (lane % 4));
    float2 del2 = make_float2(0.f, 0.f);
    if constexpr (kDoK) {
      del2 = *reinterpret_cast<const float2*>(delta_s + nt * 8 + 2 * (lane % 4));
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float x =
            fmaf(st[nt][half * 2 + e], p.scale_log2, bias_row[half]) - (e ? lse2.y : lse2.x);
        if constexpr (kMasked) {
          const int k = nt * 8 + e;
          if (k < first[half] || k > last) x = neg_inf();
        }
        const float pe = dev::exp2_approx(x);
        st[nt][half * 2 + e] = pe;
        if constexpr (kDoK) {
          const float ds = pe * (dpt[nt][half * 2 + e] - (e ? del2.y : del2.x));
          dpt[nt][half * 2 + e] = ds;
          if constexpr (kSumColumns) col_sum[half] += ds;
        }
      }
    }
  }
}

// The dK/dV kernels' epilogue for one warp's 16 key rows (accumulators in the m16n8 layout): dV,
// dk_std, dq_low straight from the accumulators; column sums; dw partials. col_sum holds this
// lane's partial sums (reduced over the quad here) or, with kColSumsComplete, the whole sums.
template <class C, bool kDoV, bool kDoK, int kVTiles, int kKTiles, bool kColSumsComplete = false>
__device__ __forceinline__ void dkv_epilogue(const BwdParams& p, int b, int h, int bh, int n0,
                                             int lane, int key_row0, float w_std, float w_rec,
                                             index_t k_std_off, index_t q_low_off,
                                             float (&col_sum)[2],
                                             const float (&dv_acc)[kDoV ? kVTiles : 1][4],
                                             const float (&dk_acc)[kDoK ? kKTiles : 1][4],
                                             float (&dw_part)[2]) {
  using namespace bwd_detail;
  using E = typename C::Element;
  const int seqlen_k = p.seqlen_k;
  const float dk_std_scale = p.scale * w_std, dq_low_scale = p.scale * w_rec;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int j = n0 + key_row0 + 8 * half;
    float cs = col_sum[half];
    if constexpr (!kColSumsComplete) {
      cs += __shfl_xor_sync(0xffffffffu, cs, 1);
      cs += __shfl_xor_sync(0xffffffffu, cs, 2);
    }
    if (j >= seqlen_k) continue;
    if constexpr (C::Bias::kHasBias && kDoK) {
      if (lane % 4 == 0) p.col_sums[static_cast<index_t>(bh) * seqlen_k + j] = cs;
    }
    if constexpr (kDoV) {
#pragma unroll
      for (int nd = 0; nd < kVTiles; ++nd) {
        const int c = nd * 8 + 2 * (lane % 4);
        *elem<dev::u32>(p.dv, b, h, j, c) = E::pack(dv_acc[nd][half * 2], dv_acc[nd][half * 2 + 1]);
      }
    }
    if constexpr (kDoK) {
#pragma unroll
      for (int nd = 0; nd < kKTiles; ++nd) {
        const int c = nd * 8 + 2 * (lane % 4);
        const float x0 = dk_acc[nd][half * 2], x1 = dk_acc[nd][half * 2 + 1];
        if (c < C::kDStd) {
          *elem<dev::u32>(p.dk_std, b, h, j, c) = E::pack(dk_std_scale * x0, dk_std_scale * x1);
          if (p.dw_partial != nullptr) {
            const dev::u32 raw = *reinterpret_cast<const dev::u32*>(
                static_cast<const dev::u16*>(p.k_std.ptr) + k_std_off + j * p.k_std.row_stride + c);
            dw_part[0] += x0 * E::lo(raw) + x1 * E::hi(raw);
          }
        } else if (c < C::kDqk) {
          *elem<dev::u32>(p.dq_low, b, h, j, c - C::kDStd) =
              E::pack(dq_low_scale * x0, dq_low_scale * x1);
          if (p.dw_partial != nullptr) {
            const dev::u32 raw = *reinterpret_cast<const dev::u32*>(
                static_cast<const dev::u16*>(p.q_low.ptr) + q_low_off + j * p.q_low.row_stride +
                c - C::kDStd);
            dw_part[1] += x0 * E::lo(raw) + x1 * E::hi(raw);
          }
        }
      }
    }
  }
}

// The dw_std / dw_rec partial sums of one key block, in a fixed order: warp butterfly, then the
// warps in order (deterministic).
template <int kWarps>
__device__ __forceinline__ void dkv_store_dw_partial(const BwdParams& p, int bh, int n_block,
                                                     int tid, const float (&dw_part)[2]) {
  using namespace bwd_detail;
  const int warp = tid / 32, lane = tid % 32;
  if (p.dw_partial != nullptr) {
    __shared__ float warp_parts[kWarps][2];
    const float s0 = warp_sum(dw_part[0]), s1 = warp_sum(dw_part[1]);
    if (lane == 0) {
      warp_parts[warp][0] = s0;
      warp_parts[warp][1] = s1;
    }
    __syncthreads();
    if (tid == 0) {
      float t0 = 0.f, t1 = 0.f;
      for (int w = 0; w < kWarps; ++w) {
        t0 += warp_parts[w][0];
        t1 += warp_parts[w][1];
      }
      float* out = p.dw_partial + 2 * (static_cast<index_t>(bh) * p.num_n_blocks + n_block);
      out[0] = t0;
      out[1] = t1;
    }
  }
}

template <class Element_, int kDStd_, int kR_, int kHeadDim_, int kBlockM_, int kBlockN_,
          int kWarps_, int kStages_, class Mask_, class Bias_, bool kAtomicDq_>
struct BwdConfig {
  using Element = Element_;
  using Mask = Mask_;
  using Bias = Bias_;
  static constexpr int kDStd = kDStd_, kR = kR_, kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  static constexpr bool kAtomicDq = kAtomicDq_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kDqk = kDStd + kR;
  static constexpr int kDqkPad = padded_contraction(kDStd, kR);
  static constexpr int kCopyElems = copy_elems(kDStd, kR);
  static_assert(check_bwd_spec(kDStd, kR, kHeadDim) == 0, "invalid RA spec for the backward");
};

// ---- dK / dV (and atomic dQ) -----------------------------------------------------------------
template <class C>
struct BwdDkvKernel {
  using E = typename C::Element;
  static_assert(check_bwd_dkv_tile(C::kDStd, C::kR, C::kHeadDim, C::kBlockM, C::kBlockN,
                                   C::kWarps, C::kStages, C::kAtomicDq, 1 << 30) == 0,
                "invalid dK/dV tile");
  using KTile = PaddedTile<C::kBlockN, C::kDqkPad>;   // (kBlockN, kDqkPad) gated keys kg
  using VTile = PaddedTile<C::kBlockN, C::kHeadDim>;  // (kBlockN, kHeadDim)
  using QTile = PaddedTile<C::kBlockM, C::kDqkPad>;   // (kBlockM, kDqkPad) raw queries qr
  using OTile = PaddedTile<C::kBlockM, C::kHeadDim>;  // (kBlockM, kHeadDim) dO
  using STile = PaddedTile<C::kBlockN, C::kBlockM>;   // (kBlockN, kBlockM) dS^T
  static constexpr int kStageBytes = QTile::kBytes + OTile::kBytes + C::kBlockM * 8;
  static constexpr int kStagesOffset = KTile::kBytes + VTile::kBytes;
  static constexpr int kDsOffset = kStagesOffset + C::kStages * kStageBytes;
  static constexpr int kSharedBytes = kDsOffset + (C::kAtomicDq ? STile::kBytes : 0);
  static_assert(kSharedBytes == bwd_dkv_shared_bytes(C::kDStd, C::kR, C::kHeadDim, C::kBlockM,
                                                     C::kBlockN, C::kStages, C::kAtomicDq),
                "bwd_limits.cuh and the kernel disagree on the shared-memory layout");
  static constexpr int kMTiles = C::kBlockM / 8;     // n8 tiles of S^T (query columns)
  static constexpr int kVTiles = C::kHeadDim / 8;    // n8 tiles of dV
  static constexpr int kKTiles = C::kDqkPad / 8;     // n8 tiles of dK
  static constexpr int kQkSteps = C::kDqkPad / 16;
  static constexpr int kDvSteps = C::kHeadDim / 16;
  static constexpr int kMSteps = C::kBlockM / 16;

  const BwdParams& p;
  char* smem;
  int tid, warp, lane, b, h, bh, n_block, n0;
  index_t q_std_off, k_low_off, k_std_off, q_low_off, v_off, o_off;

  __device__ __forceinline__ char* stage_base(int stage) const {
    return smem + kStagesOffset + stage * kStageBytes;
  }

  // The streamed query tile, dO, lse and delta of block m_block into stage `stage`: whole tiles
  // copy without per-row checks (load_rows), and nothing here is held across iterations.
  __device__ __forceinline__ void load_query_block(int m_block, int stage) const {
    const int m0 = m_block * C::kBlockM;
    const dev::u32 base = dev::smem_addr(smem) + kStagesOffset + stage * kStageBytes;
    load_rows<QTile, C::kBlockM, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        base, p.q_std, q_std_off, p.k_low, k_low_off, m0, p.seqlen_q, tid);
    load_rows<OTile, C::kBlockM, C::kHeadDim, 0, 8, C::kThreads>(
        base + QTile::kBytes, p.d_o, o_off, p.d_o, o_off, m0, p.seqlen_q, tid);
    const index_t row_base = static_cast<index_t>(bh) * p.seqlen_q;
    load_floats_wide<C::kBlockM, C::kThreads>(base + QTile::kBytes + OTile::kBytes,
                                              p.lse_log2 + row_base, m0, p.seqlen_q, tid);
    load_floats_wide<C::kBlockM, C::kThreads>(base + QTile::kBytes + OTile::kBytes + 4 * C::kBlockM,
                                              p.delta + row_base, m0, p.seqlen_q, tid);
  }

  // Warp roles. Unsplit (warps == block_n / 16): each warp owns 16 key rows and does everything.
  // Split (warps == block_n / 8): two warps share 16 key rows; the V warp computes S^T and dV, the
  // K warp S^T, dP^T, dK, the column sums and dS^T. S^T is computed twice (6 MMA products instead
  // of 5), but each warp holds only half the accumulators, so wide heads get 64-query blocks.
  static constexpr int kRoleBoth = 0, kRoleV = 1, kRoleK = 2;
  static constexpr bool kSplit = C::kWarps * 8 == C::kBlockN;
  static constexpr int kRowWarps = C::kBlockN / 16;

  __device__ void run() {
    using namespace bwd_detail;
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int m_blocks = (seqlen_q + C::kBlockM - 1) / C::kBlockM;
    const int m_first = dkv_first_query_block<C>(p, n0, m_blocks);
    const int n_iters = m_blocks - m_first;

    // Resident: the key tile (gated below) and V; then the first query block.
    load_folded<KTile, C::kBlockN, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        smem, p.k_std, k_std_off, p.q_low, q_low_off, n0, seqlen_k, tid);
    zero_pad<KTile, C::kBlockN, C::kDqk, C::kDqkPad, C::kThreads>(smem, tid);
    load_plain<VTile, C::kBlockN, C::kHeadDim, C::kThreads>(smem + KTile::kBytes, p.v, v_off, n0,
                                                            seqlen_k, tid);
    for (int s = 0; s < C::kStages; ++s) {
      zero_pad<QTile, C::kBlockM, C::kDqk, C::kDqkPad, C::kThreads>(stage_base(s), tid);
    }
    dev::cp_async_commit();
    if (n_iters > 0) load_query_block(m_first, 0);
    dev::cp_async_commit();
    dev::cp_async_wait<1>();  // the key/V group has landed
    __syncthreads();
    const float w_std = p.w_std ? p.w_std[h] : 1.f;
    const float w_rec = p.w_rec ? p.w_rec[h] : 1.f;
    scale_by_gates<E, KTile, C::kBlockN, C::kDStd, C::kR, C::kThreads>(smem, w_std, w_rec, tid);
    __syncthreads();

    // Both roles run the same sequence of __syncthreads(), so their loops may be separate code
    // (and so keep disjoint accumulators live).
    float dw_part[2] = {0.f, 0.f};  // sum_j k_std_j . dKr_j[:Ds] and q_low_j . dKr_j[Ds:]
    if constexpr (kSplit) {
      if (warp < kRowWarps) {
        main_loop<kRoleV>(m_first, n_iters, w_std, w_rec, dw_part);
      } else {
        main_loop<kRoleK>(m_first, n_iters, w_std, w_rec, dw_part);
      }
    } else {
      main_loop<kRoleBoth>(m_first, n_iters, w_std, w_rec, dw_part);
    }
    dev::cp_async_wait<0>();

    dkv_store_dw_partial<C::kWarps>(p, bh, n_block, tid, dw_part);
  }

  template <int kRole>
  __device__ __forceinline__ void main_loop(int m_first, int n_iters, float w_std, float w_rec,
                                            float (&dw_part)[2]) const {
    using namespace bwd_detail;
    constexpr bool kDoV = kRole != kRoleK, kDoK = kRole != kRoleV;
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int diag = seqlen_k - seqlen_q;
    const int row_warp = kSplit ? warp % kRowWarps : warp;
    const int key_row0 = 16 * row_warp + lane / 4;  // local; the second row is +8

    // This thread's two key rows: bias (pre-scaled to base 2) and column-sum accumulators.
    float bias_row[2];
    dkv_bias_rows<C>(p, b, h, n0, key_row0, bias_row);
    float col_sum[2] = {0.f, 0.f};
    float dv_acc[kDoV ? kVTiles : 1][4], dk_acc[kDoK ? kKTiles : 1][4];
#pragma unroll
    for (int t = 0; t < (kDoV ? kVTiles : 1); ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) dv_acc[t][e] = 0.f;
#pragma unroll
    for (int t = 0; t < (kDoK ? kKTiles : 1); ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk_acc[t][e] = 0.f;

    const dev::u32 k_smem = dev::smem_addr(smem);
    const dev::u32 v_smem = dev::smem_addr(smem + KTile::kBytes);

    for (int it = 0; it < n_iters; ++it) {
      const int m_block = m_first + it;
      if (it + 1 < n_iters) load_query_block(m_block + 1, (it + 1) % C::kStages);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
      __syncthreads();  // this block's query tile, dO, lse and delta have landed
      const int m0 = m_block * C::kBlockM;
      char* sbase = stage_base(it % C::kStages);
      const dev::u32 q_smem = dev::smem_addr(sbase);
      const dev::u32 do_smem = dev::smem_addr(sbase + QTile::kBytes);
      const float* lse_s = reinterpret_cast<const float*>(sbase + QTile::kBytes + OTile::kBytes);
      const float* delta_s = lse_s + C::kBlockM;

      // S^T = kg qr^T and dP^T = V dO^T for this warp's 16 key rows.   // (kMTiles, 4) fp32 each
      float st[kMTiles][4], dpt[kDoK ? kMTiles : 1][4];
#pragma unroll
      for (int t = 0; t < kMTiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[t][e] = 0.f;
#pragma unroll
      for (int t = 0; t < (kDoK ? kMTiles : 1); ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) dpt[t][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kQkSteps; ++ks) {
        dev::u32 a[4];
        dev::ldmatrix_x4(a, k_smem + 2 * KTile::offset(16 * row_warp + lane % 16, ks * 16 + (lane / 16) * 8));
#pragma unroll
        for (int nt = 0; nt < kMTiles; nt += 2) {
          dev::u32 bq[4];
          dev::ldmatrix_x4(bq, q_smem + 2 * QTile::offset(nt * 8 + lane % 8 + 8 * (lane / 16),
                                                          ks * 16 + 8 * ((lane / 8) % 2)));
          E::mma(st[nt], a, bq[0], bq[1]);
          E::mma(st[nt + 1], a, bq[2], bq[3]);
        }
      }
      if constexpr (kDoK) {
#pragma unroll
        for (int ks = 0; ks < kDvSteps; ++ks) {
          dev::u32 a[4];
          dev::ldmatrix_x4(a, v_smem + 2 * VTile::offset(16 * row_warp + lane % 16, ks * 16 + (lane / 16) * 8));
#pragma unroll
          for (int nt = 0; nt < kMTiles; nt += 2) {
            dev::u32 bo[4];
            dev::ldmatrix_x4(bo, do_smem + 2 * OTile::offset(nt * 8 + lane % 8 + 8 * (lane / 16),
                                                             ks * 16 + 8 * ((lane / 8) % 2)));
            E::mma(dpt[nt], a, bo[0], bo[1]);
            E::mma(dpt[nt + 1], a, bo[2], bo[3]);
          }
        }
      }

      // P^T and dS^T. A separate copy per case: with the mask test inside one copy, the compiler
      // if-converts it and every tile pays the compares and selects. The test is per warp (its 16
      // key rows), so only the warps that cross the diagonal or an end take the masked copy.
      const int warp_key0 = n0 + 16 * row_warp;
      bool masked = m0 + C::kBlockM > seqlen_q || warp_key0 + 16 > seqlen_k;
      if constexpr (C::Mask::kCausal) masked = masked || warp_key0 + 15 > m0 + diag;
      if (masked) {
        dkv_probs_and_grads<C, true, kDoK, kMTiles>(p, n0, lane, st, dpt, col_sum, bias_row,
                                                    lse_s, delta_s, m0, key_row0);
      } else {
        dkv_probs_and_grads<C, false, kDoK, kMTiles>(p, n0, lane, st, dpt, col_sum, bias_row,
                                                    lse_s, delta_s, m0, key_row0);
      }

      // dV += P^T dO and dKr += dS^T qr: the accumulators of two n8 tiles are one k16 A fragment.
#pragma unroll
      for (int kk = 0; kk < kMSteps; ++kk) {
        const int brow = kk * 16 + lane % 8 + 8 * ((lane / 8) % 2);
        if constexpr (kDoV) {
          dev::u32 pa[4];
          pa[0] = E::pack(st[2 * kk][0], st[2 * kk][1]);
          pa[1] = E::pack(st[2 * kk][2], st[2 * kk][3]);
          pa[2] = E::pack(st[2 * kk + 1][0], st[2 * kk + 1][1]);
          pa[3] = E::pack(st[2 * kk + 1][2], st[2 * kk + 1][3]);
#pragma unroll
          for (int nd = 0; nd < kVTiles; nd += 2) {
            dev::u32 bv[4];
            dev::ldmatrix_x4_trans(bv, do_smem + 2 * OTile::offset(brow, nd * 8 + 8 * (lane / 16)));
            E::mma(dv_acc[nd], pa, bv[0], bv[1]);
            E::mma(dv_acc[nd + 1], pa, bv[2], bv[3]);
          }
        }
        if constexpr (kDoK) {
          dev::u32 da[4];
          da[0] = E::pack(dpt[2 * kk][0], dpt[2 * kk][1]);
          da[1] = E::pack(dpt[2 * kk][2], dpt[2 * kk][3]);
          da[2] = E::pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
          da[3] = E::pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
          for (int nd = 0; nd < kKTiles; nd += 2) {
            dev::u32 bq[4];
            dev::ldmatrix_x4_trans(bq, q_smem + 2 * QTile::offset(brow, nd * 8 + 8 * (lane / 16)));
            E::mma(dk_acc[nd], da, bq[0], bq[1]);
            E::mma(dk_acc[nd + 1], da, bq[2], bq[3]);
          }
        }
      }

      if constexpr (C::kAtomicDq) {
        // Stage dS^T, then Gq[m0 + rows] += dS kg: warp w takes query row tile w % kMSteps and
        // every kGroups-th pair of n8 column tiles.
        char* ds_base = smem + kDsOffset;
        if constexpr (kDoK) {
#if __CUDA_ARCH__ >= 900
          // One stmatrix per two n8 tiles (matrix i: tile nt + i / 2, key rows + 8 (i % 2)) instead
          // of four 4-byte stores.
          const int frag = lane / 8;
          const dev::u32 row_addr =
              dev::smem_addr(ds_base) +
              2 * STile::offset(16 * row_warp + 8 * (frag % 2) + lane % 8, 8 * (frag / 2));
#pragma unroll
          for (int nt = 0; nt < kMTiles; nt += 2) {
            stmatrix_x4(row_addr + 2 * nt * 8, E::pack(dpt[nt][0], dpt[nt][1]),
                        E::pack(dpt[nt][2], dpt[nt][3]), E::pack(dpt[nt + 1][0], dpt[nt + 1][1]),
                        E::pack(dpt[nt + 1][2], dpt[nt + 1][3]));
          }
#else
#pragma unroll
          for (int nt = 0; nt < kMTiles; ++nt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              *reinterpret_cast<dev::u32*>(
                  ds_base + 2 * STile::offset(key_row0 + 8 * half, nt * 8 + 2 * (lane % 4))) =
                  E::pack(dpt[nt][half * 2], dpt[nt][half * 2 + 1]);
            }
#endif
        }
        __syncthreads();
        constexpr int kGroups = C::kWarps / kMSteps;
        static_assert(C::kWarps % kMSteps == 0, "every warp takes a whole query row tile");
        const int rt = warp % kMSteps, group = warp / kMSteps;
        const dev::u32 ds_smem = dev::smem_addr(ds_base);
        // Column pairs group, group + kGroups, ...: each reduction address is this thread's first
        // one plus a constant, advanced once per pair. Not unrolled: two pairs in flight spill.
        const int i0 = m0 + rt * 16 + lane / 4;  // this thread's first query row; the second is +8
        float* gq = p.gq + (static_cast<index_t>(bh) * seqlen_q + i0) * C::kDqk + group * 16 +
                    2 * (lane % 4);
#pragma unroll 1
        for (int np = group; np < C::kDqkPad / 16; np += kGroups, gq += kGroups * 16) {
          float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
          for (int ks = 0; ks < C::kBlockN / 16; ++ks) {
            dev::u32 a[4], bk[4];
            dev::ldmatrix_x4_trans(a, ds_smem + 2 * STile::offset(ks * 16 + lane % 8 + 8 * (lane / 16),
                                                                  rt * 16 + 8 * ((lane / 8) % 2)));
            dev::ldmatrix_x4_trans(bk, k_smem + 2 * KTile::offset(ks * 16 + lane % 8 + 8 * ((lane / 8) % 2),
                                                                  np * 16 + 8 * (lane / 16)));
            E::mma(acc[0], a, bk[0], bk[1]);
            E::mma(acc[1], a, bk[2], bk[3]);
          }
#pragma unroll
          for (int t = 0; t < 2; ++t)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int c = np * 16 + 8 * t + 2 * (lane % 4);
              // kDqk % 4 == 0: c and c + 1 are both valid (and every c is when nothing is padded).
              if (i0 + 8 * half < seqlen_q && (C::kDqk == C::kDqkPad || c < C::kDqk)) {
                red_add2(gq + 8 * half * C::kDqk + 8 * t, acc[t][half * 2], acc[t][half * 2 + 1]);
              }
            }
        }
      }
      __syncthreads();  // every warp is done with this stage (and dS^T) before they are refilled
    }

    dkv_epilogue<C, kDoV, kDoK, kVTiles, kKTiles>(p, b, h, bh, n0, lane, key_row0, w_std, w_rec,
                                                  k_std_off, q_low_off, col_sum, dv_acc, dk_acc,
                                                  dw_part);
  }
};

/// dK/dV kernel body; grid (batch * heads, key blocks). Key block 0 sees the most queries under a
/// causal mask, so the heavy CTAs are scheduled first.
template <class Config>
__device__ __forceinline__ void bwd_dkv(const BwdParams& p) {
  extern __shared__ __align__(128) char smem[];
  BwdDkvKernel<Config> k{p, smem};
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32;
  k.lane = k.tid % 32;
  k.bh = static_cast<int>(blockIdx.x);
  k.b = k.bh / p.heads;
  k.h = k.bh % p.heads;
  k.n_block = static_cast<int>(blockIdx.y);
  k.n0 = k.n_block * Config::kBlockN;
  k.q_std_off = k.b * p.q_std.batch_stride + k.h * p.q_std.head_stride;
  k.k_low_off = k.b * p.k_low.batch_stride + k.h * p.k_low.head_stride;
  k.k_std_off = k.b * p.k_std.batch_stride + k.h * p.k_std.head_stride;
  k.q_low_off = k.b * p.q_low.batch_stride + k.h * p.q_low.head_stride;
  k.v_off = k.b * p.v.batch_stride + k.h * p.v.head_stride;
  k.o_off = k.b * p.d_o.batch_stride + k.h * p.d_o.head_stride;
  k.run();
}

// ---- deterministic dQ ------------------------------------------------------------------------
template <class C>
struct BwdDqKernel {
  using E = typename C::Element;
  static_assert(check_bwd_dq_tile(C::kDStd, C::kR, C::kHeadDim, C::kBlockM, C::kBlockN, C::kWarps,
                                  C::kStages, 1 << 30) == 0,
                "invalid dQ tile");
  using QTile = PaddedTile<C::kBlockM, C::kDqkPad>;   // (kBlockM, kDqkPad) gated queries qf
  using OTile = PaddedTile<C::kBlockM, C::kHeadDim>;  // (kBlockM, kHeadDim) dO
  using KTile = PaddedTile<C::kBlockN, C::kDqkPad>;   // (kBlockN, kDqkPad) raw keys kf
  using VTile = PaddedTile<C::kBlockN, C::kHeadDim>;  // (kBlockN, kHeadDim)
  static constexpr int kStagesOffset = QTile::kBytes + OTile::kBytes;
  static constexpr int kStageBytes = KTile::kBytes + VTile::kBytes + C::kBlockN * 4;
  static_assert(kStagesOffset + C::kStages * kStageBytes ==
                    bwd_dq_shared_bytes(C::kDStd, C::kR, C::kHeadDim, C::kBlockM, C::kBlockN,
                                        C::kStages),
                "bwd_limits.cuh and the kernel disagree on the shared-memory layout");
  static constexpr int kNTiles = C::kBlockN / 8;
  static constexpr int kGTiles = C::kDqkPad / 8;
  static constexpr int kQkSteps = C::kDqkPad / 16;
  static constexpr int kDvSteps = C::kHeadDim / 16;

  const BwdParams& p;
  char* smem;
  int tid, warp, lane, b, h, bh, m0;
  index_t q_std_off, k_low_off, k_std_off, q_low_off, v_off, o_off;

  __device__ __forceinline__ char* stage_base(int stage) const {
    return smem + kStagesOffset + stage * kStageBytes;
  }

  // The streamed key tile, V and bias of key tile `tile` into stage `stage` (see
  // BwdDkvKernel::load_query_block).
  __device__ __forceinline__ void load_key_block(int tile, int stage) const {
    const int n0 = tile * C::kBlockN;
    const dev::u32 base = dev::smem_addr(smem) + kStagesOffset + stage * kStageBytes;
    load_rows<KTile, C::kBlockN, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        base, p.k_std, k_std_off, p.q_low, q_low_off, n0, p.seqlen_k, tid);
    load_rows<VTile, C::kBlockN, C::kHeadDim, 0, 8, C::kThreads>(
        base + KTile::kBytes, p.v, v_off, p.v, v_off, n0, p.seqlen_k, tid);
    if constexpr (C::Bias::kHasBias) {
      load_floats_wide<C::kBlockN, C::kThreads>(
          base + KTile::kBytes + VTile::kBytes,
          p.bias + b * p.bias_batch_stride + h * p.bias_head_stride, n0, p.seqlen_k, tid);
    }
  }

  // dS = exp2(S scale log2e + bias - LSE log2e) (dP - Delta) in place of S. Elementwise only, so
  // warps may take different copies. Masked: key column n0 + c0 + k is visible to this thread's
  // row of `half` iff k <= last[half], with c0 this thread's first column; last folds the causal
  // diagonal, the end of the keys and the end of the queries into one compare.
  template <bool kMasked>
  __device__ __forceinline__ void probs_to_grads(float (&s)[kNTiles][4],
                                                 const float (&dp)[kNTiles][4],
                                                 const float* bias_s, float bias_log2,
                                                 const float (&lse_row)[2],
                                                 const float (&delta_row)[2], int n0,
                                                 int local_row0) const {
    using namespace bwd_detail;
    int last[2] = {0, 0};
    if constexpr (kMasked) {
      const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
      const int c0 = n0 + 2 * (lane % 4);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = m0 + local_row0 + 8 * half;
        int last_key = seqlen_k - 1;
        if constexpr (C::Mask::kCausal) last_key = min(i + (seqlen_k - seqlen_q), last_key);
        if (i >= seqlen_q) last_key = -1;  // a row past the end sees no key
        last[half] = last_key - c0;
      }
    }
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      float2 bias2 = make_float2(0.f, 0.f);
      if constexpr (C::Bias::kHasBias) {
        bias2 = *reinterpret_cast<const float2*>(bias_s + nt * 8 + 2 * (lane % 4));
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = fmaf(s[nt][half * 2 + e], p.scale_log2, (e ? bias2.y : bias2.x) * bias_log2) -
                    lse_row[half];
          if constexpr (kMasked) {
            if (nt * 8 + e > last[half]) x = neg_inf();
          }
          const float pe = dev::exp2_approx(x);
          s[nt][half * 2 + e] = pe * (dp[nt][half * 2 + e] - delta_row[half]);  // dS
        }
      }
    }
  }

  __device__ void run() {
    using namespace bwd_detail;
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int diag = seqlen_k - seqlen_q;
    int n_end = seqlen_k;
    if constexpr (C::Mask::kCausal) {
      const int last_visible = m0 + C::kBlockM - 1 + diag;
      n_end = last_visible + 1 < seqlen_k ? last_visible + 1 : seqlen_k;
    }
    const int n_tiles = n_end > 0 ? (n_end + C::kBlockN - 1) / C::kBlockN : 0;

    load_folded<QTile, C::kBlockM, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        smem, p.q_std, q_std_off, p.k_low, k_low_off, m0, seqlen_q, tid);
    zero_pad<QTile, C::kBlockM, C::kDqk, C::kDqkPad, C::kThreads>(smem, tid);
    load_plain<OTile, C::kBlockM, C::kHeadDim, C::kThreads>(smem + QTile::kBytes, p.d_o, o_off, m0,
                                                            seqlen_q, tid);
    for (int s = 0; s < C::kStages; ++s) {
      zero_pad<KTile, C::kBlockN, C::kDqk, C::kDqkPad, C::kThreads>(stage_base(s), tid);
    }
    dev::cp_async_commit();
    if (n_tiles > 0) load_key_block(0, 0);
    dev::cp_async_commit();
    dev::cp_async_wait<1>();
    __syncthreads();
    const float w_std = p.w_std ? p.w_std[h] : 1.f;
    const float w_rec = p.w_rec ? p.w_rec[h] : 1.f;
    scale_by_gates<E, QTile, C::kBlockM, C::kDStd, C::kR, C::kThreads>(smem, w_std, w_rec, tid);
    __syncthreads();

    const int local_row0 = 16 * warp + lane / 4;
    float lse_row[2], delta_row[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = m0 + local_row0 + 8 * half;
      const index_t idx = static_cast<index_t>(bh) * seqlen_q + i;
      lse_row[half] = i < seqlen_q ? p.lse_log2[idx] : pos_inf();
      delta_row[half] = i < seqlen_q ? p.delta[idx] : 0.f;
    }
    const float bias_log2 = C::Bias::kHasBias ? (p.w_disc ? p.w_disc[h] : 1.f) * kLog2e : 0.f;
    float gq[kGTiles][4];
#pragma unroll
    for (int t = 0; t < kGTiles; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) gq[t][e] = 0.f;
    const dev::u32 q_smem = dev::smem_addr(smem);
    const dev::u32 do_smem = dev::smem_addr(smem + QTile::kBytes);

    for (int tile = 0; tile < n_tiles; ++tile) {
      if (tile + 1 < n_tiles) load_key_block(tile + 1, (tile + 1) % C::kStages);
      dev::cp_async_commit();
      dev::cp_async_wait<1>();
      __syncthreads();
      const int n0 = tile * C::kBlockN;
      char* sbase = stage_base(tile % C::kStages);
      const dev::u32 k_smem = dev::smem_addr(sbase);
      const dev::u32 v_smem = dev::smem_addr(sbase + KTile::kBytes);
      const float* bias_s = reinterpret_cast<const float*>(sbase + KTile::kBytes + VTile::kBytes);

      float s[kNTiles][4], dp[kNTiles][4];                            // (kNTiles, 4) fp32 each
#pragma unroll
      for (int t = 0; t < kNTiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[t][e] = dp[t][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kQkSteps; ++ks) {
        dev::u32 a[4];
        dev::ldmatrix_x4(a, q_smem + 2 * QTile::offset(16 * warp + lane % 16, ks * 16 + (lane / 16) * 8));
#pragma unroll
        for (int nt = 0; nt < kNTiles; nt += 2) {
          dev::u32 bk[4];
          dev::ldmatrix_x4(bk, k_smem + 2 * KTile::offset(nt * 8 + lane % 8 + 8 * (lane / 16),
                                                          ks * 16 + 8 * ((lane / 8) % 2)));
          E::mma(s[nt], a, bk[0], bk[1]);
          E::mma(s[nt + 1], a, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int ks = 0; ks < kDvSteps; ++ks) {
        dev::u32 a[4];
        dev::ldmatrix_x4(a, do_smem + 2 * OTile::offset(16 * warp + lane % 16, ks * 16 + (lane / 16) * 8));
#pragma unroll
        for (int nt = 0; nt < kNTiles; nt += 2) {
          dev::u32 bv[4];
          dev::ldmatrix_x4(bv, v_smem + 2 * VTile::offset(nt * 8 + lane % 8 + 8 * (lane / 16),
                                                          ks * 16 + 8 * ((lane / 8) % 2)));
          E::mma(dp[nt], a, bv[0], bv[1]);
          E::mma(dp[nt + 1], a, bv[2], bv[3]);
        }
      }

      // dS, with a separate copy for the tiles this warp's 16 rows see only in part (as in the
      // dK/dV kernel).
      const int warp_row0 = m0 + 16 * warp;
      bool masked = n0 + C::kBlockN > seqlen_k || warp_row0 + 16 > seqlen_q;
      if constexpr (C::Mask::kCausal) masked = masked || n0 + C::kBlockN - 1 > warp_row0 + diag;
      if (masked) {
        probs_to_grads<true>(s, dp, bias_s, bias_log2, lse_row, delta_row, n0, local_row0);
      } else {
        probs_to_grads<false>(s, dp, bias_s, bias_log2, lse_row, delta_row, n0, local_row0);
      }

      // Gq += dS kf.
#pragma unroll
      for (int kk = 0; kk < C::kBlockN / 16; ++kk) {
        dev::u32 da[4];
        da[0] = E::pack(s[2 * kk][0], s[2 * kk][1]);
        da[1] = E::pack(s[2 * kk][2], s[2 * kk][3]);
        da[2] = E::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        da[3] = E::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        const int krow = kk * 16 + lane % 8 + 8 * ((lane / 8) % 2);
#pragma unroll
        for (int nd = 0; nd < kGTiles; nd += 2) {
          dev::u32 bk[4];
          dev::ldmatrix_x4_trans(bk, k_smem + 2 * KTile::offset(krow, nd * 8 + 8 * (lane / 16)));
          E::mma(gq[nd], da, bk[0], bk[1]);
          E::mma(gq[nd + 1], da, bk[2], bk[3]);
        }
      }
      __syncthreads();  // every warp is done with this stage before it is refilled
    }
    dev::cp_async_wait<0>();

    const float dq_std_scale = p.scale * w_std, dk_low_scale = p.scale * w_rec;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = m0 + local_row0 + 8 * half;
      if (i >= seqlen_q) continue;
#pragma unroll
      for (int nd = 0; nd < kGTiles; ++nd) {
        const int c = nd * 8 + 2 * (lane % 4);
        const float x0 = gq[nd][half * 2], x1 = gq[nd][half * 2 + 1];
        if (c < C::kDStd) {
          *elem<dev::u32>(p.dq_std, b, h, i, c) = E::pack(dq_std_scale * x0, dq_std_scale * x1);
        } else if (c < C::kDqk) {
          *elem<dev::u32>(p.dk_low, b, h, i, c - C::kDStd) =
              E::pack(dk_low_scale * x0, dk_low_scale * x1);
        }
      }
    }
  }
};

/// Deterministic dQ kernel body; grid (batch * heads, query blocks), heavy query blocks first.
template <class Config>
__device__ __forceinline__ void bwd_dq(const BwdParams& p) {
  extern __shared__ __align__(128) char smem[];
  BwdDqKernel<Config> k{p, smem};
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32;
  k.lane = k.tid % 32;
  k.bh = static_cast<int>(blockIdx.x);
  k.b = k.bh / p.heads;
  k.h = k.bh % p.heads;
  k.m0 = (p.num_m_blocks - 1 - static_cast<int>(blockIdx.y)) * Config::kBlockM;
  k.q_std_off = k.b * p.q_std.batch_stride + k.h * p.q_std.head_stride;
  k.k_low_off = k.b * p.k_low.batch_stride + k.h * p.k_low.head_stride;
  k.k_std_off = k.b * p.k_std.batch_stride + k.h * p.k_std.head_stride;
  k.q_low_off = k.b * p.q_low.batch_stride + k.h * p.q_low.head_stride;
  k.v_off = k.b * p.v.batch_stride + k.h * p.v.head_stride;
  k.o_off = k.b * p.d_o.batch_stride + k.h * p.d_o.head_stride;
  k.run();
}

// ---- small kernels: 64 query rows of one (b, h) per CTA, or one CTA per head -----------------
inline constexpr int kAuxThreads = kAuxThreadsHost;
inline constexpr int kAuxRows = kAuxRowsPerCta;

namespace bwd_detail {

// Global accesses as inline PTX: NVRTC without headers has no vector helpers, and `.global`
// keeps them LDG/STG rather than generic loads.
/// v = the 16 bytes at `a` where `pred` holds, else zeros; predicated, so no branch.
__device__ __forceinline__ void ld_v4_if(bool pred, const void* a, dev::u32 (&v)[4]) {
  asm("{\n.reg .pred p;\nsetp.ne.b32 p, %4, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\n"
      "mov.b32 %3, 0;\n@p ld.global.v4.u32 {%0, %1, %2, %3}, [%5];\n}\n"
      : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
      : "r"(static_cast<int>(pred)), "l"(a));
}
/// The 4-byte fallback of ld_v4_if, for views whose rows are only 4-byte aligned.
__device__ __forceinline__ void ld_4x32_if(bool pred, const void* a, dev::u32 (&v)[4]) {
  asm("{\n.reg .pred p;\nsetp.ne.b32 p, %4, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\n"
      "mov.b32 %3, 0;\n@p ld.global.u32 %0, [%5];\n@p ld.global.u32 %1, [%5+4];\n"
      "@p ld.global.u32 %2, [%5+8];\n@p ld.global.u32 %3, [%5+12];\n}\n"
      : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
      : "r"(static_cast<int>(pred)), "l"(a));
}
__device__ __forceinline__ void st_zero_v4(float* a) {
  asm volatile("st.global.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"l"(a), "r"(0u) : "memory");
}
__device__ __forceinline__ void st_v4(void* a, const dev::u32 (&v)[4]) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"l"(a), "r"(v[0]), "r"(v[1]),
               "r"(v[2]), "r"(v[3])
               : "memory");
}
__device__ __forceinline__ void st_v2(void* a, dev::u32 x, dev::u32 y) {
  asm volatile("st.global.v2.u32 [%0], {%1, %2};\n" ::"l"(a), "r"(x), "r"(y) : "memory");
}
__device__ __forceinline__ void st_u32(void* a, dev::u32 x) {
  asm volatile("st.global.u32 [%0], %1;\n" ::"l"(a), "r"(x) : "memory");
}

/// Whether every row of a 16-bit (b, h, row, col) view starts on a `kBytes` boundary: the
/// facade checks O and dO for 16 bytes and the gradients for 4 only, so wider accesses test
/// this once per kernel (the answer is uniform over the grid).
template <int kBytes>
__device__ __forceinline__ bool rows_aligned(const void* ptr, index_t batch_stride,
                                             index_t head_stride, index_t row_stride) {
  constexpr index_t kElems = kBytes / 2;
  return (reinterpret_cast<unsigned long long>(ptr) % kBytes) == 0 &&
         ((batch_stride | head_stride | row_stride) & (kElems - 1)) == 0;
}

/// O . dO over the 16-byte chunks this thread owns of local rows `group + pass * kRowsPerPass`
/// (threads `kGroup` apart in the row: each load instruction covers kGroup * 16 contiguous
/// bytes of a row). All loads are issued before any arithmetic, rows past `rows` read zeros.
template <class E, int kHeadDim, int kGroup, int kPasses, bool kWide>
__device__ __forceinline__ void row_dots(float (&acc)[kPasses], const dev::u16* o, index_t o_rs,
                                         const dev::u16* d_o, index_t d_o_rs, int group, int part,
                                         int rows) {
  constexpr int kPerThread = kHeadDim / 8 / kGroup;
  constexpr int kRowsPerPass = kAuxThreads / kGroup;
  dev::u32 x[kPasses][kPerThread][4], y[kPasses][kPerThread][4];
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    const int r = pass * kRowsPerPass + group;
    const bool valid = r < rows;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int col = 8 * (part + kGroup * k);
      const dev::u16* a = o + r * o_rs + col;
      const dev::u16* g = d_o + r * d_o_rs + col;
      if constexpr (kWide) {
        ld_v4_if(valid, a, x[pass][k]);
        ld_v4_if(valid, g, y[pass][k]);
      } else {
        ld_4x32_if(valid, a, x[pass][k]);
        ld_4x32_if(valid, g, y[pass][k]);
      }
    }
  }
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        s = fmaf(E::lo(x[pass][k][w]), E::lo(y[pass][k][w]), s);
        s = fmaf(E::hi(x[pass][k][w]), E::hi(y[pass][k][w]), s);
      }
    acc[pass] = s;
  }
}

/// Copies the CTA's `rows` query rows [q_std | k_low] into the packed (B, H, Tq, Ds + R) buffer
/// `p.q_packed`, 16 bytes per access (the facade packs only when Ds and R are multiples of 8 and
/// both views are 16-byte aligned). All loads are issued before any store.
template <int kDStd, int kR>
__device__ __forceinline__ void pack_query_rows(const BwdParams& p, int b, int h, int i0,
                                                int rows, index_t row0) {
  if constexpr (kR > 0 && kDStd % 8 == 0 && kR % 8 == 0) {
    constexpr int kStdChunks = kDStd / 8, kChunks = (kDStd + kR) / 8;
    constexpr int kIters = (kAuxRows * kChunks + kAuxThreads - 1) / kAuxThreads;
    const dev::u16* q = static_cast<const dev::u16*>(p.q_std.ptr) + b * p.q_std.batch_stride +
                        h * p.q_std.head_stride + i0 * p.q_std.row_stride;
    const dev::u16* kl = static_cast<const dev::u16*>(p.k_low.ptr) + b * p.k_low.batch_stride +
                         h * p.k_low.head_stride + i0 * p.k_low.row_stride;
    dev::u16* out = static_cast<dev::u16*>(p.q_packed) + row0 * (kDStd + kR);
    const int chunks = rows * kChunks;
    const int tid = static_cast<int>(threadIdx.x);
    dev::u32 v[kIters][4];
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int k = tid + it * kAuxThreads;
      const int r = k / kChunks, c = k % kChunks;
      const dev::u16* src = c < kStdChunks ? q + r * p.q_std.row_stride + 8 * c
                                           : kl + r * p.k_low.row_stride + 8 * (c - kStdChunks);
      ld_v4_if(k < chunks, src, v[it]);
    }
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int k = tid + it * kAuxThreads;
      if (k < chunks) st_v4(out + 8 * k, v[it]);
    }
  }
}

}  // namespace bwd_detail

/// Delta_i = dO_i . O_i and LSE_i * log2(e) (+inf for rows that saw no key, so that every P of
/// that row recomputes to 0); zeroes the rows' fp32 Gq accumulator when there is one, and packs
/// the rows' [q_std | k_low] when asked to (p.q_packed).
/// Grid (batch * heads, ceil(seqlen_q / kAuxRows)): kGroup threads share a row, 16 bytes of O
/// and dO per load, then a log2(kGroup)-step butterfly inside the group (fixed order).
template <class E, int kDStd, int kR, int kHeadDim>
__device__ __forceinline__ void bwd_preprocess(const BwdParams& p) {
  using namespace bwd_detail;
  constexpr int kChunks = kHeadDim / 8;              // 16-byte chunks of an O / dO row
  constexpr int kGroup = kChunks % 8 == 0 ? 8 : 4;   // threads per row: d96 -> 4 x 3 chunks
  constexpr int kRowsPerPass = kAuxThreads / kGroup;
  constexpr int kPasses = kAuxRows / kRowsPerPass;
  constexpr int kGqQuads = (kDStd + kR) / 4;          // 16-byte chunks of a Gq row
  static_assert(kChunks % kGroup == 0 && kAuxRows % kRowsPerPass == 0, "row split");
  static_assert(kDStd % 4 == 0 && kR % 4 == 0, "Gq rows are whole 16-byte chunks (check_spec)");
  const int tid = static_cast<int>(threadIdx.x);
  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / p.heads, h = bh - b * p.heads;
  const int i0 = static_cast<int>(blockIdx.y) * kAuxRows;
  const int rows = min(kAuxRows, p.seqlen_q - i0);
  const index_t row0 = static_cast<index_t>(bh) * p.seqlen_q + i0;  // index in (B, H, Tq)
  const int group = tid / kGroup, part = tid % kGroup;

  const dev::u16* o = static_cast<const dev::u16*>(p.o.ptr) + b * p.o.batch_stride +
                      h * p.o.head_stride + i0 * p.o.row_stride;
  const dev::u16* d_o = static_cast<const dev::u16*>(p.d_o.ptr) + b * p.d_o.batch_stride +
                        h * p.d_o.head_stride + i0 * p.d_o.row_stride;
  float acc[kPasses];
  if (rows_aligned<16>(p.o.ptr, p.o.batch_stride, p.o.head_stride, p.o.row_stride) &&
      rows_aligned<16>(p.d_o.ptr, p.d_o.batch_stride, p.d_o.head_stride, p.d_o.row_stride)) {
    row_dots<E, kHeadDim, kGroup, kPasses, true>(acc, o, p.o.row_stride, d_o, p.d_o.row_stride,
                                                 group, part, rows);
  } else {
    row_dots<E, kHeadDim, kGroup, kPasses, false>(acc, o, p.o.row_stride, d_o, p.d_o.row_stride,
                                                  group, part, rows);
  }
  // lse -> lse_log2 for the CTA's rows, one per thread: coalesced, independent of the groups.
  if (tid < rows) {
    const float lse = p.lse[row0 + tid];
    p.lse_log2[row0 + tid] = lse == neg_inf() ? pos_inf() : lse * kLog2e;
  }
#pragma unroll
  for (int pass = 0; pass < kPasses; ++pass) {
    float s = acc[pass];
#pragma unroll
    for (int m = kGroup / 2; m >= 1; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    const int r = pass * kRowsPerPass + group;
    if (part == 0 && r < rows) p.delta[row0 + r] = s;
  }
  if (p.gq != nullptr) {
    // The CTA's Gq rows are one contiguous span (rows of Ds + R fp32, 16-byte aligned).
    float* gq = p.gq + row0 * (kDStd + kR);
    const int quads = rows * kGqQuads;
#pragma unroll 4
    for (int k = tid; k < quads; k += kAuxThreads) st_zero_v4(gq + 4 * k);
  }
  if (p.q_packed != nullptr) pack_query_rows<kDStd, kR>(p, b, h, i0, rows, row0);
}

/// dq_std = scale * w_std * Gq[:Ds] and dk_low = scale * w_rec * Gq[Ds:] from the fp32 workspace
/// (gates omitted when the accumulator already carries them). Grid as bwd_preprocess; the CTA's
/// Gq span is read as 16-byte chunks spread over all threads (a chunk never straddles Ds, which
/// is a multiple of 4), each written back as one 8-byte store, or two 4-byte ones where the
/// gradient views are only 4-byte aligned.
template <class E, int kDStd, int kR, int kHeadDim>
__device__ __forceinline__ void bwd_dq_convert(const BwdParams& p) {
  using namespace bwd_detail;
  constexpr int kQuads = (kDStd + kR) / 4;  // 16-byte chunks of a Gq row
  constexpr int kIters = (kAuxRows * kQuads + kAuxThreads - 1) / kAuxThreads;
  static_assert(kDStd % 4 == 0 && kR % 4 == 0, "a chunk lies in one of dq_std, dk_low");
  const int tid = static_cast<int>(threadIdx.x);
  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / p.heads, h = bh - b * p.heads;
  const int i0 = static_cast<int>(blockIdx.y) * kAuxRows;
  const int quads = min(kAuxRows, p.seqlen_q - i0) * kQuads;
  const float* gq = p.gq + (static_cast<index_t>(bh) * p.seqlen_q + i0) * (kDStd + kR);
  const float s_std = p.scale * (p.gq_gated || p.w_std == nullptr ? 1.f : p.w_std[h]);
  const float s_rec = p.scale * (p.gq_gated || p.w_rec == nullptr ? 1.f : p.w_rec[h]);
  dev::u16* dq = static_cast<dev::u16*>(p.dq_std.ptr) + b * p.dq_std.batch_stride +
                 h * p.dq_std.head_stride + i0 * p.dq_std.row_stride;
  dev::u16* dk = static_cast<dev::u16*>(p.dk_low.ptr) + b * p.dk_low.batch_stride +
                 h * p.dk_low.head_stride + i0 * p.dk_low.row_stride;
  const bool wide =
      rows_aligned<8>(p.dq_std.ptr, p.dq_std.batch_stride, p.dq_std.head_stride,
                      p.dq_std.row_stride) &&
      (kR == 0 || rows_aligned<8>(p.dk_low.ptr, p.dk_low.batch_stride, p.dk_low.head_stride,
                                  p.dk_low.row_stride));
  dev::u32 v[kIters][4];
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int k = tid + it * kAuxThreads;
    ld_v4_if(k < quads, gq + 4 * k, v[it]);
  }
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int k = tid + it * kAuxThreads;
    if (k >= quads) break;  // k grows with it: the rest are past the CTA's rows too
    const int r = k / kQuads;            // constant divisor: a multiply and a shift
    const int c = 4 * (k - r * kQuads);  // first column of the chunk in [0, Ds + R)
    const bool is_std = kR == 0 || c < kDStd;
    const float s = is_std ? s_std : s_rec;
    dev::u16* dst = is_std ? dq + r * p.dq_std.row_stride + c
                           : dk + r * p.dk_low.row_stride + (c - kDStd);
    const dev::u32 lo = E::pack(s * __uint_as_float(v[it][0]), s * __uint_as_float(v[it][1]));
    const dev::u32 hi = E::pack(s * __uint_as_float(v[it][2]), s * __uint_as_float(v[it][3]));
    if (wide) {
      st_v2(dst, lo, hi);
    } else {
      st_u32(dst, lo);
      st_u32(dst + 2, hi);
    }
  }
}

/// One CTA per head: dw_std, dw_rec from the per-key-block partials; the bias gradient (summed
/// over the batch when the bias is shared over it) and dw_disc. Every sum has a fixed order.
template <class E, int kDStd, int kR, int kHeadDim>
__device__ __forceinline__ void bwd_finalize(const BwdParams& p) {
  using namespace bwd_detail;
  const int tid = static_cast<int>(threadIdx.x);
  const int h = static_cast<int>(blockIdx.x);
  if (tid < 32 && p.dw_partial != nullptr) {
    // Warp 0: lane l sums partials l, l + 32, ... of the (batch, key block) sequence, then a fixed
    // butterfly: parallel (not a 100-long chain of dependent loads) and still deterministic.
    float s0 = 0.f, s1 = 0.f;
    const int total = p.batch * p.num_n_blocks;
    for (int k = tid; k < total; k += 32) {
      const int b = k / p.num_n_blocks, n = k % p.num_n_blocks;
      const float* part = p.dw_partial + 2 * ((static_cast<index_t>(b) * p.heads + h) * p.num_n_blocks + n);
      s0 += part[0];
      s1 += part[1];
    }
    s0 = warp_sum(s0);
    s1 = warp_sum(s1);
    if (tid == 0 && p.dw_std != nullptr) p.dw_std[h] = p.scale * s0;
    if (tid == 0 && p.dw_rec != nullptr) p.dw_rec[h] = kR > 0 ? p.scale * s1 : 0.f;
  }
  if (p.bias == nullptr) return;
  const float w_disc = p.w_disc ? p.w_disc[h] : 1.f;
  const bool shared_over_batch = p.bias_batch_stride == 0;
  // kUnroll keys per thread and step, their loads issued together before any use: one CTA per
  // head walks Tk * batch values, and with one dependent load at a time that walk was latency-bound
  // (19.6 us on the seeds' shape, H200). The summation order is still fixed (deterministic).
  constexpr int kUnroll = 4;
  float acc = 0.f;
  for (int j0 = tid; j0 < p.seqlen_k; j0 += kUnroll * kAuxThreads) {
    int j[kUnroll];
    bool in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      j[u] = j0 + u * kAuxThreads;
      in[u] = j[u] < p.seqlen_k;
    }
    if (shared_over_batch) {
      float g[kUnroll] = {}, beta[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) beta[u] = in[u] ? p.bias[h * p.bias_head_stride + j[u]] : 0.f;
#pragma unroll 4
      for (int b = 0; b < p.batch; ++b) {
        const float* cs = p.col_sums + (static_cast<index_t>(b) * p.heads + h) * p.seqlen_k;
        float v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) v[u] = in[u] ? cs[j[u]] : 0.f;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) g[u] += v[u];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (in[u] && p.d_bias != nullptr) p.d_bias[h * p.d_bias_head_stride + j[u]] = w_disc * g[u];
        acc += beta[u] * g[u];
      }
    } else {
#pragma unroll 2
      for (int b = 0; b < p.batch; ++b) {
        const float* cs = p.col_sums + (static_cast<index_t>(b) * p.heads + h) * p.seqlen_k;
        float g[kUnroll], beta[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          g[u] = in[u] ? cs[j[u]] : 0.f;
          beta[u] = in[u] ? p.bias[b * p.bias_batch_stride + h * p.bias_head_stride + j[u]] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (in[u] && p.d_bias != nullptr) {
            p.d_bias[b * p.d_bias_batch_stride + h * p.d_bias_head_stride + j[u]] = w_disc * g[u];
          }
          acc += beta[u] * g[u];
        }
      }
    }
  }
  __shared__ float warp_acc[kAuxThreads / 32];
  acc = warp_sum(acc);
  if (tid % 32 == 0) warp_acc[tid / 32] = acc;
  __syncthreads();
  if (tid == 0 && p.dw_disc != nullptr) {
    float total = 0.f;
    for (int w = 0; w < kAuxThreads / 32; ++w) total += warp_acc[w];
    p.dw_disc[h] = total;
  }
}

}  // namespace rajit::attn
