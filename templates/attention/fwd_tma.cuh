/// The RA forward kernel for Hopper (sm_90a) with TMA loads: no copy work on the compute warps.
// Same warpgroup MMA, online softmax and software pipeline as fwd_wgmma.cuh; what differs is how
// tiles reach shared memory. One thread per CTA starts each stage's TMA boxes (K, V, the bias
// vector) on the stage's mbarrier, and every warp waits on it: the compute warps issue no copy
// and hold no copy address, which is what RA's gather cost the cp.async kernel.
//
// The folded rows need two layouts:
//  - folded operands (kFolded: q_low follows k_std in memory and k_low follows q_std, the
//    "folded" layout of ra-math.md): one box per 64 columns reads kf = [k_std | q_low] straight
//    into 128-byte-swizzled slices, exactly as a plain kernel reads K;
//  - separate operands: k_std fills the swizzled slices (columns past d_std are the box's
//    out-of-bounds fill, zeros) and q_low fills 8-column groups of 16-byte rows without swizzle
//    (wgmma's "interleave" layout, one box per group), one more k16 step of Q K^T. Where d_std
//    ends 8 columns into a k16 step (56, 120) its last 8 columns go to a group of their own before
//    q_low's, so they share that step instead of padding one (limits.cuh, tma_std_tail_groups).
// The bias, two ways:
//  - the bias row: every CTA reads the bias of its first FwdParams::bias_row_keys keys (all of
//    them when the launch's shared memory allows) once, while the query tile's TMA is in flight,
//    scales it by w_disc log2(e) and keeps it; those key tiles' softmax reads ready values (no
//    box, no multiply per tile: perf-notes v7). Where kBiasByMma, the row holds hi/lo pairs of
//    the element type in the score's units instead, and a k16 step of Q K^T adds them
//    (perf-notes v9);
//  - key tiles past the row: the tile's bias vector arrives with it by TMA into its stage and is
//    read and scaled after the wait for Q K^T.
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
          int kStages_, class Mask_, class Bias_, bool kFolded_>
