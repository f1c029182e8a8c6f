/// nvrtc tier: every valid backward tile of a representative spec grid compiles without spills.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "compile_pool.hpp"
#include "generator/backward_source.hpp"
#include "runtime/nvrtc.hpp"

namespace {

using rajit::gen::AttentionSpec;
using rajit::gen::BackwardKernel;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::TileConfig;

struct Job {
  AttentionSpec spec;
  BackwardKernel kind;
  TileConfig tile;
  rajit::gen::Arch arch;
  std::string aux_entry;  // entry suffix: "" except for the three kernels of the kAux module
};

std::vector<rajit::test::CompileOutcome> compile_all(const std::vector<Job>& jobs) {
  return rajit::test::compile_all(jobs, [](const Job& j) {
    const auto src = rajit::gen::generate_backward(j.spec, j.kind, j.tile);
    return std::pair{rajit::rt::CompileRequest{src.readable_key + ".cu", src.text, src.options,
                                               j.arch.name(), false, true,
                                               src.entry + j.aux_entry},
                     fmt::format("{}{} on {}", src.readable_key, j.aux_entry, j.arch.name())};
  });
}

}  // namespace

TEST_CASE("backward kernels: every valid tile of the grid specs compiles for sm_80 and sm_90 (and "
          "the wgmma dK/dV tiles, cp.async- and TMA-fed, for sm_90a) with zero spills") {
  // The seeds' specs, plain attention, full rank, widths not a multiple of 16, every head_dim the
  // backward supports; alternating dtype, mask and bias so every policy is compiled.
  const AttentionSpec specs[] = {{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16},
                                 {64, 0, 64, true, BiasKind::kNone, Dtype::kFp16},
                                 {60, 4, 64, false, BiasKind::kColumn, Dtype::kFp16},
                                 {120, 8, 128, true, BiasKind::kColumn, Dtype::kBf16},
                                 {64, 64, 128, false, BiasKind::kNone, Dtype::kBf16},
                                 {24, 4, 32, true, BiasKind::kColumn, Dtype::kFp16},
                                 {88, 8, 96, true, BiasKind::kColumn, Dtype::kBf16}};
  std::vector<Job> jobs;
  for (const auto& spec : specs)
    for (const auto& arch : {rajit::gen::parse_arch("sm_80"), rajit::gen::parse_arch("sm_90")}) {
      for (const char* aux : {"_preprocess", "_convert", "_finalize"}) {
        jobs.push_back({spec, BackwardKernel::kAux, {}, arch, aux});
      }
      for (BackwardKernel k : {BackwardKernel::kDkv, BackwardKernel::kDkvAtomicDq, BackwardKernel::kDq}) {
        const auto tiles = rajit::gen::valid_backward_tiles(spec, k, arch.max_shared_bytes());
        CHECK(!tiles.empty());
        for (const auto& tile : tiles) jobs.push_back({spec, k, tile, arch, ""});
      }
    }
  const auto sm90a = rajit::gen::parse_arch("sm_90a");
  int wgmma_tiles = 0;
  for (const auto& spec : specs)
    for (BackwardKernel k : {BackwardKernel::kDkv, BackwardKernel::kDkvAtomicDq}) {
      for (const auto& tile : rajit::gen::valid_backward_tiles(spec, k, sm90a.max_shared_bytes(), true)) {
        if (tile.mma != rajit::gen::MmaKind::kWgmma) continue;
        jobs.push_back({spec, k, tile, sm90a, ""});
        ++wgmma_tiles;
        for (auto kind : {rajit::gen::MmaKind::kTmaFolded, rajit::gen::MmaKind::kTma}) {
          auto tma = tile;  // the same tile fed by TMA (folded query rows, or separate k_low)
          tma.mma = kind;
          REQUIRE(rajit::gen::validate_backward(spec, k, tma, sm90a.max_shared_bytes()).empty());
          jobs.push_back({spec, k, tma, sm90a, ""});
        }
      }
    }
  CHECK(wgmma_tiles > 0);  // the seeds' widths (64 and 128) have wgmma tiles
  for (const auto& o : compile_all(jobs)) {
    rajit::test::check_outcome(o);
    MESSAGE(fmt::format("{}: {} registers, {} spill bytes", o.what, o.registers, o.spill));
  }
}
