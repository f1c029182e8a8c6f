/// The RA dK/dV (+ atomic dQ) kernel for Hopper (sm_90a): warpgroup MMA from 128-byte-swizzled tiles.
// Same contract, grid and epilogue as BwdDkvKernel (attention/bwd.cuh): one CTA per (b*h, key
// block), the key tile held gated (kg = [w_std k_std | w_rec q_low]), query tiles qr = [q_std |
// k_low] and dO streamed through a cp.async pipeline. Each warpgroup owns 64 key rows; per step of
// 64 query rows it computes
//   S^T = kg qr^T, dP^T = V dO^T    wgmma m64n64, A and B K-major from shared memory;
//   P^T, dS^T                       elementwise in registers (dkv_probs_and_grads: a warpgroup's
//                                   accumulators have the m16n8 layout per warp);
//   dV += P^T dO, dKr += dS^T qr    wgmma with P^T / dS^T as register A operands, B MN-major;
//   column sums of dS (bias grad)   with a bias each stage's query tile is followed by a slice of
//                                   ones, and the dK product runs 8 columns wider over it: its last
//                                   n8 tile is dS^T times ones, the row sums of dS^T, so neither the
//                                   elementwise step nor a separate MMA carries the sums;
//   atomic dQ: dS^T is stored transposed (stmatrix.trans) as dS, K-major, and each 64-column slice
//   of Gq[rows] += dS kg is one m64n64 product (B = kg MN-major), added with red.global.add.v2.
// Compared with the mma.sync kernel, nothing is re-read from shared memory per warp (wgmma reads
// each operand tile once per warpgroup), and the dV/dK accumulators are spread over a warpgroup.
// kTma: the query tile (folded rows [q_std | k_low], one box per 64 columns) and dO arrive by TMA,
// started by one thread on the stage's mbarrier, so the step's copy burst (RA's two-source
// gather; perf-notes, backward v3c) leaves the compute warps; lse and delta stay 4-byte cp.async.
// kTmaSeparate (k_low a tensor of its own): the boxes bring q_std (the columns past d_std arrive
// as zeros) and dO; once they have landed, k_low's few columns are copied over those zeros by
// cp.async, in the middle of the step before the one that uses them.
#pragma once
#include "attention/bwd.cuh"
#include "common/wgmma.cuh"

namespace rajit::attn {

template <class Element_, int kDStd_, int kR_, int kHeadDim_, int kBlockN_, int kStages_,
          class Mask_, class Bias_, bool kAtomicDq_, bool kTma_ = false,
          bool kTmaSeparate_ = false>
struct BwdWgmmaConfig {
  using Element = Element_;
  using Mask = Mask_;
  using Bias = Bias_;
  static constexpr int kDStd = kDStd_, kR = kR_, kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBwdWgmmaBlockM, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr bool kAtomicDq = kAtomicDq_;
  static constexpr bool kTma = kTma_;
  static constexpr bool kTmaSeparate = kTma_ && kTmaSeparate_ && kR_ > 0;
  static constexpr int kWarpGroups = kBlockN / 64;
  static constexpr int kWarps = kWarpGroups * 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kDqk = kDStd + kR;
  static constexpr int kDqkPad = padded_contraction(kDStd, kR);
  static constexpr int kCopyElems = copy_elems(kDStd, kR);
  static constexpr int kQkSlices = wgmma_slices(kDqkPad);
  static constexpr int kVSlices = wgmma_slices(kHeadDim);
  // Shared memory, bytes, from a 1024-aligned base:
  //   [kg | V] [stage 0: qr | ones (bias) | dO] ... [dS (atomic)] [stage 0: lse | delta] ...
  static constexpr int kKBytes = kBlockN * kQkSlices * 128;
  static constexpr int kVBytes = kBlockN * kVSlices * 128;
  static constexpr int kQBytes = kBlockM * kQkSlices * 128;
  static constexpr int kOBytes = kBlockM * kVSlices * 128;
  static constexpr int kOnesBytes = bwd_dkv_wgmma_ones_bytes(Bias::kHasBias);
  static constexpr int kDoOffset = kQBytes + kOnesBytes;  // dO within a stage
  // dK's product width: the padded contraction, plus one n8 tile of column sums with a bias.
  static constexpr int kDkCols = kDqkPad + (Bias::kHasBias ? 8 : 0);
  static constexpr int kStagesOffset = kKBytes + kVBytes;
  static constexpr int kStageBytes = kDoOffset + kOBytes;
  static constexpr int kDsOffset = kStagesOffset + kStages * kStageBytes;
  static constexpr int kDsBytes = kAtomicDq ? kBlockM * kBlockN * 2 : 0;
  static constexpr int kVectorsOffset = kDsOffset + kDsBytes;  // per stage: lse, delta (fp32)
  static constexpr int kBarrierOffset = kVectorsOffset + kStages * kBlockM * 8;  // TMA: "landed"
  static constexpr int kSharedBytes =
      1024 + kVectorsOffset + round_up(kStages * kBlockM * 8 + 64, 1024);
  static constexpr int kTxBytes = kQBytes + kOBytes;  // a stage's boxes (TMA)

