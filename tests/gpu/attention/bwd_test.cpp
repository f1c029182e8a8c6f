/// GPU tier: every backward gradient against the float64 reference; deterministic mode repeats bitwise.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "generator/backward_source.hpp"
#include "runtime/driver.hpp"
#include "tuner/harness.hpp"

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

// The seeds' specs (56+8, 60+4), plain attention, d128 with 120+8, full rank (d_std = r), d32 and
// d96, widths that are not a multiple of 16 (padded in shared memory).
const std::vector<SpecCase> kSpecs = {
    {56, 8, 64, true, BiasKind::kColumn},   {64, 0, 64, true, BiasKind::kNone},
    {60, 4, 64, false, BiasKind::kColumn},  {120, 8, 128, true, BiasKind::kColumn},
    {64, 64, 64, false, BiasKind::kColumn}, {24, 4, 32, false, BiasKind::kNone},
    {88, 8, 96, true, BiasKind::kColumn},   {56, 8, 64, false, BiasKind::kNone},
};

const std::vector<Shape> kShapes = {
    {1, 1, 1, 1},      {2, 3, 17, 17},   {1, 2, 1000, 1000},
    {2, 2, 100, 300},  // Tq < Tk
    {1, 2, 300, 100},  // Tq > Tk: causal rows with no visible key contribute nothing
    {1, 1, 129, 129},
};

void check_result(const rajit::tune::BackwardCheckResult& r) {
  for (const auto& g : r.gradients) {
    CAPTURE(g.name);
    CHECK(g.unwritten == 0);
    CHECK(g.non_finite == 0);
    CHECK(g.rel_err <= r.tolerance);
  }
}

}  // namespace

TEST_CASE("backward: every gradient matches the float64 reference over the spec grid, odd shapes, "
          "layouts, both dtypes and both modes") {
  int case_index = 0;
  int tma_cases = 0;  // cases whose dK/dV kernel read the query side by TMA (sm_90)
  for (Dtype dt : {Dtype::kBf16, Dtype::kFp16}) {
    for (const SpecCase& sc : kSpecs) {
      for (const Shape& sh : kShapes) {
        rajit::tune::CheckOptions opt;
        opt.spec = AttentionSpec{sc.d_std, sc.r, sc.head_dim, sc.causal, sc.bias, dt};
        opt.shape = sh;
        const Layout layouts[] = {Layout::kSeparate, Layout::kPaired, Layout::kFolded,
                                  Layout::kStrided};
        opt.layout = layouts[case_index % 4];
        if (opt.layout == Layout::kPaired && sh.seqlen_q != sh.seqlen_k) opt.layout = Layout::kFolded;
        opt.bias_per_batch = case_index % 3 == 0;
        opt.random_gates = case_index % 5 != 0;
        opt.seed = 5000 + static_cast<std::uint64_t>(case_index);
        const bool deterministic = case_index % 2 == 1;
        ++case_index;
        const std::string where =
            fmt::format("{} B={} H={} Tq={} Tk={} layout={} bias_per_batch={} {}", opt.spec.key(),
                        sh.batch, sh.heads, sh.seqlen_q, sh.seqlen_k,
                        rajit::tune::to_string(opt.layout), opt.bias_per_batch,
                        deterministic ? "deterministic" : "atomic");
        CAPTURE(where);
        const auto r = rajit::tune::run_backward_check(opt, deterministic);
        check_result(r);
        if (deterministic) CHECK(r.bitwise_repeatable);
        std::string errs;
        for (const auto& g : r.gradients) {
          errs += fmt::format(" {}={:.2e}", g.name, g.rel_err);
          if (g.plain_rel_err != g.rel_err) errs += fmt::format("(plain {:.2e})", g.plain_rel_err);
        }
        MESSAGE(fmt::format("{}:{}", where, errs));
        for (const auto& k : r.kernels) tma_cases += k.find(".tma") != std::string::npos;
      }
    }
  }
  const auto info = rajit::rt::device_info(0);
  if (info.cc_major * 10 + info.cc_minor == 90) {
    MESSAGE(fmt::format("{} of the grid's cases ran the TMA dK/dV kernel", tma_cases));
    CHECK(tma_cases > 0);
  }
}

