/// NVRTC tier for the tuner: every candidate of a spec compiles in parallel, and `rajit gen
/// --bundle` builds a verified sm_90 bundle on a machine without a GPU.
#include <doctest/doctest.h>

#include <chrono>

#include "tests/host/tools/cli_support.hpp"
#include "tuner/autotune.hpp"
#include "tuner/bundle.hpp"

namespace cli = rajit::test::cli;

TEST_CASE("compile_candidates: every valid tile of the seeds' spec compiles on a thread pool") {
  const rajit::gen::AttentionSpec spec{56, 8, 64, true, rajit::gen::BiasKind::kColumn, rajit::gen::Dtype::kFp16};
  auto cs = rajit::tune::search_space(spec, {4, 16, 4096, 4096}, 90, 227 * 1024);
  const auto t0 = std::chrono::steady_clock::now();
  rajit::tune::compile_candidates(spec, cs, 90, 4);
  MESSAGE("compiled in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  int pending = 0;
  for (const auto& c : cs) {
    CAPTURE(c.tile.key());
    CAPTURE(c.reason);
    CHECK(c.status != rajit::tune::CandidateStatus::kCompileFailed);
    pending += c.status == rajit::tune::CandidateStatus::kPending;
  }
  CHECK(pending == static_cast<int>(rajit::gen::valid_tiles(spec, 227 * 1024, true).size()));
}

TEST_CASE("cli: gen --bundle writes sm_90 cubins whose SHA-256 the manifest carries") {
  cli::TempFolder cache("bundle-nvrtc");
  const auto dir = cache.path() / "bundle";
  const auto r = cli::rajit({"gen", "--bundle", dir.string(), "--arch", "sm_90", "--spec",
                             "fwd.bf16.ds56.r8.d64.causal.colbias,fwd.bf16.ds120.r8.d128.full.nobias",
                             "--shapes", "4x16x4096,2x16x8192,8x12x1024"},
                            cache.path());
  INFO(r.command << "\n" << r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const auto b = rajit::tune::Bundle::open(dir);
  CHECK(b->manifest().routes.size() == 6);
  for (const auto& route : b->manifest().routes) {
    const auto* k = b->kernel(route.spec, route.tile, route.arch);
    REQUIRE(k != nullptr);
    const auto bytes = b->read_cubin(*k);
    CHECK(bytes.size() > 1000);
    CHECK(std::string(bytes.data() + 1, 3) == "ELF");
  }
  const auto routed = b->route("fwd.bf16.ds56.r8.d64.causal.colbias", "tq4096.tk4096.bh64", "sm_90");
  CHECK(routed.has_value());
}
