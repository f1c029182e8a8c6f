/// Tile-shape heuristic: measured preferences per head_dim (docs/perf-notes.md), then fallbacks.
#include "tuner/heuristic.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "templates/attention/limits.cuh"

namespace rajit::tune {

std::string arch_for(const gen::TileConfig& tile, int cc) {
  return gen::is_hopper(tile.mma) ? std::string("sm_90a") : fmt::format("sm_{}", cc);
}

namespace {

// CTAs per SM the kernel of `tile` asks for (its __launch_bounds__, limits.cuh).
int ctas_per_sm(const gen::AttentionSpec& spec, const gen::TileConfig& tile) {
  const int bytes = gen::forward_shared_bytes(spec, tile);
  return tile.mma == gen::MmaKind::kWgmma
             ? attn::wgmma_fwd_min_blocks(spec.d_std, spec.r, spec.head_dim, tile.block_n,
                                          tile.warps, bytes)
             : attn::tma_fwd_min_blocks(spec.head_dim, tile.block_n, tile.warps, bytes);
}

// Whether `tile` keeps the CTAs per SM of the same tile with 3 stages, as every kernel forward()
// may run it as: the cp.async wgmma kernel and both TMA kernels.
bool keeps_ctas_per_sm(const gen::AttentionSpec& spec, const gen::TileConfig& tile) {
  for (gen::MmaKind kind :
       {gen::MmaKind::kWgmma, gen::MmaKind::kTma, gen::MmaKind::kTmaFolded}) {
    gen::TileConfig deep = tile;
    deep.mma = kind;
    gen::TileConfig shallow = deep;
    shallow.stages = 3;
    if (ctas_per_sm(spec, deep) < ctas_per_sm(spec, shallow)) return false;
  }
  return true;
}

}  // namespace

gen::TileConfig heuristic_tile(const gen::AttentionSpec& spec, const Shape& shape, int cc,
                               int max_shared_bytes, bool allow_wgmma) {
  gen::require_valid(spec);
  if (allow_wgmma && cc == 90) {
    // Hopper: warpgroup MMA (docs/perf-notes.md, v3 sweep on the H200). head_dim 64: 128 x 64
    // tiles fit two CTAs per SM (128 registers); head_dim 128: three warpgroups over 64-key tiles.
    // Causal grids at head_dim 64 and 128 take 4 stages: two are in use (the tile in the softmax,
    // the one in P V), so a fourth lets two tiles load ahead instead of one (perf-notes v6: d64
    // RA + bias 0.388 -> 0.376 ms, plain 0.366 -> 0.363; d128 1.10 -> 1.09). Not where the fourth
    // stage would cost a CTA per SM, nor for r = 0 with a bias at head_dim 64, whose cp.async
    // kernel spills at 4 stages (nvrtc tier). Non-causal grids were no faster with 4 (sometimes
    // slower); other head dims were not measured.
    const gen::MmaKind wg = gen::MmaKind::kWgmma;
    const bool deep = spec.causal && (spec.head_dim == 64 || spec.head_dim == 128) &&
                      !(spec.head_dim == 64 && spec.r == 0 && spec.bias == gen::BiasKind::kColumn);
    const gen::TileConfig deep_tile = spec.head_dim == 128 ? gen::TileConfig{192, 64, 12, 4, wg}
                                                           : gen::TileConfig{128, 64, 8, 4, wg};
    if (deep && keeps_ctas_per_sm(spec, deep_tile) &&
        gen::validate(spec, deep_tile, max_shared_bytes).empty()) {
      return deep_tile;
    }
    const std::vector<gen::TileConfig> wg_prefs =
        spec.head_dim == 128
            ? std::vector<gen::TileConfig>{{192, 64, 12, 3, wg}, {128, 64, 8, 3, wg}}
            : std::vector<gen::TileConfig>{{128, 64, 8, 3, wg}, {128, 128, 8, 3, wg}, {64, 64, 4, 3, wg}};
    for (const auto& t : wg_prefs) {
      if (gen::validate(spec, t, max_shared_bytes).empty()) return t;
    }
  }
  const int width = std::max(spec.head_dim, spec.d_std + spec.r);
  // Preferences from the H200 sweep of 2026-11-22 (docs/perf-notes.md, v1): 64-row tiles of
  // 4 warps for narrow heads (more CTAs per SM), 128 x 64 tiles of 8 warps for 128-wide heads.
  std::vector<gen::TileConfig> prefs;
  if (width <= 64) {
    prefs = {{64, 64, 4, 2}, {128, 32, 4, 2}, {64, 32, 4, 2}};
  } else if (width <= 128) {
    prefs = {{128, 64, 8, 2}, {64, 64, 4, 2}, {64, 32, 4, 2}};
  } else {
    prefs = {{64, 32, 4, 2}, {64, 64, 4, 2}};
  }
  // Few query blocks: 64-row tiles put more CTAs on the SMs.
  const long long blocks128 =
      static_cast<long long>(shape.batch) * shape.heads * ((shape.seqlen_q + 127) / 128);
  if (blocks128 < 2LL * 132 && width <= 128) prefs.insert(prefs.begin(), gen::TileConfig{64, 64, 4, 2});
  for (const auto& t : prefs) {
    if (gen::validate(spec, t, max_shared_bytes).empty()) return t;
  }
  const auto all = gen::valid_tiles(spec, max_shared_bytes);
  if (all.empty()) {
    std::vector<std::string> why = {fmt::format(
        "spec {}: no tile shape fits this device ({} bytes of shared memory per block); the "
        "smallest tile fails because:",
        spec.key(), max_shared_bytes)};
    for (auto& p : gen::validate(spec, gen::TileConfig{64, 32, 4, 2}, max_shared_bytes)) {
      why.push_back("  " + p);
    }
    throw gen::SpecError(std::move(why));
  }
  return all.front();
}

}  // namespace rajit::tune
