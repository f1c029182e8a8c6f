/// The RA forward kernel for Hopper (sm_90a): warpgroup MMA (wgmma) from 128-byte-swizzled tiles.
// One CTA owns kBlockM = 64 * kWarpGroups query rows of one (batch, head); each warpgroup owns 64
// of them and computes S = qf kf^T with wgmma (A = Q and B = K from shared memory), the online
// softmax in registers, and O += P V with wgmma (A = P from registers, B = V from shared memory,
// MN-major). Tiles arrive through the same kStages-deep cp.async pipeline as the mma.sync family,
// and RA's folded operands are gathered while loading, exactly as there: qf = [w_std q_std |
// w_rec k_low], kf = [k_std | q_low], the gates applied once to the staged Q tile, the bias one
// vector per key tile.
//
// Shared-memory tiles are stored in 64-column slices of 128-byte rows, each 8-row group swizzled
// (16-byte chunk c of row r lives at chunk c ^ (r % 8)); that is the layout wgmma's 128B-swizzle
// descriptors describe, and it keeps both the cp.async writes and the MMA reads free of bank
// conflicts.
#pragma once
#include "attention/limits.cuh"
#include "attention/params.cuh"
#include "attention/policies.cuh"
#include "attention/tile_copy.cuh"
#include "attention/wgmma_fwd_steps.cuh"
#include "common/ptx.cuh"
#include "common/wgmma.cuh"

namespace rajit::attn {

using dev::u32;

template <class Element_, int kDStd_, int kR_, int kHeadDim_, int kBlockM_, int kBlockN_,
          int kStages_, class Mask_, class Bias_>
struct WgmmaFwdConfig {
  using Element = Element_;
  using Mask = Mask_;
  using Bias = Bias_;
  static constexpr int kDStd = kDStd_, kR = kR_, kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr int kWarpGroups = kBlockM / 64;
  static constexpr int kWarps = kWarpGroups * 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kDqk = kDStd + kR;
  static constexpr int kDqkPad = padded_contraction(kDStd, kR);
  static constexpr int kCopyElems = copy_elems(kDStd, kR);
  static constexpr int kQkSlices = wgmma_slices(kDqkPad);
  static constexpr int kVSlices = wgmma_slices(kHeadDim);
  static constexpr int kQkSteps = kDqkPad / 16;  // k16 steps of Q K^T
  static constexpr int kPvSteps = kBlockN / 16;  // k16 steps of P V
  static constexpr int kSRegs = kBlockN / 2;     // S accumulators per thread (m64 x kBlockN)
  static constexpr int kORegs = kHeadDim / 2;    // O accumulators per thread (m64 x kHeadDim)
  // Shared memory, bytes, from a 1024-aligned base: [Q | O staging] [stage: K | V] ... [biases]
  static constexpr int kQBytes = kBlockM * kQkSlices * 128;
  static constexpr int kOBytes = kBlockM * kVSlices * 128;  // O staging, swizzled like Q
  static constexpr int kQoBytes = kQBytes > kOBytes ? kQBytes : kOBytes;
  static constexpr int kKBytes = kBlockN * kQkSlices * 128;
  static constexpr int kVBytes = kBlockN * kVSlices * 128;
  static constexpr int kStageBytes = kKBytes + kVBytes;
  static constexpr int kBiasOffset = kQoBytes + kStages * kStageBytes;  // kStages x kBlockN fp32
  static constexpr int kBiasBytes = round_up(kStages * kBlockN * 4 + 64, 1024);
  static constexpr int kSharedBytes = 1024 + kBiasOffset + kBiasBytes;
  // Two mbarriers per stage (landed, released) live in the last 64 bytes of the bias region.
  static constexpr int kBarrierOffset = kBiasOffset + kBiasBytes - 64;
  static_assert(kStages * kBlockN * 4 <= kBiasBytes - 64 && 16 * kStages <= 64,
                "no room for the stage barriers after the bias vectors");
  // Two CTAs per SM when their registers and shared memory allow it: the two CTAs' softmax and
  // MMA phases then overlap on the SM, which one CTA's lockstep warpgroups cannot do.
  static constexpr int kMinBlocksPerSm = wgmma_fwd_min_blocks(kDStd, kR, kHeadDim, kBlockN, kWarps,
                                                            kSharedBytes);
  // One CTA per SM: the warpgroups synchronise through per-stage mbarriers, so they may drift
  // up to a tile apart and one's softmax overlaps the other's MMAs. Two CTAs per SM: the other
  // CTA fills those gaps already, and a plain CTA barrier per tile measured 3.5% faster there
  // (docs/perf-notes.md, v3d).
  static constexpr bool kStageBarriers = kMinBlocksPerSm == 1;