struct TmaFwdConfig {
  using Element = Element_;
  using Mask = Mask_;
  using Bias = Bias_;
  static constexpr int kDStd = kDStd_, kR = kR_, kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr int kWarpGroups = kBlockM / 64;
  static constexpr int kWarps = kWarpGroups * 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr bool kFolded = kFolded_;
  static constexpr int kSwizzledCols = tma_swizzled_cols(kDStd, kR, kFolded);
  static constexpr int kStdSlices = wgmma_slices(kSwizzledCols);
  static constexpr int kVSlices = wgmma_slices(kHeadDim);
  static constexpr int kStdTailGroups = tma_std_tail_groups(kDStd, kR, kFolded);
  static constexpr int kLowOperandGroups = tma_low_operand_groups(kDStd, kR, kFolded);
  static constexpr int kLowGroups = tma_low_groups(kDStd, kR, kFolded);
  static constexpr int kStdSteps = tma_std_steps(kDStd, kR, kFolded);  // k16 steps over the slices
  static constexpr int kTailColumn = kStdSteps * 16;  // first column of the std tail group
  static constexpr int kLowSteps = kLowGroups / 2;     // k16 steps over the low part
  // The bias row's values added by the tensor cores: one more k16 step of Q K^T (bias_ones x the
  // row as an MN-major B operand) instead of per-tile shared loads of bias pairs, whose shared
  // wavefronts were the whole price of the bias at head_dim 128 (perf-notes v9), and of an add
  // per score before the row maximum, which the plain softmax no longer has (v11). Where Q K^T
  // has 4 or more k16 steps: at head_dim 64 (4 steps) the step is 1/8 more tensor work, and
  // issued ahead of the tile's barriers (issue_bias_step) it ran 3% faster than the loads at
  // (8,12,1024) and as fast at (4,16,4096) (perf-notes v11); with fewer steps it would be a
  // larger share.
  static constexpr bool kBiasByMma = Bias::kHasBias && kStdSteps + kLowSteps >= 4;
  // The value bias_ones holds, a power of two: 1 for bf16 (fp32's range); 256 for fp16, whose
  // hi/lo pairs then hold the row's values / 256, up to +-1.6e7 (the row clamps there: a score
  // that far below every other in its row weighs nothing either way) to within 2^-22 of the value
  // plus 2^-17 (half the lo parts' subnormal step, times 256).
  static constexpr float kBiasOne = Element::kIsBf16 ? 1.f : 256.f;
  // The largest hi part the row stores (2^100 for bf16, fp16's largest finite value): every pair
  // stays finite, since the bias step multiplies aliased pairs by zero.
  static constexpr float kBiasStoredMax = Element::kIsBf16 ? 1.2676506e30f : 65504.f;
  static constexpr int kPvSteps = kBlockN / 16;
  static constexpr int kSRegs = kBlockN / 2;
  static constexpr int kORegs = kHeadDim / 2;
  // Shared memory, bytes from a 1024-aligned base:
  // [Q std | Q low | (O staging aliases Q)] [stage: K std | K low | V] ... [mbarriers]
  // [bias: one vector per stage] [bias row: bias_row_keys fp32, sized by the launch]
  static constexpr int kQStdBytes = kBlockM * kStdSlices * 128;
  static constexpr int kQLowBytes = kLowGroups * kBlockM * 16;
  static constexpr int kOBytes = kBlockM * kVSlices * 128;
  static constexpr int kQoBytes =
      round_up(kQStdBytes + kQLowBytes > kOBytes ? kQStdBytes + kQLowBytes : kOBytes, 1024);
  static constexpr int kKStdBytes = kBlockN * kStdSlices * 128;
  static constexpr int kKLowBytes = round_up(kLowGroups * kBlockN * 16, 1024);
  static constexpr int kVBytes = kBlockN * kVSlices * 128;
  static constexpr int kStageBytes = kKStdBytes + kKLowBytes + kVBytes;
  static constexpr int kBarrierOffset = kQoBytes + kStages * kStageBytes;
  static constexpr int kBiasOffset = kBarrierOffset + kTmaBarrierBytes;
  static constexpr int kBiasBytes = Bias::kHasBias ? kStages * kBlockN * 4 : 0;
  static constexpr int kRowOffset = kBiasOffset + kBiasBytes;
  // + the launch's bias row, then kTmaBiasRowPadBytes the bias step may read past its end
  static constexpr int kSharedBytes =
      1024 + kRowOffset + (Bias::kHasBias ? kTmaBiasRowPadBytes : 0);
  // Bytes each stage's boxes deliver (out-of-bounds fill included, as TMA counts it), without
  // the bias vector of a tile past the bias row.
  static constexpr int kStageTxBytes = kKStdBytes + kLowOperandGroups * kBlockN * 16 + kVBytes;
  static constexpr int kQTxBytes = kQStdBytes + kLowOperandGroups * kBlockM * 16;
  static constexpr int kMinBlocksPerSm = tma_fwd_min_blocks(kHeadDim, kBlockN, kWarps,
                                                            kSharedBytes);
  // One CTA per SM: the warpgroups drift apart through "released" barriers per stage (the thread
  // that starts a stage's boxes waits for it); two CTAs per SM: a CTA barrier per tile.
  static constexpr bool kStageBarriers = kMinBlocksPerSm == 1;

  static_assert(check_spec(kDStd, kR, kHeadDim) == 0, "invalid RA spec");
  static_assert(check_tma_tile(kDStd, kR, kHeadDim, kBlockM, kBlockN, kWarps, kStages,
                               Bias::kHasBias, kFolded, 1 << 30) == 0,
                "invalid TMA tile shape");
  static_assert(kSharedBytes == tma_fwd_shared_bytes(kDStd, kR, kHeadDim, kBlockM, kBlockN,
                                                     kStages, Bias::kHasBias, kFolded),
                "limits.cuh and the kernel disagree on the shared-memory layout");
  static_assert(2 * kStages + 1 <= kTmaBarrierBytes / 8, "no room for the mbarriers");
  static_assert(kBiasOffset % 16 == 0 && kRowOffset % 16 == 0,
                "the bias areas take TMA boxes and 16-byte stores");
};

template <class Config>
struct TmaFwdKernel {
  using C = Config;
  using E = typename C::Element;

  const FwdParams& p;
  const FwdTmaMaps& maps;
  u32 smem_s;  // 1024-byte-aligned shared-window base
  int tid;
  int b, h, m0;
  int bias_off;  // b * bias_batch_stride + h * bias_head_stride: this CTA's bias row
  u32 bias_lane;  // this thread's first bias pair in stage 0 (its lane's two columns of n8 tile 0)
  // Address fields (>> 4) of this warpgroup's Q rows (standard and low part), of stage 0's K and
  // V and of the bias row (kBiasByMma); k-steps, stages and key tiles are offsets added to them.
  u32 q_desc0, q_low_desc0, k_desc0, v_desc0, bias_row_desc0;
  // The bias step's A operand (kBiasByMma): C::kBiasOne in columns 0 and 1 of every row, zeros
  // elsewhere (lanes 4i hold columns 0-1 in registers 0 and 1, m16n8k16 A layout). Set by run().
  u32 bias_ones[4];

