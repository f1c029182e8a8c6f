/// Host tests for the autotuner's choice logic and the tile policy, with fake timings.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "tuner/autotune.hpp"
#include "tuner/policy.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::TileConfig;
using rajit::tune::Candidate;
using rajit::tune::CandidateStatus;
using rajit::tune::TileSource;
using rajit::tune::TunePolicy;

namespace {

const AttentionSpec kSpec{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
constexpr int kSm90Smem = 227 * 1024;

Candidate timed(TileConfig t, double ms, bool is_default = false) {
  Candidate c;
  c.tile = t;
  c.is_default = is_default;
  c.status = CandidateStatus::kTimed;
  c.median_ms = ms;
  return c;
}

}  // namespace

TEST_CASE("search_space: every grid point once, invalid ones with reasons, the heuristic marked") {
  const auto cs = rajit::tune::search_space(kSpec, {4, 16, 4096, 4096}, 90, kSm90Smem);
  // sm_90: the 24 mma.sync grid points and the 12 wgmma ones (3 block_m x 2 block_n x 2 stage counts).
  const auto valid = rajit::gen::valid_tiles(kSpec, kSm90Smem, /*with_wgmma=*/true);
  CHECK(cs.size() == 24 + 12);
  int pending = 0, defaults = 0;
  for (const auto& c : cs) {
    if (c.status == CandidateStatus::kPending) ++pending;
    else CHECK_FALSE(c.reason.empty());
    defaults += c.is_default;
  }
  CHECK(pending == static_cast<int>(valid.size()));
  CHECK(defaults == 1);
  CHECK_THROWS_AS(rajit::tune::search_space(AttentionSpec{56, 8, 63, true, BiasKind::kNone, Dtype::kBf16},
                                            {1, 1, 1, 1}, 90, kSm90Smem),
                  rajit::gen::SpecError);
}

TEST_CASE("choose_winner: fastest wins; within 1% the heuristic, then the smallest key") {
  std::vector<Candidate> cs = {timed({64, 64, 4, 2}, 1.00, true), timed({128, 32, 8, 2}, 0.80),
                               timed({64, 32, 4, 2}, 0.85)};
  auto ch = rajit::tune::choose_winner(cs);
  CHECK(ch.winner == 1);
  CHECK(ch.runner_up == 2);
  CHECK(ch.runner_up_margin == doctest::Approx(0.0625));

  cs[0].median_ms = 0.805;  // the default is within 1% of the fastest: it wins the tie
  ch = rajit::tune::choose_winner(cs);
  CHECK(ch.winner == 0);
  CHECK(ch.runner_up == 1);
  CHECK(ch.runner_up_margin < 0);  // the runner-up was a little faster
  {
    rajit::tune::TuneResult r;
    r.spec = kSpec;
    r.shape = {1, 4, 256, 256};
    r.device = "nvidia_h200.sm90.132sm";
    r.bucket = rajit::tune::bucket_of(r.shape);
    r.candidates = cs;
    r.choice = ch;
    rajit::tune::TuneFile f;
    f.entries.push_back(r.entry());
    const auto back = rajit::tune::parse_tune_file(rajit::tune::serialize_tune_file(f));
    CHECK(back.entries.at(0).runner_up_margin == doctest::Approx(ch.runner_up_margin));
  }

  cs[0].median_ms = 1.0;  // two non-defaults within 1%: the smaller key wins, whatever the order
  cs[2].median_ms = 0.801;
  CHECK(rajit::tune::choose_winner(cs).winner == 2);
  std::swap(cs[1], cs[2]);
  CHECK(rajit::tune::choose_winner(cs).winner == 1);
  CHECK(cs[1].tile == TileConfig{64, 32, 4, 2});

  // Failed candidates never win, however fast they look.
  cs[1].status = CandidateStatus::kWrongOutput;
  cs[1].median_ms = 0.01;
  cs[2].status = CandidateStatus::kCompileFailed;
  ch = rajit::tune::choose_winner(cs);
  CHECK(ch.winner == 0);
  CHECK(ch.runner_up == -1);
  CHECK(ch.runner_up_margin == 0);
  CHECK(rajit::tune::choose_winner({}).winner == -1);
}

TEST_CASE("choose_winner: never slower than the heuristic default over random timings") {
  std::uint64_t x = 88172645463325252ull;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<Candidate> cs;
    const int n = 2 + static_cast<int>(x % 10);
    for (int i = 0; i < n; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      cs.push_back(timed({64 + 64 * (i % 2), 32 << (i % 3), 4, 2 + i % 2}, 1.0 + static_cast<double>(x % 1000) / 5000.0,
                         i == 0));
      if (i > 0 && x % 7 == 0) cs.back().status = CandidateStatus::kLaunchFailed;
    }
    const auto ch = rajit::tune::choose_winner(cs);
    REQUIRE(ch.winner >= 0);
    CHECK(cs[ch.winner].median_ms <= cs[0].median_ms);
  }
}