  static_assert(check_spec(kDStd, kR, kHeadDim) == 0, "invalid RA spec");
  static_assert(check_wgmma_tile(kDStd, kR, kHeadDim, kBlockM, kBlockN, kWarps, kStages,
                                 1 << 30) == 0,
                "invalid wgmma tile shape");
  static_assert(kSharedBytes ==
                    wgmma_fwd_shared_bytes(kDStd, kR, kHeadDim, kBlockM, kBlockN, kStages),
                "limits.cuh and the kernel disagree on the shared-memory layout");
};

template <class Config>
struct WgmmaFwdKernel {
  using C = Config;
  using E = typename C::Element;
  using QTile = Sw128Tile<C::kBlockM>;  // (kBlockM, kDqkPad) qf, swizzled
  using KTile = Sw128Tile<C::kBlockN>;  // (kBlockN, kDqkPad) kf, swizzled
  using VTile = Sw128Tile<C::kBlockN>;  // (kBlockN, kHeadDim) v, swizzled
  static constexpr float kLog2e = 1.4426950408889634f;

  const FwdParams& p;
  char* smem;  // 1024-byte aligned
  u32 smem_s;  // the same, as a shared-window address: what the main loop uses (one register)
  int tid, warp, group, warp_in_group;
  // This CTA's bias row beta[b, h, :], set once. It is the same for every thread (uniform
  // registers); recomputing it per tile from the batch and head strides cost 6% of the kernel's
  // time (docs/perf-notes.md, v4c). The same for the key-side operands spills at 128 registers.
  const float* bias_row;  // lanes are read afresh where needed (dev::lane_id)
  int b, h, m0;
  index_t q_std_off, k_low_off, k_std_off, q_low_off, v_off;
  // Descriptors of this warpgroup's Q rows and of stage 0's K and V tiles; other k-steps and
  // stages are compile-time offsets (>> 4) added to these, so the MMA loop does no address math.
  // Only the 14-bit address fields are kept (the other fields are constants), to spare registers.
  u32 q_desc0, k_desc0, v_desc0;

  __device__ __forceinline__ char* stage_base(int stage) const {
    return smem + C::kQoBytes + stage * C::kStageBytes;
  }
  // Stage s's "landed" barrier (every thread's cp.async for the tile in it completed) and its
  // "released" barrier (every thread is done reading it).
  __device__ __forceinline__ u32 landed_barrier(int stage) const {
    return smem_s + C::kBarrierOffset + 8 * stage;
  }
  __device__ __forceinline__ u32 released_barrier(int stage) const {
    return smem_s + C::kBarrierOffset + 8 * (C::kStages + stage);
  }
  __device__ __forceinline__ u32 stage_bias(int stage) const {
    return smem_s + C::kBiasOffset + stage * C::kBlockN * 4;
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
    const u32 base = smem_s + C::kQoBytes + stage * C::kStageBytes;
    load_rows<KTile, C::kBlockN, C::kDStd, C::kR, C::kCopyElems, C::kThreads>(
        base, p.k_std, k_std_off, p.q_low, q_low_off, n0, p.seqlen_k, tid);
    load_rows<VTile, C::kBlockN, C::kHeadDim, 0, 8, C::kThreads>(base + C::kKBytes, p.v, v_off,
                                                                  p.v, v_off, n0, p.seqlen_k, tid);
    if constexpr (C::Bias::kHasBias) {  // 4-byte copies, no path test (see load_float_vectors)
      load_floats<C::kBlockN, C::kThreads>(stage_bias(stage), bias_row, n0, p.seqlen_k, tid);
    }
  }

