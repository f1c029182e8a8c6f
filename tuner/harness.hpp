/// Builds random inputs for a spec and shape, runs rajit::forward on the GPU and checks it against
/// the float64 reference; shared by `rajit run`, `rajit bench` and the gpu test tier.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/heuristic.hpp"

namespace rajit::tune {

/// How the four query/key operands sit in memory (ra-math.md's layouts; never copied).
enum class Layout {
  kSeparate,  ///< five contiguous (B,H,T,width) tensors
  kStrided,   ///< (B,T,H,width) tensors: head-interleaved rows, as a projection emits them
  kPaired,    ///< Q=[Q_std|Q_low], K=[K_std|K_low] as (B,T,H,Ds+R); needs Tq == Tk
  kFolded,    ///< Qf=[Q_std|K_low] (B,T,H,Ds+R), Kf=[K_std|Q_low] (B,T,H,Ds+R)
};
std::string_view to_string(Layout);
Layout parse_layout(std::string_view);  ///< Throws: gen::SpecError

struct CheckOptions {
  gen::AttentionSpec spec;
  Shape shape;
  Layout layout = Layout::kSeparate;
  bool bias_per_batch = false;  ///< false: one bias vector per head shared over the batch
  bool random_gates = true;     ///< false: gates are null (all ones)
  double scale = 0;
  double bias_scale = 1;  ///< run_forward_check: the bias is N(0, bias_scale^2)
  std::optional<gen::TileConfig> tile;
  std::optional<gen::TileConfig> backward_tile;  ///< run_backward_check: pin the dK/dV tile
  std::uint64_t seed = 1;
  bool check = true;     ///< compare with the float64 reference
  int timing_iters = 0;  ///< > 0: also time that many launches (median, CUDA events)
};

struct CheckResult {
  std::string kernel;
  gen::TileConfig tile;
  int bias_row_keys = 0;     ///< LaunchRecord::bias_row_keys of the checked call
  double rel_err_o = 0;      ///< |o - ref|_F / |ref|_F
  double max_abs_err_lse = 0;
  long long unwritten = 0;   ///< output elements still holding the poison
  long long non_finite = 0;  ///< NaN/Inf in O, or NaN/+Inf in LSE
  double tolerance = 0;      ///< ra-math.md's bound for this dtype
  bool checked = false;
  bool passed = false;
  double median_ms = 0;
  double tflops = 0;  ///< FlashAttention convention (ra-math.md)
};

/// FLOPs of one forward call in the FlashAttention convention.
double forward_flops(const gen::AttentionSpec&, const Shape&);

/// Runs one check on device 0 (or the current context's device). Throws: what forward() throws.
CheckResult run_forward_check(const CheckOptions&);

/// One gradient's comparison with the float64 reference.
struct GradientError {
  std::string name;     ///< "dq_std", "dbias", "dw_std", ...
  /// |got - ref|_F / |ref|_F. For the per-head scalars dw_std, dw_rec, dw_disc (dot products
  /// whose terms cancel heavily on random data) each head's reference magnitude is floored at
  /// 2% of its Cauchy-Schwarz bound, e.g. |q_std(h)|_F |dq_std(h)|_F / w_std[h]: a gate gradient
  /// that is 1000x smaller than its terms cannot be held to a relative error in bf16.
  double rel_err = 0;
  double plain_rel_err = 0;  ///< |got - ref|_F / |ref|_F without the floor (reported only)
  long long unwritten = 0, non_finite = 0;
};

struct BackwardCheckResult {
  std::vector<std::string> kernels;
  std::vector<GradientError> gradients;
  double max_rel_err = 0;
  double tolerance = 2e-2;    ///< ra-math.md's bound for gradients
  bool checked = false;
  bool passed = false;
  bool repeat_checked = false;  ///< deterministic mode: a second run was compared bit for bit
  bool bitwise_repeatable = false;
  double fwd_bwd_median_ms = 0, bwd_median_ms = 0;
  double fwd_bwd_tflops = 0;  ///< FlashAttention convention: 3.5 x forward FLOPs
};

/// Runs forward then backward on random inputs (opt.layout decides both the operand and the
/// gradient views; gradients are poisoned first) and checks every gradient against
/// reference_backward. deterministic: also runs the backward again and compares bit for bit.
/// Throws: what forward() and backward() throw.
BackwardCheckResult run_backward_check(const CheckOptions& opt, bool deterministic);

}  // namespace rajit::tune
