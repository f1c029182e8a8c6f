/// FwdParams: the forward kernel's one argument, shared by the host launcher and device code (S21).
// Plain C++ (no CUDA types) so tuner/ includes it without a CUDA include path. Strides are in
// elements; every last-dimension stride is 1 and therefore not stored.
#pragma once

namespace rajit::attn {

using index_t = long long;  // 64-bit offsets: B * H * T * D may pass 2^31

struct Operand2d {
  const void* ptr;
  index_t batch_stride;
  index_t head_stride;
  index_t row_stride;
};

struct FwdParams {
  Operand2d q_std;  // (Tq, Ds) per (b, h)
  Operand2d k_low;  // (Tq, R)  per (b, h); unused when R == 0
  Operand2d k_std;  // (Tk, Ds)
  Operand2d q_low;  // (Tk, R);  unused when R == 0
  Operand2d v;      // (Tk, Dv)
  void* o;          // (Tq, Dv) output, dtype of the inputs
  index_t o_batch_stride, o_head_stride, o_row_stride;
  float* lse;  // (B, H, Tq) fp32, contiguous; may be null
  const float* bias;  // beta[b?, h, j] fp32; null when the spec has no bias
  index_t bias_batch_stride, bias_head_stride;  // batch stride 0 = shared over the batch
  const float* w_std;  // (H) fp32 gates; null = all ones
  const float* w_rec;
  const float* w_disc;
  int batch, heads, seqlen_q, seqlen_k;
  float scale_log2;  // scale * log2(e) > 0: softmax runs in base 2 (Hopper kernels take the raw
                     // scores' maximum, which needs a positive scale)
  int num_m_blocks;
  // The TMA kernel's bias row (limits.cuh): the scaled bias of each CTA's first bias_row_keys
  // keys (a multiple of block_n) is kept in shared memory after the per-stage vectors; the
  // launch adds bias_row_keys * 4 bytes for it. 0 = every key tile's bias by TMA. Other kernels
  // ignore it.
  int bias_row_keys;
};

/// A TMA tensor map (CUtensorMap): 128 opaque bytes the driver encodes on the host
/// (cuTensorMapEncodeTiled) and the kernel reads as a __grid_constant__ parameter.
struct alignas(64) TmaMap {
  unsigned long long opaque[16];
};

/// The TMA forward's second argument: one map per operand it loads, 4-D (columns, rows, heads,
/// batches), and the bias as one 1-D fp32 array (a row starts at b * batch stride + h * head
/// stride). With folded operands q_std / k_std span d_std + r columns and k_low / q_low are
/// unused; q_std_tail / k_std_tail read 8-column groups of q_std / k_std where the tail of d_std
/// joins the low part (limits.cuh, tma_std_tail_groups). Unused maps are left zero.
struct FwdTmaMaps {
  TmaMap q_std, k_low, k_std, q_low, v, bias, q_std_tail, k_std_tail;
};

}  // namespace rajit::attn