  // Multiplies the staged query tile by its gates once, so the MMA sees qf directly.
  __device__ __forceinline__ void scale_query_by_gates() const {
    scale_by_gates<E, QTile, C::kBlockM, C::kDStd, C::kR, C::kThreads>(
        smem, p.w_std ? p.w_std[h] : 1.f, p.w_rec ? p.w_rec[h] : 1.f, tid);
  }

  // A descriptor's start-address field is (address >> 4) in its low 14 bits, and shared memory
  // stays below 2^18 bytes, so moving a descriptor by a byte offset is adding offset >> 4.
  __device__ static constexpr u32 qk_step(int ks, int slice_bytes) {
    return static_cast<u32>(((ks / 4) * slice_bytes + (ks % 4) * 32) >> 4);
  }
  __device__ static constexpr u32 stage_step(int stage) {
    return static_cast<u32>((stage * C::kStageBytes) >> 4);
  }
  __device__ __forceinline__ void init_descriptors() {
    const u32 base = smem_s;
    q_desc0 = static_cast<u32>(dev::sw128_descriptor(base + group * 64 * 128, 0, 0));
    k_desc0 = static_cast<u32>(dev::sw128_descriptor(base + C::kQoBytes, 0, 0));
    v_desc0 = static_cast<u32>(dev::sw128_descriptor(base + C::kQoBytes + C::kKBytes, 0, 0));
  }
  // The descriptor whose address field is `address_field` (no carry leaves the field: see above).
  __device__ __forceinline__ static unsigned long long kmajor_descriptor(u32 address_field) {
    return dev::sw128_descriptor(0, 16, 1024) | address_field;
  }
  __device__ __forceinline__ static unsigned long long v_descriptor(u32 address_field) {
    return dev::sw128_descriptor(0, VTile::kSliceBytes, 1024) | address_field;
  }

  __device__ __forceinline__ static int wrap_stage(int s) {
    return s >= C::kStages ? s - C::kStages : s;
  }
  // Makes tile `tile` (in stage `stage`) resident and starts loading tile + kStages - 2.
  __device__ __forceinline__ void advance_pipeline(int tile, int stage, int n_tiles) const {
    const int next = tile + C::kStages - 2;
    const int next_stage = wrap_stage(stage + C::kStages - 2);
    if constexpr (C::kStageBarriers) {
      // No CTA barrier: a warpgroup may run up to a tile ahead of the other.
      if (next < n_tiles) {
        const int st = next_stage;
        if (next >= C::kStages) {
          dev::mbarrier_wait(released_barrier(st), (next / C::kStages - 1) & 1);
        }
        load_kv(next, st);
        dev::cp_async_mbarrier_arrive(landed_barrier(st));
      }
      dev::mbarrier_wait(landed_barrier(stage), (tile / C::kStages) & 1);
      dev::fence_proxy_async_shared();
    } else {
      dev::cp_async_wait<C::kStages - 3>();  // tile `tile` (issued one iteration ahead) landed
      dev::fence_proxy_async_shared();       // our cp.async writes -> wgmma's proxy
      __syncthreads();  // every warpgroup landed its part and finished P V of tile-2
      if (next < n_tiles) load_kv(next, next_stage);
      dev::cp_async_commit();
    }
  }

  // S = qf kf^T for key tile `tile` (A = Q, B = K, both from shared memory).
  __device__ __forceinline__ void issue_qk(float (&s)[C::kSRegs], int stage) const {
    const u32 k_desc = k_desc0 + stage_step(stage);
#pragma unroll
    for (int ks = 0; ks < C::kQkSteps; ++ks) {
      dev::wgmma_ss<C::kBlockN, E>(s, kmajor_descriptor(q_desc0 + qk_step(ks, QTile::kSliceBytes)),
                                   kmajor_descriptor(k_desc + qk_step(ks, KTile::kSliceBytes)),
                                   ks > 0);
    }
  }

