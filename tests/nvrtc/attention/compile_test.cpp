/// nvrtc tier: every tile of a representative spec grid compiles for sm_80 and sm_90 without spills.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

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

struct Outcome {
  std::string what;
  bool ok = false;
  int registers = -1, spill = -1;
  bool wgmma_serialized = false;
  std::string log;
};

// Compiles jobs on a small thread pool (NVRTC is thread-safe; CI has 2 cores).
std::vector<Outcome> compile_all(const std::vector<Job>& jobs) {
  std::vector<Outcome> out(jobs.size());
  std::atomic<std::size_t> next{0};
  const unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < n; ++t) {
    pool.emplace_back([&] {
      for (std::size_t i = next++; i < jobs.size(); i = next++) {
        const Job& j = jobs[i];
        const auto src = rajit::gen::generate_forward(j.spec, j.tile);
        // wgmma tiles compile for sm_90a, everything else for the arch itself (as forward() does).
        const std::string arch = rajit::tune::arch_for(j.tile, j.arch.cc);
        rajit::rt::CompileRequest req{src.readable_key + ".cu", src.text, src.options, arch, false,
                                      true, src.entry};
        const auto res = rajit::rt::compile(req);
        Outcome& o = out[i];
        o.what = fmt::format("{} on {}", src.readable_key, arch);
        o.ok = res.ok && !res.cubin.empty();
        o.registers = res.resources.registers;
        o.spill = res.resources.spill_store_bytes + res.resources.spill_load_bytes;
        o.wgmma_serialized = res.resources.wgmma_serialized;
        if (!res.ok || o.wgmma_serialized) o.log = res.log.substr(0, 4000);
      }
    });
  }
  for (auto& t : pool) t.join();
  return out;
}

void check_all(const std::vector<Outcome>& outcomes) {
  for (const Outcome& o : outcomes) {
    CAPTURE(o.what);
    CAPTURE(o.log);
    CHECK(o.ok);
    CHECK(o.registers > 0);
    CHECK(o.registers <= 255);
    CHECK(o.spill == 0);
    CHECK_FALSE(o.wgmma_serialized);  // ptxas would put a wait after every wgmma
  }
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