  static_assert(check_bwd_dkv_wgmma_tile(kDStd, kR, kHeadDim, kBlockM, kBlockN, kWarps, kStages,
                                         kAtomicDq, Bias::kHasBias, 1 << 30) == 0,
                "invalid wgmma dK/dV tile");
  static_assert(kSharedBytes ==
                    bwd_dkv_wgmma_shared_bytes(kDStd, kR, kHeadDim, kBlockN, kStages, kAtomicDq,
                                               Bias::kHasBias),
                "bwd_limits.cuh and the kernel disagree on the shared-memory layout");
};

namespace bwd_detail {
// Barrier of the calling warpgroup's 128 threads (ids 1, 2, ...; 0 is __syncthreads). The id is
// derived from %tid.x on the spot rather than from a register held across the loop.
__device__ __forceinline__ void warpgroup_barrier() {
  asm volatile("bar.sync %0, 128;\n" ::"r"((dev::thread_x_again() >> 7) + 1) : "memory");
}
}  // namespace bwd_detail

template <class C>
struct BwdDkvWgmmaKernel {
  using E = typename C::Element;
  using KTile = Sw128Tile<C::kBlockN>;   // (kBlockN, kDqkPad) gated keys kg
  using VTile = Sw128Tile<C::kBlockN>;   // (kBlockN, kHeadDim)
  using QTile = Sw128Tile<C::kBlockM>;   // (64, kDqkPad) raw queries qr
  using OTile = Sw128Tile<C::kBlockM>;   // (64, kHeadDim) dO
  using DsTile = Sw128Tile<C::kBlockM>;  // (64 queries, kBlockN keys) dS: slice g = warpgroup g's keys
  static constexpr int kMTiles = C::kBlockM / 8;  // n8 tiles of S^T (query columns)
  static constexpr int kPSteps = C::kBlockM / 16;  // k16 steps of dV and dK
  static constexpr int kQkSteps = C::kDqkPad / 16;
  static constexpr int kDvSteps = C::kHeadDim / 16;
  static constexpr bool kWide = C::kHeadDim + C::kDqkPad > 128;  // at the 255-register limit

  const BwdParams& p;
  const BwdTmaMaps* maps;  // kTma only
  char* smem;  // 1024-byte aligned
  dev::u32 smem_s;
  int tid, warp, lane, group, b, h, bh, n_block, n0;
  index_t k_std_off, q_low_off, v_off;  // the key side's (b, h) offsets (prologue only)

