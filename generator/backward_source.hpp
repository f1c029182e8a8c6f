/// generate_backward(): the backward kernels' sources for a spec (issue 5), their tiles and rules.
#pragma once
#include <string>
#include <vector>

#include "generator/kernel_source.hpp"
#include "generator/spec.hpp"

namespace rajit::gen {

/// The backward kernel families (templates/attention/bwd.cuh).
enum class BackwardKernel {
  kDkv,          ///< dK, dV, column sums, dw partials; dQ left to kDq
  kDkvAtomicDq,  ///< kDkv plus Gq accumulated with fp32 atomics (the default, non-deterministic)
  kDq,           ///< deterministic dQ: recomputes S and dP per query block
  kAux,          ///< preprocess (Delta, LSE log2), Gq conversion, per-head finalize; no tile
};
std::string_view to_string(BackwardKernel);

/// Every problem with the spec for the backward (the forward's rules plus head_dim <= 128 and
/// padded d_std + r <= 128); empty when valid.
std::vector<std::string> validate_backward(const AttentionSpec&);
/// Every problem with a tile for one backward kernel on a device with max_shared_bytes per block.
std::vector<std::string> validate_backward(const AttentionSpec&, BackwardKernel,
                                           const TileConfig&, int max_shared_bytes);

/// Every valid tile of one backward kernel, in (block_m, block_n, warps, stages) order; with
/// with_wgmma, the dK/dV kernels' wgmma tiles (sm_90a only) follow.
std::vector<TileConfig> valid_backward_tiles(const AttentionSpec&, BackwardKernel,
                                             int max_shared_bytes, bool with_wgmma = false);

/// Renders and flattens one backward kernel (a wgmma tile's source compiles for sm_90a only).
/// For kAux the tile is ignored and the module holds
/// three entries: `entry + "_preprocess"`, `entry + "_convert"`, `entry + "_finalize"`.
/// Throws: SpecError if the spec or tile is invalid (shared memory is not checked here).
GeneratedSource generate_backward(const AttentionSpec&, BackwardKernel, const TileConfig&);

}  // namespace rajit::gen
