/// GPU tier: the forward kernel against the float64 reference over a grid of specs, shapes, layouts.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <optional>
#include <vector>

#include "runtime/driver.hpp"
#include "tuner/harness.hpp"
#include "tuner/heuristic.hpp"

namespace {

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::tune::Layout;
using rajit::tune::Shape;

struct SpecCase {
  int d_std, r, head_dim;
  bool causal;
  BiasKind bias;
};

// Representative specs: the seeds' configurations, 8-byte copies (60+4), plain attention, full
// rank (d_std = r = head_dim), contraction wider than 128 (Q stays in shared memory), every
// head_dim, and widths that are not a multiple of 16 (padded in shared memory).
const std::vector<SpecCase> kSpecs = {
    {56, 8, 64, true, BiasKind::kColumn},   {60, 4, 64, true, BiasKind::kColumn},
    {64, 0, 64, true, BiasKind::kNone},     {64, 64, 64, false, BiasKind::kColumn},
    {120, 8, 128, true, BiasKind::kColumn}, {24, 4, 32, false, BiasKind::kNone},
    {88, 8, 96, true, BiasKind::kColumn},   {128, 128, 128, true, BiasKind::kNone},
    {248, 8, 256, true, BiasKind::kColumn}, {36, 0, 64, false, BiasKind::kColumn},
    {64, 0, 256, true, BiasKind::kNone},    {120, 8, 256, false, BiasKind::kColumn},
};

const std::vector<Shape> kShapes = {
    {1, 1, 1, 1},      {2, 3, 17, 17},   {1, 2, 1000, 1000},
    {2, 2, 100, 300},  // Tq < Tk: causal is bottom-right aligned
    {1, 2, 300, 100},  // Tq > Tk: causal rows with no visible key output 0, LSE -inf
    {1, 1, 129, 129},
};

}  // namespace

TEST_CASE("forward: matches the float64 reference over the spec grid, odd shapes and layouts") {
  int case_index = 0;
  for (Dtype dt : {Dtype::kBf16, Dtype::kFp16}) {
    for (const SpecCase& sc : kSpecs) {
      for (const Shape& sh : kShapes) {
        rajit::tune::CheckOptions opt;
        opt.spec = AttentionSpec{sc.d_std, sc.r, sc.head_dim, sc.causal, sc.bias, dt};
        opt.shape = sh;
        const Layout layouts[] = {Layout::kSeparate, Layout::kStrided, Layout::kPaired, Layout::kFolded};
        opt.layout = layouts[case_index % 4];
        if (opt.layout == Layout::kPaired && sh.seqlen_q != sh.seqlen_k) opt.layout = Layout::kStrided;
        opt.bias_per_batch = case_index % 3 == 0;
        opt.random_gates = case_index % 5 != 0;
        opt.seed = 1000 + static_cast<std::uint64_t>(case_index);
        ++case_index;
        CAPTURE(opt.spec.key());
        const std::string where = fmt::format("{} B={} H={} Tq={} Tk={} layout={}", opt.spec.key(),
                                              sh.batch, sh.heads, sh.seqlen_q, sh.seqlen_k,
                                              rajit::tune::to_string(opt.layout));
        CAPTURE(where);
        // The default tile (wgmma on sm_90 where the spec allows), and on sm_90 also the
        // mma.sync family's default, so both kernel families see the whole grid.
        std::vector<std::optional<rajit::gen::TileConfig>> tiles = {std::nullopt};
        const auto info = rajit::rt::device_info(0);
        const int cc = info.cc_major * 10 + info.cc_minor;
        if (cc == 90) {
          tiles.push_back(rajit::tune::heuristic_tile(opt.spec, sh, cc,
                                                      info.max_smem_per_block_optin, false));
        }
        for (const auto& tile : tiles) {
          opt.tile = tile;
          const auto r = rajit::tune::run_forward_check(opt);
          CAPTURE(r.tile.key());
          CHECK(r.unwritten == 0);
          CHECK(r.non_finite == 0);
          CHECK(r.rel_err_o <= r.tolerance);
          CHECK(r.max_abs_err_lse <= 1e-2);
          MESSAGE(fmt::format("{} tile {}: rel err {:.2e}", where, r.tile.key(), r.rel_err_o));
        }
      }
    }
  }
}

TEST_CASE("forward: every tile shape of the benchmark specs matches the reference") {
  const auto info = rajit::rt::device_info(0);
  const bool sm90 = info.cc_major == 9 && info.cc_minor == 0;
  std::vector<AttentionSpec> specs;
  for (Dtype dt : {Dtype::kBf16, Dtype::kFp16}) {
    specs.push_back({56, 8, 64, true, BiasKind::kColumn, dt});
    specs.push_back({120, 8, 128, true, BiasKind::kColumn, dt});
  }
  for (const AttentionSpec& spec : specs) {
    for (const auto& tile :
         rajit::gen::valid_tiles(spec, info.max_smem_per_block_optin, /*with_wgmma=*/sm90)) {
      rajit::tune::CheckOptions opt;
      opt.spec = spec;
      opt.shape = {1, 2, 333, 333};
      opt.tile = tile;
      opt.seed = 77;
      CAPTURE(spec.key());
      CAPTURE(tile.key());
      const auto r = rajit::tune::run_forward_check(opt);
      CHECK(r.passed);
    }
  }
}