  __device__ __forceinline__ dev::u32 stage_s(int stage) const {
    return smem_s + C::kStagesOffset + stage * C::kStageBytes;
  }
  __device__ __forceinline__ dev::u32 vectors_s(int stage) const {
    return smem_s + C::kVectorsOffset + stage * C::kBlockM * 8;
  }
  __device__ __forceinline__ static int wrap_stage(int s) {
    return s >= C::kStages ? s - C::kStages : s;
  }
  __device__ __forceinline__ dev::u32 landed_barrier(int stage) const {
    return smem_s + C::kBarrierOffset + 8 * stage;
  }

  // Descriptors: K-major tiles have 128-byte rows in 8-row groups 1024 bytes apart; MN-major
  // ones also 64-column slices kSliceBytes apart. A descriptor's start-address field is
  // (address >> 4) in its low 14 bits (shared memory stays below 2^18 bytes), so the loop keeps
  // 16-byte address *fields* and moves them by constants (bytes >> 4): no per-use shifts or masks,
  // and one base register serves every k-step. A k16 step inside a K-major slice moves the start
  // by 32 bytes (the hardware swizzles on absolute address bits).
  __device__ __forceinline__ static unsigned long long kmajor(dev::u32 field) {
    return dev::sw128_descriptor(0, 16, 1024) | field;
  }
  template <int kSliceBytes>
  __device__ __forceinline__ static unsigned long long mnmajor(dev::u32 field) {
    return dev::sw128_descriptor(0, kSliceBytes, 1024) | field;
  }
  __device__ static constexpr dev::u32 kstep(int ks, int slice_bytes) {  // as a field offset
    return static_cast<dev::u32>(((ks / 4) * slice_bytes + (ks % 4) * 32) >> 4);
  }
  __device__ static constexpr dev::u32 field(int bytes) { return static_cast<dev::u32>(bytes >> 4); }

  // The query tile, dO, lse and delta of block m_block into stage `stage`. At width 128 the
  // operands' (b, h) offsets are recomputed from a fresh read of blockIdx.x: held across the loop,
  // they spill there (255 registers). The vectors go first, so the tiles' copies end the step's
  // copy burst with nothing behind them that waits for it (perf-notes, backward v3c).
  __device__ __forceinline__ void load_query_block(int m_block, int stage) const {
    using dev::block_x_again;
    const int tid = dev::thread_x_again();
    const int m0 = m_block * C::kBlockM;
    const dev::u32 base = stage_s(stage);
    int bh_now = bh, b_now = b, h_now = h;
    if constexpr (kWide) {  // narrower tiles have the registers to hold them (and skip the divide)
      bh_now = block_x_again();
      b_now = bh_now / p.heads;
      h_now = bh_now % p.heads;
    }
    const index_t row_base = static_cast<index_t>(bh_now) * p.seqlen_q;
    const float* const vectors[2] = {p.lse_log2 + row_base, p.delta + row_base};
    load_float_vectors<C::kBlockM, 2, C::kThreads>(vectors_s(stage), vectors, m0, p.seqlen_q, tid);
    if constexpr (C::kTma) {
      __syncwarp();  // as_tma_issuer's elect.sync needs warp 0 converged
      // Rows past seqlen_q and columns past d_std + r arrive as zeros.
      dev::as_tma_issuer(tid, [&] {
        const dev::u32 bar = landed_barrier(stage);
        dev::mbarrier_arrive_expect_tx(bar, C::kTxBytes);
#pragma unroll
        for (int s = 0; s < C::kQkSlices; ++s) {
          dev::tma_load_4d(base + s * QTile::kSliceBytes, &maps->q, bar, 64 * s, m0, h_now, b_now);
        }
#pragma unroll
        for (int s = 0; s < C::kVSlices; ++s) {
          dev::tma_load_4d(base + C::kDoOffset + s * OTile::kSliceBytes, &maps->d_o, bar, 64 * s,
                           m0, h_now, b_now);
        }
      });
      __syncwarp();
      return;
    }
    load_rows<QTile, C::kBlockM, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        base, p.q_std, b_now * p.q_std.batch_stride + h_now * p.q_std.head_stride, p.k_low,
        b_now * p.k_low.batch_stride + h_now * p.k_low.head_stride, m0, p.seqlen_q, tid);
    const index_t o_now = b_now * p.d_o.batch_stride + h_now * p.d_o.head_stride;
    load_rows<OTile, C::kBlockM, C::kHeadDim, 0, 8, C::kThreads>(base + C::kDoOffset, p.d_o, o_now,
                                                                  p.d_o, o_now, m0, p.seqlen_q, tid);
  }