TEST_CASE("run_candidates: the default is measured first; invalid ones are never measured") {
  auto cs = rajit::tune::search_space(kSpec, {4, 16, 4096, 4096}, 90, kSm90Smem);
  std::vector<std::string> order;
  std::map<std::string, double> fake = {{"bm128.bn32.w8.s2", 0.5}};
  const rajit::tune::MeasureFn measure = [&](Candidate& c) {
    order.push_back(c.tile.key());
    CHECK(c.status == CandidateStatus::kPending);
    c.status = CandidateStatus::kTimed;
    c.median_ms = fake.count(c.tile.key()) ? fake[c.tile.key()] : 1.0;
    if (c.tile == TileConfig{64, 128, 4, 3}) {
      c.status = CandidateStatus::kWrongOutput;
      c.median_ms = 0.1;
    }
  };
  int progress = 0;
  rajit::tune::TuneOptions opt;
  opt.on_candidate = [&](const Candidate&, int, int count) {
    ++progress;
    CHECK(count == 24 + 12);
  };
  const auto ch = rajit::tune::run_candidates(cs, measure, opt);
  REQUIRE_FALSE(order.empty());
  for (const auto& c : cs) {
    if (c.is_default) CHECK(order.front() == c.tile.key());
  }
  CHECK(progress == 24 + 12);
  CHECK(order.size() == rajit::gen::valid_tiles(kSpec, kSm90Smem, true).size());
  CHECK(cs[ch.winner].tile.key() == "bm128.bn32.w8.s2");
  rajit::tune::TuneResult r;
  r.spec = kSpec;
  r.shape = {4, 16, 4096, 4096};
  r.device = "nvidia_h200.sm90.132sm";
  r.bucket = rajit::tune::bucket_of(r.shape);
  r.candidates = cs;
  r.choice = ch;
  const auto e = r.entry();
  CHECK(e.tile.key() == "bm128.bn32.w8.s2");
  CHECK(e.ms == 0.5);
  CHECK(e.default_ms == 1.0);
  CHECK(e.candidates == 24 + 12);
  CHECK(r.summary().find("36 candidates:") == 0);
  CHECK(r.summary().find("1 wrong output") != std::string::npos);
}

TEST_CASE("decide_tile: pins, then off, then bundle, tuned, on_miss tuning, heuristic") {
  rajit::tune::PolicyInputs in;
  in.heuristic = {64, 64, 4, 2};
  int tuned_now = 0;
  in.tune_now = [&]() -> std::optional<TileConfig> {
    ++tuned_now;
    return TileConfig{128, 32, 8, 3};
  };
  CHECK(rajit::tune::decide_tile(in).source == TileSource::kHeuristic);
  in.policy = TunePolicy::kOnMiss;
  auto d = rajit::tune::decide_tile(in);
  CHECK(d.source == TileSource::kTunedNow);
  CHECK(d.tile == TileConfig{128, 32, 8, 3});
  CHECK(tuned_now == 1);
  in.tuned = TileConfig{64, 32, 4, 2};
  d = rajit::tune::decide_tile(in);
  CHECK(d.source == TileSource::kTuned);
  CHECK(tuned_now == 1);  // a cache hit times nothing
  in.bundle_route = TileConfig{64, 128, 4, 2};
  CHECK(rajit::tune::decide_tile(in).source == TileSource::kBundle);
  in.policy = TunePolicy::kOff;
  CHECK(rajit::tune::decide_tile(in).tile == in.heuristic);
  in.env_pin = TileConfig{128, 64, 8, 2};
  CHECK(rajit::tune::decide_tile(in).source == TileSource::kEnvPinned);
  in.api_pin = TileConfig{64, 32, 4, 3};
  CHECK(rajit::tune::decide_tile(in).tile == TileConfig{64, 32, 4, 3});
  CHECK(rajit::tune::decide_tile(in).source == TileSource::kPinned);
}

TEST_CASE("parse_tune_policy: the three values; anything else names the setting") {
  CHECK(rajit::tune::parse_tune_policy("off", "RAJIT_TUNE") == TunePolicy::kOff);
  CHECK(rajit::tune::parse_tune_policy("cached", "RAJIT_TUNE") == TunePolicy::kCached);
  CHECK(rajit::tune::parse_tune_policy("on_miss", "RAJIT_TUNE") == TunePolicy::kOnMiss);
  CHECK_THROWS_WITH_AS(rajit::tune::parse_tune_policy("always", "RAJIT_TUNE"),
                       doctest::Contains("RAJIT_TUNE=always: must be off, cached or on_miss"),
                       rajit::gen::SpecError);
}