  __device__ __forceinline__ u32 stage_base(int stage) const {
    return smem_s + C::kQoBytes + stage * C::kStageBytes;
  }
  __device__ __forceinline__ u32 landed_barrier(int stage) const {
    return smem_s + C::kBarrierOffset + 8 * stage;
  }
  __device__ __forceinline__ u32 released_barrier(int stage) const {
    return smem_s + C::kBarrierOffset + 8 * (C::kStages + stage);
  }
  __device__ __forceinline__ u32 query_barrier() const {
    return smem_s + C::kBarrierOffset + 8 * (2 * C::kStages);
  }
  // Key tiles whose bias is in the row; read from the parameter (constant bank, uniform
  // registers) where needed rather than held.
  __device__ __forceinline__ int row_tiles() const {
    return C::Bias::kHasBias ? p.bias_row_keys / C::kBlockN : 0;
  }
  __device__ __forceinline__ u32 stage_bias(int stage) const {
    return smem_s + C::kBiasOffset + stage * C::kBlockN * 4;
  }

  // Starts the boxes of key tile `tile` into `stage` (one thread); they complete on its landed
  // barrier, which expects their bytes. A tile past the bias row brings its bias vector.
  __device__ __forceinline__ void issue_kv(int tile, int stage) const {
    const bool bias_box = C::Bias::kHasBias && tile >= row_tiles();
    const int n0 = tile * C::kBlockN;
    const u32 base = stage_base(stage);
    const u32 bar = landed_barrier(stage);
    dev::mbarrier_arrive_expect_tx(bar, C::kStageTxBytes + (bias_box ? C::kBlockN * 4 : 0));
#pragma unroll
    for (int s = 0; s < C::kStdSlices; ++s) {
      dev::tma_load_4d(base + s * C::kBlockN * 128, &maps.k_std, bar, 64 * s, n0, h, b);
    }
    issue_low_groups<C::kBlockN>(base + C::kKStdBytes, maps.k_std_tail, maps.q_low, bar, n0);
    const u32 v = base + C::kKStdBytes + C::kKLowBytes;
#pragma unroll
    for (int s = 0; s < C::kVSlices; ++s) {
      dev::tma_load_4d(v + s * C::kBlockN * 128, &maps.v, bar, 64 * s, n0, h, b);
    }
    if (bias_box) dev::tma_load_2d(stage_bias(stage), &maps.bias, bar, bias_off + n0, 0);
  }

  // The query tile by TMA (one thread): standard slices, the q_std tail group, k_low groups.
  __device__ __forceinline__ void issue_query() const {
    const u32 bar = query_barrier();
    dev::mbarrier_arrive_expect_tx(bar, C::kQTxBytes);
#pragma unroll
    for (int s = 0; s < C::kStdSlices; ++s) {
      dev::tma_load_4d(smem_s + s * C::kBlockM * 128, &maps.q_std, bar, 64 * s, m0, h, b);
    }
    issue_low_groups<C::kBlockM>(smem_s + C::kQStdBytes, maps.q_std_tail, maps.k_low, bar, m0);
  }
  // The low part's 8-column groups of `kRows` rows from row0 (separate operands): the std
  // operand's tail group, if any, then the low operand's groups.
  template <int kRows>
  __device__ __forceinline__ void issue_low_groups(u32 low, const TmaMap& std_tail,
                                                   const TmaMap& low_operand, u32 bar,
                                                   int row0) const {
#pragma unroll
    for (int g = 0; g < C::kStdTailGroups; ++g) {
      dev::tma_load_4d(low + g * kRows * 16, &std_tail, bar, C::kTailColumn + 8 * g, row0, h, b);
    }
#pragma unroll
    for (int g = C::kStdTailGroups; g < C::kLowOperandGroups; ++g) {
      dev::tma_load_4d(low + g * kRows * 16, &low_operand, bar, 8 * (g - C::kStdTailGroups),
                       row0, h, b);
    }
  }
  // Groups of the low part that no box writes (padding to a whole k16 step) are zero on both
  // sides: zeros on one side only would let stale NaN bit patterns through (0 * NaN = NaN).
  __device__ __forceinline__ void zero_padding_groups() const {
    char* const base = dev::shared_to_generic(smem_s);
#pragma unroll
    for (int g = C::kLowOperandGroups; g < C::kLowGroups; ++g) {
      for (int row = tid; row < C::kBlockM; row += C::kThreads) {
        *reinterpret_cast<uint4*>(base + C::kQStdBytes + (g * C::kBlockM + row) * 16) =
            make_uint4(0, 0, 0, 0);
      }
      for (int i = tid; i < C::kStages * C::kBlockN; i += C::kThreads) {
        const int stage = i / C::kBlockN, row = i % C::kBlockN;
        *reinterpret_cast<uint4*>(base + C::kQoBytes + stage * C::kStageBytes + C::kKStdBytes +
                                  (g * C::kBlockN + row) * 16) = make_uint4(0, 0, 0, 0);
      }
    }
  }
  // Multiplies the staged query tile by its gates once (w_std on q_std and its tail group, w_rec
  // on k_low).
  __device__ __forceinline__ void scale_query_by_gates(float w_std, float w_rec) const {
    char* const base = dev::shared_to_generic(smem_s);
    if constexpr (C::kFolded) {  // both in the swizzled slices
      scale_by_gates<E, Sw128Tile<C::kBlockM>, C::kBlockM, C::kDStd, C::kR, C::kThreads>(
          base, w_std, w_rec, tid);
      return;
    }
    if (w_std != 1.f) {  // pad columns are zeros
      scale_chunks<E, C::kQStdBytes / 16 + C::kStdTailGroups * C::kBlockM, C::kThreads>(
          base, w_std, tid);
    }
    if (C::kLowOperandGroups > C::kStdTailGroups && w_rec != 1.f) {
      scale_chunks<E, (C::kLowOperandGroups - C::kStdTailGroups) * C::kBlockM, C::kThreads>(
          base + C::kQStdBytes + C::kStdTailGroups * C::kBlockM * 16, w_rec, tid);
    }
  }

