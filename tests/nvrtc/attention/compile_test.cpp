/// nvrtc tier: every tile of a representative spec grid compiles for sm_80 and sm_90 without spills.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

#include "compile_pool.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/nvrtc.hpp"
#include "tuner/heuristic.hpp"

namespace {

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::TileConfig;

struct Job {
  AttentionSpec spec;
  TileConfig tile;
  rajit::gen::Arch arch;
};

std::vector<rajit::test::CompileOutcome> compile_all(const std::vector<Job>& jobs) {
  return rajit::test::compile_all(jobs, [](const Job& j) {
    const auto src = rajit::gen::generate_forward(j.spec, j.tile);
    // wgmma tiles compile for sm_90a, everything else for the arch itself (as forward() does).
    const std::string arch = rajit::tune::arch_for(j.tile, j.arch.cc);
    return std::pair{rajit::rt::CompileRequest{src.readable_key + ".cu", src.text, src.options,
                                               arch, false, true, src.entry},
                     fmt::format("{} on {}", src.readable_key, arch)};
  });
}

void check_all(const std::vector<rajit::test::CompileOutcome>& outcomes) {
  for (const auto& o : outcomes) rajit::test::check_outcome(o);
}

}  // namespace

TEST_CASE("forward kernels: the heuristic tile of every grid spec compiles for sm_80 and sm_90 "
          "with zero spills") {
  std::vector<Job> jobs;
  const int d_stds[][3] = {{56, 8, 64},   {60, 4, 64},   {64, 0, 64},    {64, 64, 64},
                           {120, 8, 128}, {24, 4, 32},   {88, 8, 96},    {128, 128, 128},
                           {248, 8, 256}, {36, 0, 64},   {32, 0, 32},    {256, 0, 256},
                           {64, 0, 256},  {120, 8, 256}};
  for (const auto& d : d_stds)
    for (bool causal : {true, false})
      for (Dtype dt : {Dtype::kBf16, Dtype::kFp16})
        for (const auto& arch : {rajit::gen::parse_arch("sm_80"), rajit::gen::parse_arch("sm_90")}) {
          const BiasKind bias = causal ? BiasKind::kColumn : BiasKind::kNone;
          const AttentionSpec spec{d[0], d[1], d[2], causal, bias, dt};
          const auto tile = rajit::tune::heuristic_tile(spec, {4, 16, 4096, 4096}, arch.cc,
                                                        arch.max_shared_bytes());
          jobs.push_back({spec, tile, arch});
        }
  check_all(compile_all(jobs));
}

TEST_CASE("forward kernels: every valid tile of the seeds' spec and of head_dim 128 and 256 "
          "compiles for sm_80 and sm_90 (wgmma tiles: sm_90a) with zero spills") {
  std::vector<Job> jobs;
  const AttentionSpec specs[] = {{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16},
                                 {64, 0, 64, false, BiasKind::kNone, Dtype::kFp16},
                                 {88, 8, 96, true, BiasKind::kColumn, Dtype::kBf16},
                                 {120, 8, 128, true, BiasKind::kColumn, Dtype::kBf16},
                                 {128, 128, 128, true, BiasKind::kNone, Dtype::kBf16},
                                 {248, 8, 256, true, BiasKind::kColumn, Dtype::kFp16}};
  for (const auto& spec : specs)
    for (const auto& arch : {rajit::gen::parse_arch("sm_80"), rajit::gen::parse_arch("sm_90")})
      for (const auto& tile :
           rajit::gen::valid_tiles(spec, arch.max_shared_bytes(), /*with_wgmma=*/arch.cc == 90)) {
        jobs.push_back({spec, tile, arch});
      }
  CHECK(jobs.size() > 20);
  check_all(compile_all(jobs));
}

// The TMA kernels have the wgmma tile shapes; forward() runs them when the tensors allow TMA, as
// separate operands (.tma) or folded rows (.tmafold).
TEST_CASE("forward TMA kernels: every wgmma tile of the seeds' and the d128 spec, and the "
          "heuristic tile of other specs, compile as .tma and .tmafold for sm_90a with zero "
          "spills") {
  using rajit::gen::MmaKind;
  const auto sm90 = rajit::gen::parse_arch("sm_90");
  std::vector<Job> jobs;
  const auto add_tma = [&](const AttentionSpec& spec, TileConfig tile) {
    if (tile.mma != MmaKind::kWgmma) return;
    for (MmaKind kind : {MmaKind::kTma, MmaKind::kTmaFolded}) {
      tile.mma = kind;
      if (rajit::gen::validate(spec, tile, sm90.max_shared_bytes()).empty()) {
        jobs.push_back({spec, tile, sm90});
      }
    }
  };
  for (const AttentionSpec& spec : {AttentionSpec{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16},
                                    AttentionSpec{120, 8, 128, true, BiasKind::kColumn,
                                                  Dtype::kBf16}}) {
    for (const auto& tile : rajit::gen::valid_tiles(spec, sm90.max_shared_bytes(), true)) {
      add_tma(spec, tile);
    }
  }
  const AttentionSpec others[] = {{60, 4, 64, true, BiasKind::kColumn, Dtype::kFp16},
                                  {64, 0, 64, false, BiasKind::kNone, Dtype::kBf16},
                                  {64, 64, 64, true, BiasKind::kNone, Dtype::kBf16},
                                  {128, 128, 128, false, BiasKind::kColumn, Dtype::kFp16},
                                  {36, 0, 64, true, BiasKind::kColumn, Dtype::kBf16},
                                  {120, 8, 128, false, BiasKind::kNone, Dtype::kFp16}};
  for (const AttentionSpec& spec : others) {
    add_tma(spec, rajit::tune::heuristic_tile(spec, {4, 16, 4096, 4096}, 90,
                                              sm90.max_shared_bytes()));
  }
  CHECK(jobs.size() > 20);
  check_all(compile_all(jobs));
}
