/// BwdParams: the one argument of every backward kernel, shared by tuner/backward.cpp and device code.
// Plain C++ (no CUDA types), like params.cuh (S21). Strides are in elements; every last-dimension
// stride is 1. The fp32 workspace pointers are carved out of BackwardArgs::workspace by the host.
#pragma once
#include "attention/params.cuh"

namespace rajit::attn {

struct OutOperand2d {  // a writable (rows, width) gradient view per (b, h)
  void* ptr;
  index_t batch_stride;
  index_t head_stride;
  index_t row_stride;
};

struct BwdParams {
  Operand2d q_std, k_low, k_std, q_low, v;  // forward inputs (ra-math.md operands)
  Operand2d o, d_o;                          // (Tq, Dv) forward output and its gradient
  const float* lse;                          // (B, H, Tq) fp32 from the forward
  const float* bias;                         // beta[b?, h, j]; null without a bias
  index_t bias_batch_stride, bias_head_stride;
  const float* w_std;  // (H) gates; null = all ones
  const float* w_rec;
  const float* w_disc;

  OutOperand2d dq_std, dk_low, dk_std, dq_low, dv;  // gradients, dtype of the inputs
  float* d_bias;  // same layout as bias, strides below; null = not wanted
  index_t d_bias_batch_stride, d_bias_head_stride;
  float* dw_std;  // (H); null = not wanted
  float* dw_rec;
  float* dw_disc;

  // Workspace (fp32 unless noted). lse_log2 and delta: (B, H, Tq); col_sums g: (B, H, Tk); gq: (B, H, Tq, Ds+R)
  // (atomic mode only); dw_partial: (B, H, key blocks, 2).
  float* lse_log2;
  float* delta;
  float* col_sums;
  float* gq;
  float* dw_partial;
  // (B, H, Tq, Ds+R) rows [q_std | k_low] that the preprocess kernel writes when not null: the
  // separate query-side tensors packed into folded rows, so that the dK/dV kernel reads one
  // TMA box per 64 columns (docs/perf-notes.md, backward v5).
  void* q_packed;

  int batch, heads, seqlen_q, seqlen_k;
  float scale;       // softmax scale (not pre-multiplied by log2 e)
  float scale_log2;  // scale * log2(e)
  int num_n_blocks;  // key blocks of the dK/dV kernel (dw_partial's third dimension)
  int num_m_blocks;  // query blocks of the dQ kernel
  int gq_gated;      // 1: gq already carries the gates (atomic path); 0: multiply by them
};

/// The TMA dK/dV kernel's second argument: 4-D (columns, rows, heads, batches) maps of the
/// streamed query-side tiles. `q` spans the folded row [q_std | k_low] (k_low stored right after
/// q_std), `d_o` the gradient of the output.
struct BwdTmaMaps {
  TmaMap q, d_o;
};

}  // namespace rajit::attn