  // kTmaSeparate: k_low's columns of block m_block into stage `stage`, after the stage's boxes
  // (whose zeros fill those columns) have landed: round `parity` of its landed barrier.
  __device__ __forceinline__ void load_query_low(int m_block, int stage, dev::u32 parity) const {
    if constexpr (C::kTmaSeparate) {
      dev::mbarrier_wait(landed_barrier(stage), parity);
      const int bh_now = dev::block_x_again();
      const int b_now = bh_now / p.heads, h_now = bh_now % p.heads;
      load_low_columns<QTile, C::kBlockM, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
          stage_s(stage), p.k_low, b_now * p.k_low.batch_stride + h_now * p.k_low.head_stride,
          m_block * C::kBlockM, p.seqlen_q, dev::thread_x_again());
    }
  }

  __device__ void run() {
    using namespace bwd_detail;
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int diag = seqlen_k - seqlen_q;  // key j visible to query i iff j <= i + diag
    const int m_blocks = (seqlen_q + C::kBlockM - 1) / C::kBlockM;
    const int m_first = dkv_first_query_block<C>(p, n0, m_blocks);

    if constexpr (C::kTma) {
      if (tid == 0) {
        for (int s = 0; s < C::kStages; ++s) dev::mbarrier_init(landed_barrier(s), 1);
        dev::fence_mbarrier_init();
      }
      // Initialised before anyone uses them (racecheck flags an init and a later arrive with no
      // barrier between, even from one thread; the forward has the same order).
      __syncthreads();
    }
    // Resident: the key tile (gated below) and V; then the first kStages - 1 query blocks.
    load_folded<KTile, C::kBlockN, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        smem, p.k_std, k_std_off, p.q_low, q_low_off, n0, seqlen_k, tid);
    zero_pad<KTile, C::kBlockN, C::kDqk, C::kDqkPad, C::kThreads>(smem, tid);
    load_plain<VTile, C::kBlockN, C::kHeadDim, C::kThreads>(smem + C::kKBytes, p.v, v_off, n0,
                                                            seqlen_k, tid);
    for (int s = 0; s < C::kStages && !C::kTma; ++s) {  // TMA fills the pad columns itself
      zero_pad<QTile, C::kBlockM, C::kDqk, C::kDqkPad, C::kThreads>(
          smem + C::kStagesOffset + s * C::kStageBytes, tid);
    }
    if constexpr (C::Bias::kHasBias) {  // each stage's ones slice: every 16-bit element 1.0
      const dev::u32 one = E::pack(1.f, 1.f);
      for (int s = 0; s < C::kStages; ++s) {
        uint4* ones = reinterpret_cast<uint4*>(smem + C::kStagesOffset + s * C::kStageBytes +
                                               C::kQBytes);
        for (int i = tid; i < C::kOnesBytes / 16; i += C::kThreads) {
          ones[i] = make_uint4(one, one, one, one);
        }
      }
    }
    dev::cp_async_commit();
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (m_first + s < m_blocks) load_query_block(m_first + s, s);
      dev::cp_async_commit();
    }
    static_assert(!C::kTmaSeparate || C::kStages == 2, "k_low's copy assumes two stages");
    if (C::kTmaSeparate && m_first < m_blocks) {
      load_query_low(m_first, 0, 0);
      dev::cp_async_commit();
    }
    dev::cp_async_wait<C::kStages - 1>();  // the key/V group has landed
    __syncthreads();
    const float w_std = p.w_std ? p.w_std[h] : 1.f;
    const float w_rec = p.w_rec ? p.w_rec[h] : 1.f;
    scale_by_gates<E, KTile, C::kBlockN, C::kDStd, C::kR, C::kThreads>(smem, w_std, w_rec, tid);
    // The fence and barrier at the top of the first step publish the gated tile and the zeroed
    // pads to wgmma's proxy.

    const int key_row0 = 16 * warp + lane / 4;  // local; the second row is +8
    float bias_row[2];  // this thread's two key rows' bias, scaled to base 2
    dkv_bias_rows<C>(p, b, h, n0, key_row0, bias_row);
    // (64 keys, width) per warpgroup; with a bias dk_acc's last n8 tile holds the column sums of
    // dS for this thread's key rows (8 equal columns).
    float dv_acc[C::kHeadDim / 2], dk_acc[C::kDkCols / 2];