TEST_CASE("backward: deterministic mode is bitwise repeatable for the seeds' spec with a shared "
          "and a per-batch bias") {
  for (bool per_batch : {false, true}) {
    rajit::tune::CheckOptions opt;
    opt.spec = AttentionSpec{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
    opt.shape = {3, 2, 777, 777};
    opt.bias_per_batch = per_batch;
    opt.layout = Layout::kFolded;
    opt.seed = 99;
    CAPTURE(per_batch);
    const auto r = rajit::tune::run_backward_check(opt, /*deterministic=*/true);
    check_result(r);
    CHECK(r.repeat_checked);
    CHECK(r.bitwise_repeatable);
  }
}

TEST_CASE("backward: every valid dK/dV tile (unsplit and split warps; wgmma on sm_90) matches the "
          "reference") {
  const AttentionSpec specs[] = {{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16},
                                 {120, 8, 128, false, BiasKind::kColumn, Dtype::kFp16},
                                 {24, 4, 32, true, BiasKind::kNone, Dtype::kBf16},
                                 {64, 64, 128, true, BiasKind::kColumn, Dtype::kBf16}};
  const auto info = rajit::rt::device_info(0);
  const int max_shared = info.max_smem_per_block_optin;
  const bool hopper = info.cc_major == 9 && info.cc_minor == 0;
  for (const auto& spec : specs) {
    for (bool deterministic : {false, true}) {
      const auto kind = deterministic ? rajit::gen::BackwardKernel::kDkv
                                      : rajit::gen::BackwardKernel::kDkvAtomicDq;
      for (const auto& tile : rajit::gen::valid_backward_tiles(spec, kind, max_shared, hopper)) {
        rajit::tune::CheckOptions opt;
        opt.spec = spec;
        opt.shape = {2, 2, 333, 333};
        opt.layout = Layout::kPaired;
        opt.backward_tile = tile;
        opt.seed = 4242;
        CAPTURE(spec.key());
        CAPTURE(tile.key());
        CAPTURE(deterministic);
        const auto r = rajit::tune::run_backward_check(opt, deterministic);
        check_result(r);
        if (deterministic) CHECK(r.bitwise_repeatable);
      }
    }
  }
}

TEST_CASE("backward: separate q_std and k_low on sm_90 are packed into folded rows for the TMA "
          "dK/dV kernel; the pinned .tma tile, RAJIT_TMA=0 and unpackable widths still match") {
  const auto info = rajit::rt::device_info(0);
  if (info.cc_major * 10 + info.cc_minor != 90) {
    MESSAGE("not sm_90: the TMA dK/dV kernels do not run here; nothing to check");
    return;
  }
  using rajit::gen::MmaKind;
  using rajit::gen::TileConfig;
  struct Case {
    AttentionSpec spec;
    const char* how;  // "auto", "pin-tma" or "no-tma"
    const char* want;  // tile-kind suffix the dK/dV kernel's name must carry ("" = neither)
  };
  const AttentionSpec seeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  const AttentionSpec wide{120, 8, 128, true, BiasKind::kColumn, Dtype::kFp16};
  const AttentionSpec r4{60, 4, 64, false, BiasKind::kColumn, Dtype::kBf16};  // r % 8 != 0
  const Case cases[] = {{seeds, "auto", ".tmafold"}, {seeds, "pin-tma", ".tma"},
                        {seeds, "no-tma", ""},       {wide, "auto", ".tmafold"},
                        {wide, "pin-tma", ".tma"},   {r4, "auto", ""}};
  int index = 0;
  for (const Case& c : cases) {
    for (bool deterministic : {false, true}) {
      rajit::tune::CheckOptions opt;
      opt.spec = c.spec;
      opt.shape = {2, 3, 1000, 1000};
      opt.layout = Layout::kSeparate;
      opt.seed = 7100 + static_cast<std::uint64_t>(index++);
      if (std::string_view(c.how) == "pin-tma") {
        opt.backward_tile = c.spec.head_dim > 64 ? TileConfig{64, 128, 8, 2, MmaKind::kTma}
                                                 : TileConfig{64, 64, 4, 2, MmaKind::kTma};
      }
      CAPTURE(c.spec.key());
      CAPTURE(c.how);
      CAPTURE(deterministic);
      if (std::string_view(c.how) == "no-tma") ::setenv("RAJIT_TMA", "0", 1);
      const auto r = rajit::tune::run_backward_check(opt, deterministic);
      ::unsetenv("RAJIT_TMA");
      check_result(r);
      if (deterministic) CHECK(r.bitwise_repeatable);
      REQUIRE(r.kernels.size() >= 2);
      const std::string& dkv = r.kernels[1];  // preprocess, dK/dV, ...
      CAPTURE(dkv);
      const bool tmafold = dkv.find(".tmafold") != std::string::npos;
      const bool any_tma = dkv.find(".tma") != std::string::npos;
      const std::string_view want = c.want;
      if (want == ".tmafold") CHECK(tmafold);
      if (want == ".tma") CHECK((any_tma && !tmafold));
      if (want.empty()) CHECK_FALSE(any_tma);
    }
  }
}