  __device__ static constexpr u32 std_step(int ks, int slice_bytes) {
    return static_cast<u32>(((ks / 4) * slice_bytes + (ks % 4) * 32) >> 4);
  }
  __device__ static constexpr u32 stage_step(int stage) {
    return static_cast<u32>((stage * C::kStageBytes) >> 4);
  }
  __device__ __forceinline__ static unsigned long long kmajor_descriptor(u32 address_field) {
    return dev::sw128_descriptor(0, 16, 1024) | address_field;
  }
  __device__ __forceinline__ static unsigned long long v_descriptor(u32 address_field) {
    return dev::sw128_descriptor(0, C::kBlockN * 128, 1024) | address_field;
  }
  // Low part: k16 step j covers groups 2j and 2j + 1 (`rows` * 16 bytes apart in K); 8-row core
  // matrices are 128 bytes apart in M/N.
  template <int kRows>
  __device__ __forceinline__ static unsigned long long low_descriptor(u32 address_field) {
    return dev::interleave_descriptor(0, kRows * 16, 128) | address_field;
  }

  __device__ __forceinline__ static int wrap_stage(int s) {
    return s >= C::kStages ? s - C::kStages : s;
  }
  // Makes tile `tile` (in `stage`) resident and starts tile + kStages - 2.
  __device__ __forceinline__ void advance_pipeline(int tile, int stage, int n_tiles) const {
    const int next = tile + C::kStages - 2;
    const int next_stage = wrap_stage(stage + C::kStages - 2);
    if constexpr (C::kStageBarriers) {
      if (next < n_tiles && tid < 32) {  // warp 0 waits for the stage, one lane starts it
        if (next >= C::kStages) {
          dev::mbarrier_wait(released_barrier(next_stage), (next / C::kStages - 1) & 1);
        }
        __syncwarp();
        dev::as_tma_issuer(tid, [&] { issue_kv(next, next_stage); });
      }
      __syncwarp();  // wgmma needs the warp converged again
    } else {
      __syncthreads();  // every warpgroup finished P V of tile - 2: its stage is free
      if (next < n_tiles) dev::as_tma_issuer(tid, [&] { issue_kv(next, next_stage); });
      __syncwarp();
    }
    dev::mbarrier_wait(landed_barrier(stage), (tile / C::kStages) & 1);
  }

