/// The forward kernels' variation points (S20): mask and bias policies shared by both MMA families.
#pragma once

namespace rajit::attn {

// ---- variation points (S20) ------------------------------------------------------------------
struct NoMask {
  static constexpr bool kCausal = false;
};
struct CausalMask {  // key j visible to query i iff j <= i + (Tk - Tq): bottom-right aligned
  static constexpr bool kCausal = true;
};
struct NoBias {
  static constexpr bool kHasBias = false;
};
struct ColumnBias {  // s_ij += w_disc[h] * beta[b?, h, j]
  static constexpr bool kHasBias = true;
};

}  // namespace rajit::attn
