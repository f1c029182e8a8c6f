/// The float64 CPU reference of RA forward and backward (ra-math.md), shared by tests and tools.
#pragma once
#include <vector>

#include "generator/spec.hpp"

namespace rajit::tune {

/// Inputs of one RA problem, contiguous row-major float64:
/// q_std (B,H,Tq,Ds), k_low (B,H,Tq,R), k_std (B,H,Tk,Ds), q_low (B,H,Tk,R), v (B,H,Tk,Dv),
/// bias (bias_batch,H,Tk) with bias_batch 1 (shared over the batch) or B, gates (H).
struct RefProblem {
  gen::AttentionSpec spec;
  int batch = 1, heads = 1, seqlen_q = 1, seqlen_k = 1;
  int bias_batch = 1;
  double scale = 0;  ///< 0 = 1 / sqrt(d_std + r)
  std::vector<double> q_std, k_low, k_std, q_low, v, bias, w_std, w_rec, w_disc;
  double effective_scale() const;
};

struct RefForward {
  std::vector<double> o;    ///< (B,H,Tq,Dv); zeros for rows with no visible key
  std::vector<double> lse;  ///< (B,H,Tq); -inf for rows with no visible key
};

struct RefGradients {
  std::vector<double> dq_std, dk_low, dk_std, dq_low, dv;  ///< shapes of their operands
  std::vector<double> dw_std, dw_rec, dw_disc;             ///< (H)
  std::vector<double> dbias;                               ///< shape of bias
};

/// True when key j is visible to query i (causal: bottom-right aligned, as FlashAttention-2).
bool is_visible(bool causal, int i, int j, int seqlen_q, int seqlen_k);

RefForward reference_forward(const RefProblem&);
/// Gradients for upstream dO (B,H,Tq,Dv). Throws: std::invalid_argument on size mismatch.
RefGradients reference_backward(const RefProblem&, const std::vector<double>& d_o);

}  // namespace rajit::tune
