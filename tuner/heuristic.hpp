/// The default tile shape for a spec, shape and device when no tuned entry exists.
#pragma once
#include "generator/spec.hpp"

namespace rajit::tune {

/// Runtime problem size (not part of the spec).
struct Shape {
  int batch = 1;
  int heads = 1;
  int seqlen_q = 1;
  int seqlen_k = 1;
};

/// A good TileConfig for (spec, shape) on a device of compute capability `cc` with
/// `max_shared_bytes` per block; always valid for that device (falls back through a fixed
/// preference list). On sm_90 (cc == 90) it prefers the wgmma family where that supports the
/// spec, unless `allow_wgmma` is false (e.g. when generating plain sm_90 rather than sm_90a code).
/// Throws: gen::SpecError if the spec itself is invalid or nothing fits.
gen::TileConfig heuristic_tile(const gen::AttentionSpec& spec, const Shape& shape, int cc,
                               int max_shared_bytes, bool allow_wgmma = true);

/// The NVRTC target for a tile on a device of compute capability `cc`: "sm_90a" for wgmma tiles
/// (the arch-specific feature set), else "sm_<cc>".
std::string arch_for(const gen::TileConfig& tile, int cc);

}  // namespace rajit::tune