  // The bias row as the B operand of a k16 step (kBiasByMma): MN-major without swizzle, so an
  // 8-key group's core matrix is 8 K-rows of 16 bytes (8 keys each), groups 32 bytes apart
  // (stride offset) and the second 8 K-rows 16 bytes on (leading offset). Group g is stored as
  // [hi of keys 8g..8g+7][lo of the same keys], so K-rows 0 and 1 are the keys' hi and lo parts
  // and rows 2-15 alias the next groups' (finite values that bias_ones' zeros cancel). 4 bytes
  // per key, as the fp32 row took.
  __device__ __forceinline__ static unsigned long long bias_row_descriptor(u32 address_field) {
    return dev::interleave_descriptor(0, 16, 32) | address_field;
  }
  // S = key tile `tile`'s values of the bias row (one k16 step: bias_ones x the row). It reads no
  // stage, so it goes ahead of the tile's Q K^T, which accumulates onto it: where two CTAs share
  // an SM in its own commit group before the tile's CTA barrier and stage wait, so it runs while
  // the warpgroup waits there; with stage barriers (one CTA per SM) first in the Q K^T group.
  // Either beat the step after Q K^T, on the path from Q K^T to the softmax (perf-notes v11b).
  __device__ __forceinline__ void issue_bias_step(float (&s)[C::kSRegs], int tile) const {
    const u32 tile_field = static_cast<u32>(tile) * ((C::kBlockN * 4) >> 4);
    dev::wgmma_rs<C::kBlockN, E>(s, bias_ones, bias_row_descriptor(bias_row_desc0 + tile_field),
                                 0);
  }
  // S (+)= Q K^T of the tile in `stage`: onto S where kOntoBias (the bias step's result),
  // otherwise overwriting it.
  template <bool kOntoBias = false>
  __device__ __forceinline__ void issue_qk(float (&s)[C::kSRegs], int stage) const {
    const u32 k_desc = k_desc0 + stage_step(stage);
#pragma unroll
    for (int ks = 0; ks < C::kStdSteps; ++ks) {
      dev::wgmma_ss<C::kBlockN, E>(s, kmajor_descriptor(q_desc0 + std_step(ks, C::kBlockM * 128)),
                                   kmajor_descriptor(k_desc + std_step(ks, C::kBlockN * 128)),
                                   kOntoBias || ks > 0);
    }
    const u32 q_low = q_low_desc0;
    const u32 k_low = k_desc + (C::kKStdBytes >> 4);
#pragma unroll
    for (int j = 0; j < C::kLowSteps; ++j) {
      dev::wgmma_ss<C::kBlockN, E>(
          s, low_descriptor<C::kBlockM>(q_low + ((j * 2 * C::kBlockM * 16) >> 4)),
          low_descriptor<C::kBlockN>(k_low + ((j * 2 * C::kBlockN * 16) >> 4)),
          kOntoBias || C::kStdSteps > 0 || j > 0);
    }
  }

  __device__ __forceinline__ void issue_pv(float (&o_acc)[C::kORegs], u32 (&pa)[C::kPvSteps][4],
                                           int stage) const {
    const u32 v_desc = v_desc0 + stage_step(stage);
#pragma unroll
    for (int kk = 0; kk < C::kPvSteps; ++kk) {
      dev::wgmma_rs<C::kHeadDim, E>(o_acc, pa[kk], v_descriptor(v_desc + (kk * 16 * 128 >> 4)), 1);
    }
  }