#pragma unroll
    for (int i = 0; i < C::kHeadDim / 2; ++i) dv_acc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < C::kDkCols / 2; ++i) dk_acc[i] = 0.f;
    // Descriptor address fields (bytes >> 4): this warpgroup's 64 key rows of kg and V, and its
    // slice of the dS tile.
    const dev::u32 k_rows_f = (smem_s >> 4) + group * field(64 * 128);
    const dev::u32 v_rows_f = k_rows_f + field(C::kKBytes);
    const dev::u32 ds_slice_f = (smem_s >> 4) + field(C::kDsOffset) + group * field(DsTile::kSliceBytes);

    int stage = 0;
    dev::u32 phase = 0;  // TMA: parity of the landed barriers' current round
    // One loop counter (the query block) and its bound; nothing else carried (255 registers).
    for (int m_block = m_first; m_block < m_blocks; ++m_block) {
      const int m0 = m_block * C::kBlockM;
      dev::cp_async_wait<C::kStages - 2>();  // this step's query block has landed
      if constexpr (C::kTma) dev::mbarrier_wait(landed_barrier(stage), phase);
      dev::fence_proxy_async_shared();       // our cp.async writes -> wgmma's proxy
      __syncthreads();  // every thread's part landed; every thread is done with the previous step
      if (m_block + C::kStages - 1 < m_blocks) {
        load_query_block(m_block + C::kStages - 1, wrap_stage(stage + C::kStages - 1));
      }
      dev::cp_async_commit();
      const dev::u32 q_f = stage_s(stage) >> 4, do_f = q_f + field(C::kDoOffset);
      const float* lse_s = reinterpret_cast<const float*>(dev::shared_to_generic(vectors_s(stage)));
      const float* delta_s = lse_s + C::kBlockM;

      // S^T = kg qr^T and dP^T = V dO^T for this warpgroup's 64 keys.   // (64, 64) fp32 each
      float st[kMTiles * 4], dpt[kMTiles * 4];
      dev::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kQkSteps; ++ks) {
        dev::wgmma_ss<C::kBlockM, E>(st, kmajor(k_rows_f + kstep(ks, KTile::kSliceBytes)),
                                     kmajor(q_f + kstep(ks, QTile::kSliceBytes)), ks > 0);
      }
