/// GPU tier: the forward kernel against the float64 reference over a grid of specs, shapes, layouts.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
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

// Every output written, finite, and within ra-math.md's tolerances of the float64 reference.
void check_output(const rajit::tune::CheckResult& r) {
  CHECK(r.unwritten == 0);
  CHECK(r.non_finite == 0);
  CHECK(r.rel_err_o <= r.tolerance);
  CHECK(r.max_abs_err_lse <= 1e-2);
}

}  // namespace

TEST_CASE("forward: matches the float64 reference over the spec grid, odd shapes and layouts") {
  int case_index = 0;
  int tma_cases = 0;  // default-tile cases that ran on a TMA kernel (sm_90)
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
          check_output(r);
          MESSAGE(fmt::format("{} tile {}: rel err {:.2e}", where, r.tile.key(), r.rel_err_o));
          if (rajit::gen::is_tma(r.tile.mma)) ++tma_cases;
        }
      }
    }
  }
  const auto info = rajit::rt::device_info(0);
  if (info.cc_major * 10 + info.cc_minor == 90) {
    MESSAGE(fmt::format("{} of the grid's cases ran on a TMA kernel", tma_cases));
    CHECK(tma_cases > 0);
  }
}

// On sm_90 forward() runs a wgmma tile as the TMA kernel of the same shape when every tensor
// allows TMA: folded rows (.tmafold) or separate operands (.tma). Checks that each kind really
// runs (and is right), that a TMA call with a bias keeps each CTA's scaled bias row in shared
// memory (all of it, or its first key tiles where the row is too long, the rest by per-stage
// vectors), that a large bias keeps its precision where the tensor cores add it, and that the
// fallbacks happen where they must: bias rows that do not start on 16 bytes (Tk not a multiple of
// 4) and are longer than the bias row, and RAJIT_TMA=0.
TEST_CASE("forward: the TMA kernels run for folded and separate operands and fall back where "
          "TMA cannot read the tensors") {
  using rajit::gen::MmaKind;
  const auto info = rajit::rt::device_info(0);
  if (info.cc_major * 10 + info.cc_minor != 90) {
    MESSAGE("not an sm_90 GPU: the TMA kernels do not run here (skipped)");
    return;
  }
  struct Case {
    AttentionSpec spec;
    Shape shape;
    Layout layout;
    MmaKind expect;
  };
  std::vector<Case> cases;
  for (Dtype dt : {Dtype::kBf16, Dtype::kFp16}) {
    const AttentionSpec d64{56, 8, 64, true, BiasKind::kColumn, dt};
    const AttentionSpec d128{120, 8, 128, true, BiasKind::kColumn, dt};
    const AttentionSpec plain{64, 0, 64, true, BiasKind::kNone, dt};
    const AttentionSpec odd{60, 4, 64, false, BiasKind::kColumn, dt};
    for (const AttentionSpec& spec : {d64, d128, odd}) {
      // d_std = 60: separate k_std rows of 120 bytes are not a multiple of 16: no TMA.
      const MmaKind separate = spec.d_std % 8 == 0 ? MmaKind::kTma : MmaKind::kWgmma;
      cases.push_back({spec, {2, 3, 1000, 1000}, Layout::kFolded, MmaKind::kTmaFolded});
      cases.push_back({spec, {2, 3, 1000, 1000}, Layout::kSeparate, separate});
      cases.push_back({spec, {1, 2, 100, 300}, Layout::kStrided, separate});
      cases.push_back({spec, {2, 2, 300, 100}, Layout::kFolded, MmaKind::kTmaFolded});
      cases.push_back({spec, {1, 2, 4096, 4096}, Layout::kFolded, MmaKind::kTmaFolded});
      // Bias rows of 17 floats do not start on 16 bytes: the TMA kernel reads them into its bias
      // row with single-float loads (no bias boxes).
      cases.push_back({spec, {2, 3, 17, 17}, Layout::kFolded, MmaKind::kTmaFolded});
    }
    cases.push_back({plain, {2, 3, 129, 129}, Layout::kSeparate, MmaKind::kTmaFolded});
    cases.push_back({plain, {1, 1, 1, 1}, Layout::kSeparate, MmaKind::kTmaFolded});
  }
  int index = 0;
  for (const Case& c : cases) {
    rajit::tune::CheckOptions opt;
    opt.spec = c.spec;
    opt.shape = c.shape;
    opt.layout = c.layout;
    opt.bias_per_batch = index % 2 == 0;
    opt.random_gates = true;
    opt.seed = 5000 + static_cast<std::uint64_t>(index++);
    const std::string where = fmt::format("{} B={} H={} Tq={} Tk={} layout={}", c.spec.key(),
                                          c.shape.batch, c.shape.heads, c.shape.seqlen_q,
                                          c.shape.seqlen_k, rajit::tune::to_string(c.layout));
    CAPTURE(where);
    const auto r = rajit::tune::run_forward_check(opt);
    CAPTURE(r.tile.key());
    CHECK(r.tile.mma == c.expect);
    const bool row = c.spec.bias == BiasKind::kColumn && rajit::gen::is_tma(c.expect);
    const int bn = r.tile.block_n;
    CHECK(r.bias_row_keys == (row ? (c.shape.seqlen_k + bn - 1) / bn * bn : 0));
    check_output(r);
    MESSAGE(fmt::format("{} tile {}: rel err {:.2e}", where, r.tile.key(), r.rel_err_o));
  }
  // The bias row, two ways to get it wrong, one loop:
  // - rows longer than a tile's bias-row capacity (7872 keys for the seeds' tile, 12480 for the
  //   d128 one) keep that many (`row_keys`); the key tiles past it take the per-stage vectors.
  //   Tq < Tk: bottom-right causal, so the last query rows see every key;
  // - a bias of N(0, 40^2) (`bias_scale`): the tensor cores add the bias row (head_dim 64 and
  //   128), so its values are hi/lo pairs of the element type, and the hi parts alone would be
  //   0.01-0.1 off in the logits, far past the tolerance; key tiles past the row add fp32 values
  //   in the softmax. Tk = 13000 takes both paths in one call.
  struct RowCase {
    AttentionSpec spec;
    Shape shape;
    std::optional<rajit::gen::TileConfig> tile;
    std::optional<int> row_keys;
    double bias_scale;
  };
  const rajit::gen::TileConfig seeds_tile{128, 64, 8, 4, MmaKind::kTmaFolded};
  const rajit::gen::TileConfig d128_tile{192, 64, 12, 4, MmaKind::kTmaFolded};
  const AttentionSpec seeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  const AttentionSpec d128{120, 8, 128, true, BiasKind::kColumn, Dtype::kBf16};
  const AttentionSpec d128_fp16{120, 8, 128, true, BiasKind::kColumn, Dtype::kFp16};
  const AttentionSpec d128_full{120, 8, 128, false, BiasKind::kColumn, Dtype::kBf16};
  const AttentionSpec d128_full_fp16{120, 8, 128, false, BiasKind::kColumn, Dtype::kFp16};
  const AttentionSpec seeds_full_fp16{56, 8, 64, false, BiasKind::kColumn, Dtype::kFp16};
  const RowCase row_cases[] = {
      {seeds, {1, 2, 200, 7872}, seeds_tile, 7872, 1},
      {seeds, {1, 2, 200, 9000}, seeds_tile, 7872, 1},
      {seeds_full_fp16, {1, 1, 129, 7876}, seeds_tile, 7872, 1},
      {d128, {1, 2, 200, 13000}, d128_tile, 12480, 1},
      {d128, {2, 3, 1000, 1000}, std::nullopt, std::nullopt, 40},
      {d128, {1, 2, 200, 13000}, d128_tile, 12480, 40},
      {d128_full, {2, 2, 257, 257}, std::nullopt, std::nullopt, 40},
      {d128_fp16, {2, 3, 1000, 1000}, std::nullopt, std::nullopt, 40},
      {d128_full_fp16, {1, 2, 200, 13000}, d128_tile, 12480, 40},
      {seeds, {2, 3, 1000, 1000}, std::nullopt, std::nullopt, 40},
  };
  for (const RowCase& c : row_cases) {
    rajit::tune::CheckOptions opt;
    opt.spec = c.spec;
    opt.shape = c.shape;
    opt.layout = Layout::kFolded;
    opt.tile = c.tile;
    opt.bias_scale = c.bias_scale;
    opt.bias_per_batch = true;
    opt.seed = 5200 + static_cast<std::uint64_t>(index++);
    CAPTURE(c.spec.key());
    CAPTURE(c.shape.seqlen_k);
    CAPTURE(c.bias_scale);
    const auto r = rajit::tune::run_forward_check(opt);
    CHECK(r.tile.mma == MmaKind::kTmaFolded);
    if (c.row_keys) CHECK(r.bias_row_keys == *c.row_keys);
    check_output(r);
    MESSAGE(fmt::format("{} Tk={} bias row {} keys, bias N(0, {}^2): rel err {:.2e}",
                        c.spec.key(), c.shape.seqlen_k, r.bias_row_keys, c.bias_scale,
                        r.rel_err_o));
  }
  // Unaligned bias rows (Tk not a multiple of 4) longer than the bias row: no TMA box may read
  // them, so the cp.async kernel of the same shape runs.
  {
    rajit::tune::CheckOptions opt;
    opt.spec = {56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
    opt.shape = {1, 2, 200, 7873};
    opt.layout = Layout::kFolded;
    opt.tile = rajit::gen::TileConfig{128, 64, 8, 4, MmaKind::kWgmma};
    opt.seed = 5100;
    const auto r = rajit::tune::run_forward_check(opt);
    CHECK(r.tile.mma == MmaKind::kWgmma);
    CHECK(r.bias_row_keys == 0);
    CHECK(r.passed);
  }
  // RAJIT_TMA=0: the same folded call runs the cp.async kernel.
  rajit::tune::CheckOptions opt;
  opt.spec = {56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  opt.shape = {2, 3, 1000, 1000};
  opt.layout = Layout::kFolded;
  ::setenv("RAJIT_TMA", "0", 1);
  const auto r = rajit::tune::run_forward_check(opt);
  ::unsetenv("RAJIT_TMA");
  CHECK(r.tile.mma == MmaKind::kWgmma);
  CHECK(r.passed);
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