  static constexpr int kBiasRegs = C::Bias::kHasBias ? C::kBlockN / 4 : 1;
  // This thread's bias columns of key tile `tile` (2 per n8 tile), times w_disc log2(e): ready in
  // the bias row, or from the tile's stage and scaled here. Read after the wait for Q K^T, not
  // while the products are issued: ptxas interleaves independent instructions with the HGMMAs,
  // and the multiplies waiting on these loads then held back the last Q K^T step and P V
  // (perf-notes v5c).
  template <bool kBiasRow>
  __device__ __forceinline__ void load_bias(float (&bias)[kBiasRegs], int tile, int stage,
                                            float bias_log2) const {
    static_assert(!(kBiasRow && C::kBiasByMma),
                  "a kBiasByMma row holds hi/lo pairs for the bias step, not fp32 values");
    if constexpr (C::Bias::kHasBias) {
      constexpr u32 kRowFromStage0 = C::kRowOffset - C::kBiasOffset;
      const u32 base = kBiasRow ? bias_lane + kRowFromStage0 + tile * C::kBlockN * 4
                                : bias_lane + stage * C::kBlockN * 4;
#pragma unroll
      for (int nt = 0; nt < C::kBlockN / 8; ++nt) {
        dev::lds_f32x2(base + nt * 32, bias[2 * nt], bias[2 * nt + 1]);
      }
      if constexpr (!kBiasRow) {
#pragma unroll
        for (int i = 0; i < kBiasRegs; ++i) bias[i] *= bias_log2;
      }
    }
  }
  // The bias row: this CTA's bias for keys [0, n_keys), times w_disc log2(e), by every thread
  // while the query tile's TMA is in flight (published by the barrier after the gate pass). Keys
  // past seqlen_k hold 0; their scores are masked. Whole float4s are read where all four keys
  // exist and the row starts on 16 bytes; rows that do not (T not a multiple of 4) are read by
  // single floats, and only where the row holds every key (no TMA box reads them).
  // Returns w_disc log2(e). The gate is read after the first batch of bias loads is issued:
  // ptxas puts a loop-invariant product ahead of the loop, and waiting there for the gate held
  // back every load of the row (perf-notes v8).
  //
  // kBiasByMma: the row holds each key's bias times w_disc / scale (the score's units before the
  // softmax scale), over C::kBiasOne, as a hi/lo pair in bias_row_descriptor's layout, clamped
  // so that every hi part is within +-C::kBiasStoredMax (the bias step multiplies aliased pairs by
  // zero), and the kTmaBiasRowPadBytes after the row hold zeros.
  __device__ __forceinline__ float fill_bias_row(int n_keys) const {
    const float* src = p.bias + bias_off;
    const int seqlen_k = p.seqlen_k;
    const bool vectors = (reinterpret_cast<unsigned long long>(src) & 15) == 0;
    float* dst = reinterpret_cast<float*>(dev::shared_to_generic(smem_s + C::kRowOffset));
    constexpr int kUnroll = 4;  // loads in flight per thread before its first store
    constexpr int kStride = C::kThreads * 4;
    float4 v[kUnroll];
    const auto load_batch = [&](int i0) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = i0 + u * kStride;
        v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n_keys) {
          if (vectors && i + 3 < seqlen_k) {
            v[u] = __ldg(reinterpret_cast<const float4*>(src + i));
          } else {
            if (i < seqlen_k) v[u].x = __ldg(src + i);
            if (i + 1 < seqlen_k) v[u].y = __ldg(src + i + 1);
            if (i + 2 < seqlen_k) v[u].z = __ldg(src + i + 2);
            if (i + 3 < seqlen_k) v[u].w = __ldg(src + i + 3);
          }
        }
      }
    };
    const auto store_batch = [&](int i0, float row_scale) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = i0 + u * kStride;
        if (i < n_keys) {
          const float4 x = make_float4(v[u].x * row_scale, v[u].y * row_scale,
                                       v[u].z * row_scale, v[u].w * row_scale);
          if constexpr (C::kBiasByMma) {
            store_hi_lo(reinterpret_cast<char*>(dst) + 32 * (i / 8) + 2 * (i % 8), x);
          } else {
            *reinterpret_cast<float4*>(dst + i) = x;
          }
        }
      }
    };
    int i0 = tid * 4;
    load_batch(i0);
    const float bias_log2 = load_gate(p.w_disc) * 1.4426950408889634f;
    const float row_scale = C::kBiasByMma ? bias_log2 / (p.scale_log2 * C::kBiasOne) : bias_log2;
    store_batch(i0, row_scale);
    for (i0 += kStride * kUnroll; i0 < n_keys; i0 += kStride * kUnroll) {
      load_batch(i0);
      store_batch(i0, row_scale);
    }
    if constexpr (C::kBiasByMma) {
      if (tid < kTmaBiasRowPadBytes / 16) {
        reinterpret_cast<uint4*>(dst + n_keys)[tid] = make_uint4(0, 0, 0, 0);
      }
    }
    return bias_log2;
  }
  // Four consecutive keys' values (already over C::kBiasOne) as hi/lo pairs of the element type,
  // clamped: hi parts at `at`, lo parts 16 bytes on.
  __device__ __forceinline__ static void store_hi_lo(char* at, float4 x) {
    constexpr float kBig = C::kBiasStoredMax;
    x.x = fminf(fmaxf(x.x, -kBig), kBig);
    x.y = fminf(fmaxf(x.y, -kBig), kBig);
    x.z = fminf(fmaxf(x.z, -kBig), kBig);
    x.w = fminf(fmaxf(x.w, -kBig), kBig);
    const u32 hi01 = E::pack(x.x, x.y), hi23 = E::pack(x.z, x.w);
    const u32 lo01 = E::pack(x.x - E::lo(hi01), x.y - E::hi(hi01));
    const u32 lo23 = E::pack(x.z - E::lo(hi23), x.w - E::hi(hi23));
    *reinterpret_cast<uint2*>(at) = make_uint2(hi01, hi23);
    *reinterpret_cast<uint2*>(at + 16) = make_uint2(lo01, lo23);
  }
  // The softmax of one key tile (wgmma_fwd_steps.cuh) with this tile's preloaded bias pairs
  // (kAddBias) or with its bias already in S.
  template <bool kAddBias>
  __device__ __forceinline__ void softmax(float (&s)[C::kSRegs], const float (&bias)[kBiasRegs],
                                          int tile, int warp_row0, int diag, float (&row_max)[2],
                                          float (&row_sum)[2], float (&correction)[2]) const {
    const auto bias_pair = [&](int, int nt, float& b0, float& b1) {
      b0 = bias[2 * nt];
      b1 = bias[2 * nt + 1];
    };
    wgmma_fwd::softmax<C, kAddBias && C::Bias::kHasBias>(p, s, tile, warp_row0, diag, bias_pair,
                                                         row_max, row_sum, correction);
  }

  // Whether a key tile's bias comes with Q K^T (the bias step): a tile of the bias row in a
  // kBiasByMma kernel.
  __device__ static constexpr bool bias_step(bool from_row) { return from_row && C::kBiasByMma; }

  // Whether a row tile's bias step goes ahead of its barriers, in a commit group of its own
  // (start_scores).
  __device__ static constexpr bool bias_step_early(bool from_row) {
    return bias_step(from_row) && !C::kStageBarriers;
  }
  // Starts key tile `tile`'s S (in `stage`) as one commit group, the tile made resident first:
  // the bias step where kFromRow (ahead of the barriers in a group of its own, or first in the
  // Q K^T group; bias_step_early), then Q K^T onto it or alone.
  template <bool kFromRow>
  __device__ __forceinline__ void start_scores(float (&s)[C::kSRegs], int tile, int stage,
                                               int n_tiles) const {
    constexpr bool kBiasStep = bias_step(kFromRow);
    constexpr bool kStepEarly = bias_step_early(kFromRow);
    if constexpr (kStepEarly) {
      dev::wgmma_fence();
      issue_bias_step(s, tile);
      dev::wgmma_commit();
    }
    advance_pipeline(tile, stage, n_tiles);
    dev::wgmma_fence();
    if constexpr (kBiasStep && !kStepEarly) issue_bias_step(s, tile);
    issue_qk<kBiasStep>(s, stage);
    dev::wgmma_commit();
  }

  // This head's gate from a per-head array; null = all ones.
  __device__ __forceinline__ float load_gate(const float* gates) const {
    return gates ? gates[h] : 1.f;
  }

  __device__ void run() {
    // The gates first: their global loads then overlap the barrier setup and the query tile's
    // TMA instead of starting after its wait. Only the ones the spec uses (a plain kernel loads
    // w_std alone, as before); w_disc is read by fill_bias_row.
    const float w_std = load_gate(p.w_std);
    const float w_rec = C::kR > 0 ? load_gate(p.w_rec) : 1.f;
    const int seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
    const int diag = seqlen_k - seqlen_q;
    int n_end = seqlen_k;
    if constexpr (C::Mask::kCausal) {
      const int last_visible = m0 + C::kBlockM - 1 + diag;
      n_end = last_visible + 1 < seqlen_k ? last_visible + 1 : seqlen_k;
    }
    const int n_tiles = n_end > 0 ? (n_end + C::kBlockN - 1) / C::kBlockN : 0;
    // Key tiles [0, row_end) read the bias row, [row_end, n_tiles) their stage's vector.
    const int row_end = row_tiles() < n_tiles ? row_tiles() : n_tiles;
    const int group = tid / 128;
    q_desc0 = static_cast<u32>(dev::sw128_descriptor(smem_s + group * 64 * 128, 0, 0));
    q_low_desc0 = static_cast<u32>(
        dev::interleave_descriptor(smem_s + C::kQStdBytes + group * 64 * 16, 0, 0));
    k_desc0 = static_cast<u32>(dev::sw128_descriptor(smem_s + C::kQoBytes, 0, 0));
    v_desc0 = static_cast<u32>(
        dev::sw128_descriptor(smem_s + C::kQoBytes + C::kKStdBytes + C::kKLowBytes, 0, 0));
    bias_row_desc0 = static_cast<u32>(dev::interleave_descriptor(smem_s + C::kRowOffset, 0, 0));

    if constexpr (C::kBiasByMma) {
      const u32 ones = dev::lane_id() % 4 == 0 ? E::pack(C::kBiasOne, C::kBiasOne) : 0u;
      bias_ones[0] = ones;
      bias_ones[1] = ones;
      bias_ones[2] = 0u;
      bias_ones[3] = 0u;
    }
    if (tid == 0) {
      for (int s = 0; s < C::kStages; ++s) {
        dev::mbarrier_init(landed_barrier(s), 1);
        dev::mbarrier_init(released_barrier(s), C::kThreads);
      }
      dev::mbarrier_init(query_barrier(), 1);
      dev::fence_mbarrier_init();
    }
    zero_padding_groups();
    __syncthreads();  // barriers initialised; constant groups written before any box lands
    dev::as_tma_issuer(tid, [&] {
      issue_query();
      for (int s = 0; s < C::kStages - 2 && s < n_tiles; ++s) issue_kv(s, s);
    });
    // w_disc's product is formed in the fill, after the boxes are started and the row's loads
    // issued: waiting for the gate's load must hold back neither (perf-notes v8).
    const float bias_log2 = C::Bias::kHasBias ? fill_bias_row(row_end * C::kBlockN) : 0.f;
    dev::mbarrier_wait(query_barrier(), 0);
    scale_query_by_gates(w_std, w_rec);
    dev::fence_proxy_async_shared();  // gated Q, ones and zeros -> wgmma's proxy
    __syncthreads();

    float o_acc[C::kORegs];
#pragma unroll
    for (int i = 0; i < C::kORegs; ++i) o_acc[i] = 0.f;
    float row_max[2] = {-__int_as_float(0x7f800000), -__int_as_float(0x7f800000)};
    float row_sum[2] = {0.f, 0.f};
    const int warp_row0 = m0 + (tid / 32) * 16;
    float bias[kBiasRegs];

    float s[C::kSRegs];
    u32 pa[C::kPvSteps][4];
    int stage = 0;
    // The first key tile: Q K^T alone. The others: Q K^T of this tile issued with P V of the
    // previous one, the softmax overlapping P V. One copy of each per source of the bias.
    const auto first_tile = [&](auto from_row) {
      constexpr bool kBiasStep = bias_step(decltype(from_row)::value);
      start_scores<decltype(from_row)::value>(s, 0, 0, n_tiles);
      dev::wgmma_wait<0>();
      dev::fence_registers(s);
      if constexpr (!kBiasStep) load_bias<decltype(from_row)::value>(bias, 0, 0, bias_log2);
      float correction[2];
      softmax<!kBiasStep>(s, bias, 0, warp_row0, diag, row_max, row_sum, correction);
      wgmma_fwd::pack_p<C>(pa, s);
    };
    const auto next_tile = [&](auto from_row, int tile) {
      constexpr bool kBiasStep = bias_step(decltype(from_row)::value);
      const int prev_stage = stage;
      stage = wrap_stage(stage + 1);
      start_scores<decltype(from_row)::value>(s, tile, stage, n_tiles);
      issue_pv(o_acc, pa, prev_stage);
      dev::wgmma_commit();
      dev::wgmma_wait<1>();
      dev::fence_registers(s);
      if constexpr (!kBiasStep) load_bias<decltype(from_row)::value>(bias, tile, stage, bias_log2);
      float correction[2];
      softmax<!kBiasStep>(s, bias, tile, warp_row0, diag, row_max, row_sum, correction);
      dev::wgmma_wait_all_after(row_sum[0], row_sum[1], smem_s + C::kBarrierOffset,
                                p.seqlen_q < 0);
      dev::fence_registers(o_acc);
      if (C::kStageBarriers) dev::mbarrier_arrive(released_barrier(prev_stage));
      wgmma_fwd::pack_p<C>(pa, s);
      wgmma_fwd::rescale_o<C>(o_acc, correction);
    };
    using FromRow = dev::BoolConstant<true>;
    using FromStage = dev::BoolConstant<false>;
    int tile = 1;
    if (C::Bias::kHasBias && row_end > 0) {
      if constexpr (C::Bias::kHasBias) {  // no copies of the loop for the row without a bias
        first_tile(FromRow{});
        for (; tile < row_end; ++tile) next_tile(FromRow{}, tile);
      }
    } else if (n_tiles > 0) {
      first_tile(FromStage{});
    }
    for (; tile < n_tiles; ++tile) next_tile(FromStage{}, tile);
    if (n_tiles > 0) {
      dev::wgmma_fence();
      issue_pv(o_acc, pa, stage);
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      dev::fence_registers(o_acc);
    }
    __syncthreads();  // every warpgroup is done reading Q; O is staged where Q was

    wgmma_fwd::store_output<C>(p, o_acc, row_max, row_sum, smem_s, warp_row0, m0, b, h, tid);
  }
};

/// Kernel body; the generated shim supplies Config and the extern "C" entry point.
template <class Config>
__device__ __forceinline__ void fwd_tma(const FwdParams& p, const FwdTmaMaps& maps) {
  extern __shared__ __align__(1024) char smem_raw[];
  char* smem = dev::swizzle_aligned(smem_raw);
  const int m_block = p.num_m_blocks - 1 - static_cast<int>(blockIdx.y);
  const int bh = static_cast<int>(blockIdx.x);
  TmaFwdKernel<Config> k{p, maps, dev::smem_addr(smem)};
  k.tid = static_cast<int>(threadIdx.x);
  k.b = bh / p.heads;
  k.h = bh % p.heads;
  k.bias_off = static_cast<int>(k.b * p.bias_batch_stride + k.h * p.bias_head_stride);
  k.bias_lane = k.stage_bias(0) + 8 * (dev::lane_id() % 4);
  k.m0 = m_block * Config::kBlockM;
  k.run();
}

}  // namespace rajit::attn
