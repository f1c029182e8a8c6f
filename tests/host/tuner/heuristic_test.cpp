/// Host tests for the tile heuristic: it always returns a tile the device can run.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/heuristic.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::SpecError;
using rajit::gen::TileConfig;
using rajit::tune::Shape;

namespace {

struct Device {
  const char* name;
  int cc;
  int max_shared;
};
const Device kDevices[] = {{"sm_80", 80, 163 * 1024}, {"sm_86", 86, 99 * 1024}, {"sm_90", 90, 227 * 1024}};

std::vector<AttentionSpec> valid_specs() {
  std::vector<AttentionSpec> out;
  for (int ds : {4, 8, 28, 56, 60, 64, 96, 128, 192, 252, 256})
    for (int r : {0, 4, 8, 32, 64, 128, 252})
      for (int d : {32, 64, 96, 128, 256})
        for (bool causal : {false, true})
          for (BiasKind bias : {BiasKind::kNone, BiasKind::kColumn})
            for (Dtype dtype : {Dtype::kFp16, Dtype::kBf16}) {
              const AttentionSpec s{ds, r, d, causal, bias, dtype};
              if (rajit::gen::validate(s).empty()) out.push_back(s);
            }
  return out;
}

}  // namespace

TEST_CASE("heuristic: every valid spec gets a tile the device can run, or a clear SpecError") {
  const std::vector<AttentionSpec> specs = valid_specs();
  REQUIRE(specs.size() > 300);
  const Shape shapes[] = {{1, 1, 1, 1}, {1, 1, 128, 128}, {2, 8, 1000, 333}, {4, 16, 4096, 4096},
                          {64, 32, 16384, 16384}};
  for (const Device& dev : kDevices) {
    const std::string arch = dev.name;
    const std::string limit = std::to_string(dev.max_shared);
    for (const AttentionSpec& s : specs) {
      const bool any_fits = !rajit::gen::valid_tiles(s, dev.max_shared).empty();
      for (const Shape& shape : shapes) {
        CAPTURE(arch);
        CAPTURE(s.key());
        CAPTURE(shape.seqlen_q);
        if (any_fits) {
          const TileConfig t = rajit::tune::heuristic_tile(s, shape, dev.cc, dev.max_shared);
          CAPTURE(t.key());
          CHECK(rajit::gen::validate(s, t, dev.max_shared).empty());
          CHECK(rajit::tune::heuristic_tile(s, shape, dev.cc, dev.max_shared) == t);  // deterministic
        } else {
          // Documented: "Throws: gen::SpecError if ... nothing fits".
          CHECK_THROWS_WITH_AS(rajit::tune::heuristic_tile(s, shape, dev.cc, dev.max_shared),
                               doctest::Contains(limit.c_str()), SpecError);
        }
      }
    }
  }
}

TEST_CASE("heuristic: every valid spec runs on sm_80 and sm_90; on sm_86 only smem can stop it") {
  // validate(spec) accepting a spec that no tile of any arch can run would make it a spec error
  // that is only found at launch. 99 KiB parts may lack the shared memory for the widest specs.
  for (const Device& dev : kDevices) {
    std::vector<std::string> unrunnable;
    for (const AttentionSpec& s : valid_specs()) {
      if (s.causal || s.bias == BiasKind::kColumn || s.dtype == Dtype::kFp16) continue;
      if (!rajit::gen::valid_tiles(s, dev.max_shared).empty()) continue;
      // Allowed only on the 99 KiB part, and only when more shared memory would fix it.
      if (dev.cc == 86 && !rajit::gen::valid_tiles(s, 1 << 30).empty()) continue;
      unrunnable.push_back(s.key());
    }
    const std::string arch = dev.name;
    CAPTURE(arch);
    CHECK_MESSAGE(unrunnable.empty(), unrunnable.size(),
                  " valid specs have no valid tile; the first: ",
                  unrunnable.empty() ? std::string() : unrunnable.front(),
                  ", the last: ", unrunnable.empty() ? std::string() : unrunnable.back());
  }
}

