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
/// preference list). Throws: gen::SpecError if the spec itself is invalid or nothing fits.
gen::TileConfig heuristic_tile(const gen::AttentionSpec& spec, const Shape& shape, int cc,
                               int max_shared_bytes);

}  // namespace rajit::tune