#pragma unroll
      for (int ks = 0; ks < kDvSteps; ++ks) {
        dev::wgmma_ss<C::kBlockM, E>(dpt, kmajor(v_rows_f + kstep(ks, VTile::kSliceBytes)),
                                     kmajor(do_f + kstep(ks, OTile::kSliceBytes)), ks > 0);
      }
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::fence_registers(st);
      dev::fence_registers(dpt);

      // P^T and dS^T; the masked copy only for warps whose 16 keys cross the diagonal or an end.
      // Thread-derived indices from a fresh %tid.x (see thread_x_again).
      const int tid_now = dev::thread_x_again();
      const int lane_now = tid_now % 32, warp_now = tid_now / 32;
      const int warp_key0 = n0 + 16 * warp_now;
      bool masked = m0 + C::kBlockM > seqlen_q || warp_key0 + 16 > seqlen_k;
      if constexpr (C::Mask::kCausal) masked = masked || warp_key0 + 15 > m0 + diag;
      auto& st4 = reinterpret_cast<float(&)[kMTiles][4]>(st);
      auto& dpt4 = reinterpret_cast<float(&)[kMTiles][4]>(dpt);
      float unused[2];
      if (masked) {
        dkv_probs_and_grads<C, true, true, kMTiles, false>(p, n0, lane_now, st4, dpt4, unused,
                                                           bias_row, lse_s, delta_s, m0,
                                                           16 * warp_now + lane_now / 4);
      } else {
        dkv_probs_and_grads<C, false, true, kMTiles, false>(p, n0, lane_now, st4, dpt4, unused,
                                                            bias_row, lse_s, delta_s, m0,
                                                            16 * warp_now + lane_now / 4);
      }

      // dV += P^T dO and dKr += dS^T qr: the accumulators of two n8 tiles are one k16 A fragment.
      dev::u32 pa[kPSteps][4], da[kPSteps][4];
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          pa[kk][i] = E::pack(st[8 * kk + 2 * i], st[8 * kk + 2 * i + 1]);
          da[kk][i] = E::pack(dpt[8 * kk + 2 * i], dpt[8 * kk + 2 * i + 1]);
        }
      }
      dev::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
        dev::wgmma_rs<C::kHeadDim, E>(dv_acc, pa[kk],
                                      mnmajor<OTile::kSliceBytes>(do_f + field(kk * 16 * 128)), 1);
      }
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
        // Over [qr | ones]: the ones slice is the next 64-column slice after qr's last.
        dev::wgmma_rs<C::kDkCols, E>(dk_acc, da[kk],
                                     mnmajor<QTile::kSliceBytes>(q_f + field(kk * 16 * 128)), 1);
      }
      dev::wgmma_commit();
      // The next block's k_low, over its landed q_std boxes (the products above run meanwhile).
      if (C::kTmaSeparate && m_block + 1 < m_blocks) {
        load_query_low(m_block + 1, wrap_stage(stage + 1),
                       static_cast<dev::u32>((m_block + 1 - m_first) / C::kStages) & 1u);
        dev::cp_async_commit();
      }

      if constexpr (C::kAtomicDq) {
        // dS = (dS^T)^T into this warpgroup's slice of the dS tile: matrix i of da[kk] is n8 tile
        // 2 kk + i / 2 (queries), key rows 8 (i % 2) of this warp's 16.
        // Rows 16 kk apart are 16 kk * 128 bytes apart (the swizzle repeats every 8 rows), so
        // one address serves every kk.
        const int frag = lane_now / 8;
        const dev::u32 st_addr =
            (ds_slice_f << 4) +
            DsTile::byte_offset(8 * (frag / 2) + lane_now % 8, 16 * (warp_now % 4) + 8 * (frag % 2));
#pragma unroll
        for (int kk = 0; kk < kPSteps; ++kk) stmatrix_x4_trans(st_addr + kk * 16 * 128, da[kk]);
        dev::fence_proxy_async_shared();
        warpgroup_barrier();  // the warpgroup's dS slice is complete
        // Width 128: dV and dK finish first, so their A fragments (pa, da) die before the dQ
        // accumulators exist (255 registers otherwise spill). Width 64 has the registers to let
        // dV and dK run on under the dQ products.
        if constexpr (kWide) dev::wgmma_wait<0>();

        // Gq[m0 + rows] += dS kg, one 64-column slice of kg at a time (32 accumulators live).
        const int i0 = m0 + 16 * (warp_now % 4) + lane_now / 4;  // this thread's rows: i0, i0 + 8
#pragma unroll
        for (int c = 0; c < C::kQkSlices; ++c) {
          float dq[32];
          dev::wgmma_fence();
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) {
            dev::wgmma_ss_bmn<64, E>(
                dq, kmajor(ds_slice_f + field(ks * 32)),
                mnmajor<KTile::kSliceBytes>(k_rows_f + field(c * KTile::kSliceBytes + ks * 16 * 128)),
                ks > 0);
          }
          dev::wgmma_commit();
          dev::wgmma_wait<0>();
          dev::fence_registers(dq);
          float* gq = p.gq + (static_cast<index_t>(bh) * seqlen_q + i0) * C::kDqk + c * 64 +
                      2 * (lane_now % 4);
#pragma unroll
          for (int nt = 0; nt < 8; ++nt)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int col = c * 64 + nt * 8 + 2 * (lane_now % 4);
              if (i0 + 8 * half < seqlen_q && (C::kDqk == C::kDqkPad || col < C::kDqk)) {
                red_add2(gq + 8 * half * C::kDqk + nt * 8, dq[nt * 4 + half * 2],
                         dq[nt * 4 + half * 2 + 1]);
              }
            }
        }
      } else {
        dev::wgmma_wait<0>();
      }
      dev::fence_registers(dv_acc);
      dev::fence_registers(dk_acc);
      stage = wrap_stage(stage + 1);
      if (stage == 0) phase ^= 1u;
    }
    dev::cp_async_wait<0>();

    // The key-side operands' (b, h) offsets and the gates, recomputed / re-read: held across the
    // loop they spill at width 128 (255 registers).
    const int bh_e = dev::block_x_again();
    const int b_e = bh_e / p.heads, h_e = bh_e % p.heads;
    const index_t k_std_e = b_e * p.k_std.batch_stride + h_e * p.k_std.head_stride;
    const index_t q_low_e = b_e * p.q_low.batch_stride + h_e * p.q_low.head_stride;
    float dw_part[2] = {0.f, 0.f};
    constexpr int kSums = C::kDqkPad / 2;  // dk_acc's column-sum tile (rows lane / 4 and + 8)
    float col_sum[2] = {0.f, 0.f};
    if constexpr (C::Bias::kHasBias) {
      col_sum[0] = dk_acc[kSums];
      col_sum[1] = dk_acc[kSums + 2];
    }
    dkv_epilogue<C, true, true, C::kHeadDim / 8, C::kDqkPad / 8, true>(
        p, b_e, h_e, bh_e, n0, lane, key_row0, p.w_std ? p.w_std[h_e] : 1.f,
        p.w_rec ? p.w_rec[h_e] : 1.f, k_std_e, q_low_e, col_sum,
        reinterpret_cast<const float(&)[C::kHeadDim / 8][4]>(dv_acc),
        reinterpret_cast<const float(&)[C::kDqkPad / 8][4]>(dk_acc), dw_part);
    dkv_store_dw_partial<C::kWarps>(p, bh, n_block, tid, dw_part);
  }
};

/// Kernel body; grid (batch * heads, key blocks), key block 0 (the heaviest under a causal mask)
/// first. The generated shim supplies Config and the extern "C" entry point.
template <class Config>
__device__ __forceinline__ void bwd_dkv_wgmma(const BwdParams& p,
                                              const BwdTmaMaps* maps = nullptr) {
  extern __shared__ __align__(1024) char smem_raw[];
  char* smem = dev::swizzle_aligned(smem_raw);
  BwdDkvWgmmaKernel<Config> k{p, maps, smem, dev::smem_addr(smem)};
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32;
  k.lane = k.tid % 32;
  k.group = k.warp / 4;
  k.bh = static_cast<int>(blockIdx.x);
  k.b = k.bh / p.heads;
  k.h = k.bh % p.heads;
  k.n_block = static_cast<int>(blockIdx.y);
  k.n0 = k.n_block * Config::kBlockN;
  k.k_std_off = k.b * p.k_std.batch_stride + k.h * p.k_std.head_stride;
  k.q_low_off = k.b * p.q_low.batch_stride + k.h * p.q_low.head_stride;
  k.v_off = k.b * p.v.batch_stride + k.h * p.v.head_stride;
  k.run();
}

}  // namespace rajit::attn