TEST_CASE("heuristic: the seeds' config gets a runnable tile on every supported arch") {
  const AttentionSpec seeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  for (const rajit::gen::Arch& a : rajit::gen::supported_archs()) {
    CAPTURE(a.name());
    const TileConfig t = rajit::tune::heuristic_tile(seeds, {4, 16, 4096, 4096}, a.cc,
                                                     a.max_shared_bytes());
    CAPTURE(t.key());
    CHECK(rajit::gen::validate(seeds, t, a.max_shared_bytes()).empty());
  }
}

TEST_CASE("heuristic: causal Hopper tiles at head_dim 64 and 128 load two tiles ahead (4 stages) "
          "unless that costs a CTA per SM") {
  const int smem = 227 * 1024;
  const Shape shape{4, 16, 4096, 4096};
  const auto key = [&](const AttentionSpec& s) {
    return rajit::tune::heuristic_tile(s, shape, 90, smem).key();
  };
  const Dtype bf = Dtype::kBf16;
  // The seeds' spec, plain attention (the benchmark's baseline) and the d128 spec: 4 stages.
  CHECK(key({56, 8, 64, true, BiasKind::kColumn, bf}) == "bm128.bn64.w8.s4.wgmma");
  CHECK(key({64, 0, 64, true, BiasKind::kNone, bf}) == "bm128.bn64.w8.s4.wgmma");
  CHECK(key({120, 8, 128, true, BiasKind::kColumn, bf}) == "bm192.bn64.w12.s4.wgmma");
  // Non-causal: 3 (4 was no faster).
  CHECK(key({56, 8, 64, false, BiasKind::kColumn, bf}) == "bm128.bn64.w8.s3.wgmma");
  // Contraction 128 at head_dim 64: a fourth stage would leave one CTA per SM instead of two.
  CHECK(key({64, 64, 64, true, BiasKind::kNone, bf}) == "bm128.bn64.w8.s3.wgmma");
  // r = 0 with a bias at head_dim 64: the cp.async kernel spills at 4 stages.
  CHECK(key({64, 0, 64, true, BiasKind::kColumn, bf}) == "bm128.bn64.w8.s3.wgmma");
  // Not measured: other head dims keep 3.
  CHECK(key({88, 8, 96, true, BiasKind::kColumn, bf}).find(".s4") == std::string::npos);
  // Contraction 256 at head_dim 128: 4 stages do not fit; the 3-stage preference list applies.
  CHECK(key({128, 128, 128, true, BiasKind::kNone, bf}) == "bm128.bn64.w8.s3.wgmma");
  // sm_80 gets mma.sync tiles whatever the mask.
  CHECK(rajit::tune::heuristic_tile({56, 8, 64, true, BiasKind::kColumn, bf}, shape, 80,
                                    163 * 1024)
            .key()
            .find("wgmma") == std::string::npos);
}

TEST_CASE("heuristic: an invalid spec throws SpecError naming the bad field") {
  const AttentionSpec bad{3, 8, 48, true, BiasKind::kNone, Dtype::kBf16};
  for (const Device& dev : kDevices) {
    CAPTURE(dev.name);
    CHECK_THROWS_WITH_AS(rajit::tune::heuristic_tile(bad, {1, 1, 128, 128}, dev.cc, dev.max_shared),
                         doctest::Contains("d_std=3"), SpecError);
    CHECK_THROWS_WITH_AS(rajit::tune::heuristic_tile(bad, {1, 1, 128, 128}, dev.cc, dev.max_shared),
                         doctest::Contains("head_dim=48"), SpecError);
  }
  CHECK_THROWS_AS(rajit::tune::heuristic_tile(AttentionSpec{200, 100, 64, true, BiasKind::kNone,
                                                            Dtype::kBf16},
                                              {1, 1, 128, 128}, 90, 227 * 1024),
                  SpecError);
}

TEST_CASE("heuristic: a device too small for any tile gets a SpecError naming its limit") {
  const AttentionSpec seeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  CHECK_THROWS_WITH_AS(rajit::tune::heuristic_tile(seeds, {1, 1, 128, 128}, 80, 16 * 1024),
                       doctest::Contains("16384"), SpecError);
}
