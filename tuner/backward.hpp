/// rajit::backward(): every gradient of RA (ra-math.md "Backward") for one forward call's inputs.
#pragma once
#include <cuda.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "tuner/forward.hpp"

namespace rajit::tune {

/// A writable strided 4-D device tensor; same rules as TensorView (stride[3] == 1).
struct MutableTensorView {
  void* ptr = nullptr;
  std::array<long long, 4> shape{};
  std::array<long long, 4> stride{};
  TensorView as_const() const { return {ptr, shape, stride}; }
};

/// Everything one backward call needs: the forward inputs (as in ForwardArgs), the forward's O and
/// LSE, dO, and one output per gradient. Every output is overwritten (never accumulated into).
///
/// Aliased operands (full-rank reciprocity passes the same tensor as q_std and q_low): each
/// operand still gets its own gradient buffer; the caller adds the aliased ones (the Python layer
/// does this for the user).
struct BackwardArgs {
  gen::AttentionSpec spec;
  TensorView q_std, k_low, k_std, q_low, v;  ///< as ForwardArgs
  TensorView o;                              ///< the forward's output (B,H,Tq,Dv)
  TensorView d_o;                            ///< dLoss/dO (B,H,Tq,Dv)
  const float* lse = nullptr;                ///< the forward's LSE, (B,H,Tq) fp32 contiguous
  BiasView bias;                             ///< as ForwardArgs
  const float* w_std = nullptr;              ///< (H) fp32; null = all ones
  const float* w_rec = nullptr;
  const float* w_disc = nullptr;
  double scale = 0;  ///< 0 = 1 / sqrt(d_std + r); must equal the forward's

  // Gradients. Shapes mirror their operand; r == 0 ignores dk_low/dq_low.
  MutableTensorView dq_std, dk_low, dk_std, dq_low, dv;
  float* d_bias = nullptr;  ///< bias == column: same layout as `bias` (batch_stride 0 = shared over
                            ///< the batch, then the gradient is summed over the batch); else null
  long long d_bias_batch_stride = 0, d_bias_head_stride = 0;
  float* dw_std = nullptr;   ///< (H) fp32, optional (null = not wanted)
  float* dw_rec = nullptr;   ///< (H) fp32, optional; r > 0 only
  float* dw_disc = nullptr;  ///< (H) fp32, optional; bias == column only

  /// Scratch on the device of at least backward_workspace_bytes(*this) bytes, 256-byte aligned;
  /// null = rajit allocates it stream-ordered on `stream` and frees it after the kernels.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;

  /// Bitwise-identical gradients run to run (no floating-point atomics); costs some speed.
  bool deterministic = false;
  CUstream stream = nullptr;

  /// Pin the dK/dV kernel's tile (bench sweeps, tuning); default: the built-in preference list.
  /// Throws gen::SpecError from backward() if it is not valid for the spec and device.
  std::optional<gen::TileConfig> dkv_tile;
  std::optional<gen::TileConfig> dq_tile;  ///< likewise for the deterministic dQ kernel
};

/// Every problem with `args` visible without the GPU; empty when none. Same style as
/// check_forward_args (each line names the field and what is allowed).
std::vector<std::string> check_backward_args(const BackwardArgs& args);

/// Bytes of scratch backward() needs for these shapes and options (no GPU needed).
std::size_t backward_workspace_bytes(const BackwardArgs& args);

/// How the dK/dV kernel reads the streamed query side: `tile` is the chosen tile with its kind
/// after the TMA upgrade (a .wgmma tile becomes .tmafold or .tma where the tensors allow; mma.sync
/// tiles stay), `pack` whether the preprocess kernel packs separate q_std and k_low into folded
/// rows for it. Pure (no GPU): `cc` is the device's compute capability; reads RAJIT_TMA.
/// Throws: ArgumentError for a pinned TMA tile the tensors do not allow.
struct DkvReadPlan {
  gen::TileConfig tile;
  bool pack = false;
};
DkvReadPlan plan_dkv_reads(const BackwardArgs& args, gen::TileConfig tile, int cc);

struct BackwardRecord {
  std::vector<std::string> kernels;  ///< entry names, in launch order
  gen::TileConfig dkv_tile;          ///< the dK/dV kernel's tile
};

/// Computes every requested gradient on args.stream. Compiles on first use like forward().
/// Thread-safe. Asynchronous: returns once the kernels are enqueued.
/// Throws: gen::SpecError, ArgumentError (before anything launches), rt::CompileError,
/// rt::DriverError, rt::NoDriverError.
BackwardRecord backward(const BackwardArgs& args);

}  // namespace rajit::tune

namespace rajit {
using tune::backward;
using tune::BackwardArgs;
}  // namespace rajit