  // O += P V for key tile `tile` (A = P from registers, B = V from shared memory, MN-major).
  __device__ __forceinline__ void issue_pv(float (&o_acc)[C::kORegs], u32 (&pa)[C::kPvSteps][4],
                                           int stage) const {
    const u32 v_desc = v_desc0 + stage_step(stage);
#pragma unroll
    for (int kk = 0; kk < C::kPvSteps; ++kk) {
      dev::wgmma_rs<C::kHeadDim, E>(o_acc, pa[kk], v_descriptor(v_desc + (kk * 16 * 128 >> 4)), 1);
    }
  }

  // The softmax of key tile `tile` (wgmma_fwd_steps.cuh), its bias read from the stage's vector:
  // each pair is read from shared memory, scaled by w_disc * log2(e) and used for both rows, then
  // dies (no per-tile bias array held in registers).
  __device__ __forceinline__ void softmax(float (&s)[C::kSRegs], int tile, int stage, int warp_row0,
                                          int diag, float bias_log2, float (&row_max)[2],
                                          float (&row_sum)[2], float (&correction)[2]) const {
    const u32 bias_vector = C::Bias::kHasBias ? stage_bias(stage) : 0;
    const auto bias_pair = [&](int lane, int nt, float& b0, float& b1) {
      dev::lds_f32x2(bias_vector + 8 * (lane % 4) + nt * 32, b0, b1);
      b0 *= bias_log2;
      b1 *= bias_log2;
    };
    wgmma_fwd::softmax<C>(p, s, tile, warp_row0, diag, bias_pair, row_max, row_sum, correction);
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

    init_descriptors();
    if constexpr (C::Bias::kHasBias) {
      bias_row = p.bias + b * p.bias_batch_stride + h * p.bias_head_stride;
    }

    // Stage barriers, then the query tile and the first kStages - 2 key tiles; each iteration
    // then loads one tile ahead (see the loop).
    if (C::kStageBarriers && tid == 0) {
      for (int s = 0; s < C::kStages; ++s) {
        dev::mbarrier_init(landed_barrier(s), C::kThreads);
        dev::mbarrier_init(released_barrier(s), C::kThreads);
      }
    }
    load_folded<QTile, C::kBlockM>(smem, p.q_std, q_std_off, p.k_low, k_low_off, m0, seqlen_q);
    zero_pad<QTile, C::kBlockM>(smem);
    for (int s = 0; s < C::kStages; ++s) zero_pad<KTile, C::kBlockN>(stage_base(s));
    dev::cp_async_commit();  // group: the query tile
    __syncthreads();         // the barriers are initialised before anyone arrives on them
    for (int s = 0; s < C::kStages - 2; ++s) {
      if (s < n_tiles) {
        load_kv(s, s);
        if constexpr (C::kStageBarriers) dev::cp_async_mbarrier_arrive(landed_barrier(s));
      }
      dev::cp_async_commit();
    }
    dev::cp_async_wait<C::kStages - 2>();  // the query group is complete
    __syncthreads();
    scale_query_by_gates();
    dev::fence_proxy_async_shared();  // gated Q and the zeroed pads -> wgmma's proxy
    __syncthreads();

    float o_acc[C::kORegs];
#pragma unroll
    for (int i = 0; i < C::kORegs; ++i) o_acc[i] = 0.f;
    float row_max[2] = {-__int_as_float(0x7f800000), -__int_as_float(0x7f800000)};
    float row_sum[2] = {0.f, 0.f};
    const float bias_log2 = C::Bias::kHasBias ? (p.w_disc ? p.w_disc[h] : 1.f) * kLog2e : 0.f;
    const int warp_row0 = m0 + group * 64 + warp_in_group * 16;

    // Software pipeline inside each warpgroup: iteration `tile` issues S(tile) = qf kf^T and
    // O += P(tile-1) V(tile-1) back to back on the tensor cores, then runs the softmax of S(tile)
    // while the P V product is still in flight. Shared memory holds three key tiles: tile-1 (its V
    // is being read), tile (being multiplied) and tile+1 (loading).
    //
    // Tile 0 is peeled off so that the loop body issues both products unconditionally. With a
    // `tile > 0` branch around P V, the accumulators leave the branch through phi copies, and
    // ptxas must wait for every wgmma before copying them (it injects a warpgroup.arrive and a
    // full DEPBAR at the top of the softmax), which serialises the softmax with P V.
    float s[C::kSRegs];      // S of this tile, then its P (fp32)    // (64, kBlockN) per WG
    u32 pa[C::kPvSteps][4];  // P of the previous tile, as k16 A fragments (bf16/fp16)
    int stage = 0;  // tile % kStages, kept without a division
    if (n_tiles > 0) {
      advance_pipeline(0, 0, n_tiles);
      dev::wgmma_fence();
      issue_qk(s, 0);
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::fence_registers(s);
      float correction[2];
      softmax(s, 0, 0, warp_row0, diag, bias_log2, row_max, row_sum, correction);
      wgmma_fwd::pack_p<C>(pa, s);  // O is still zero: nothing to rescale
    }
    for (int tile = 1; tile < n_tiles; ++tile) {
      const int prev_stage = stage;
      stage = wrap_stage(stage + 1);
      advance_pipeline(tile, stage, n_tiles);
      dev::wgmma_fence();
      issue_qk(s, stage);
      dev::wgmma_commit();
      issue_pv(o_acc, pa, prev_stage);
      dev::wgmma_commit();
      dev::wgmma_wait<1>();  // S is ready; P V of tile-1 may still run
      dev::fence_registers(s);
      float correction[2];
      softmax(s, tile, stage, warp_row0, diag, bias_log2, row_max, row_sum, correction);
      // P V of tile-1 must be done before O is rescaled for this tile's new row maxima, and
      // before `pa` is overwritten: the in-flight wgmma reads its A fragments asynchronously.
      dev::wgmma_wait_all_after(row_sum[0], row_sum[1], smem_s + C::kBarrierOffset,
                                p.seqlen_q < 0);
      dev::fence_registers(o_acc);
      if (C::kStageBarriers) dev::mbarrier_arrive(released_barrier(prev_stage));
      wgmma_fwd::pack_p<C>(pa, s);
      wgmma_fwd::rescale_o<C>(o_acc, correction);
    }
    if (n_tiles > 0) {  // the last tile's P V
      dev::wgmma_fence();
      issue_pv(o_acc, pa, stage);  // the loop left `stage` at tile n_tiles - 1
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::fence_registers(o_acc);
    }
    dev::cp_async_wait<0>();
    __syncthreads();  // every warpgroup is done reading Q; O is staged where Q was

    wgmma_fwd::store_output<C>(p, o_acc, row_max, row_sum, smem_s, warp_row0, m0, b, h, tid);
  }
};

/// Kernel body; the generated shim supplies Config and the extern "C" entry point.
template <class Config>
__device__ __forceinline__ void fwd_wgmma(const FwdParams& p) {
  extern __shared__ __align__(1024) char smem_raw[];
  char* smem = dev::swizzle_aligned(smem_raw);
  // Heavy rows first: with a causal mask the last query blocks see the most keys.
  const int m_block = p.num_m_blocks - 1 - static_cast<int>(blockIdx.y);
  const int bh = static_cast<int>(blockIdx.x);
  WgmmaFwdKernel<Config> k{p, smem, dev::smem_addr(smem)};
  k.tid = static_cast<int>(threadIdx.x);
  k.warp = k.tid / 32;
  k.group = k.warp / 4;
  k.warp_in_group = k.warp % 4;
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
