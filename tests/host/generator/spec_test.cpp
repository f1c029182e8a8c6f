/// Host tests for AttentionSpec / TileConfig / Arch: keys, parsing, validation and the tile space.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "generator/spec.hpp"
#include "templates/attention/limits.cuh"
#include "tests/host/generator/generator_test_support.hpp"

using rajit::gen::Arch;
using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::SpecError;
using rajit::gen::TileConfig;

namespace {

using rajit::test::gen_support::has_problem;
using rajit::test::gen_support::joined;

// Every spec of a grid that mixes valid and invalid widths: keys do not depend on validity.
std::vector<AttentionSpec> spec_grid() {
  std::vector<AttentionSpec> out;
  for (int ds : {3, 4, 8, 56, 60, 64, 100, 128, 256, 1000})
    for (int r : {0, 4, 8, 12, 128, 252, 256})
      for (int d : {32, 48, 64, 96, 128, 256})
        for (bool causal : {false, true})
          for (BiasKind bias : {BiasKind::kNone, BiasKind::kColumn})
            for (Dtype dtype : {Dtype::kFp16, Dtype::kBf16})
              out.push_back(AttentionSpec{ds, r, d, causal, bias, dtype});
  return out;
}

std::vector<AttentionSpec> valid_spec_grid() {
  std::vector<AttentionSpec> out;
  for (const auto& s : spec_grid()) {
    if (rajit::gen::validate(s).empty()) out.push_back(s);
  }
  return out;
}

std::vector<TileConfig> tile_grid() {
  std::vector<TileConfig> out;
  for (int bm : {16, 32, 64, 96, 128, 256})
    for (int bn : {16, 32, 64, 128, 256})
      for (int w : {1, 2, 4, 8, 16})
        for (int s : {0, 1, 2, 3, 4}) out.push_back(TileConfig{bm, bn, w, s});
  return out;
}

bool is_c_identifier(const std::string& s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

const AttentionSpec kSeeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};

}  // namespace

TEST_CASE("AttentionSpec: the seeds' config has the documented key") {
  CHECK(kSeeds.key() == "fwd.bf16.ds56.r8.d64.causal.colbias");
  CHECK(AttentionSpec{60, 4, 64, false, BiasKind::kNone, Dtype::kFp16}.key() ==
        "fwd.fp16.ds60.r4.d64.full.nobias");
}

TEST_CASE("AttentionSpec: every key of a grid round-trips through parse_spec_key") {
  std::set<std::string> keys;
  for (const AttentionSpec& s : spec_grid()) {
    const std::string key = s.key();
    CAPTURE(key);
    const AttentionSpec back = rajit::gen::parse_spec_key(key);
    CHECK(back == s);
    CHECK(back.key() == key);
    keys.insert(key);
  }
  CHECK(keys.size() == spec_grid().size());  // distinct specs have distinct keys
}

TEST_CASE("TileConfig: every key of a grid round-trips through parse_tile_key") {
  std::set<std::string> keys;
  for (const TileConfig& t : tile_grid()) {
    const std::string key = t.key();
    CAPTURE(key);
    const TileConfig back = rajit::gen::parse_tile_key(key);
    CHECK(back == t);
    CHECK(back.key() == key);
    keys.insert(key);
  }
  CHECK(keys.size() == tile_grid().size());
  CHECK(TileConfig{128, 64, 4, 2}.key() == "bm128.bn64.w4.s2");
}

TEST_CASE("AttentionSpec: parse_spec_key rejects malformed keys with SpecError") {
  const char* bad[] = {
      "",
      "fwd",
      "fwd.bf16.ds56.r8.d64.causal",                // missing part
      "fwd.bf16.ds56.r8.causal.colbias",            // missing head_dim
      "fwd.bf16.ds56.r8.d64.causal.colbias.extra",  // one part too many
      "fwd.bf16.ds56.r8.d64.causal.colbias.",       // trailing dot
      ".fwd.bf16.ds56.r8.d64.causal.colbias",       // leading dot
      "bwd.bf16.ds56.r8.d64.causal.colbias",        // wrong direction
      "fwd.fp32.ds56.r8.d64.causal.colbias",        // wrong dtype
      "fwd.BF16.ds56.r8.d64.causal.colbias",        // tokens are case-sensitive
      "fwd.bf16.ds056.r8.d64.causal.colbias",       // leading zero
      "fwd.bf16.ds56.r08.d64.causal.colbias",       // leading zero
      "fwd.bf16.ds56.r00.d64.causal.colbias",       // leading zeros on zero
      "fwd.bf16.ds56.r8.d064.causal.colbias",       // leading zero
      "fwd.bf16.ds.r8.d64.causal.colbias",          // missing number
      "fwd.bf16.ds56.r.d64.causal.colbias",         // missing number
      "fwd.bf16.ds-4.r8.d64.causal.colbias",        // negative
      "fwd.bf16.ds+4.r8.d64.causal.colbias",        // sign
      "fwd.bf16.ds 4.r8.d64.causal.colbias",        // space
      "fwd.bf16.ds56x.r8.d64.causal.colbias",       // trailing junk
      "fwd.bf16.ds99999999999.r8.d64.causal.colbias",  // overflows int
      "fwd.bf16.d56.r8.d64.causal.colbias",         // wrong prefix
      "fwd.bf16.r8.ds56.d64.causal.colbias",        // wrong order
      "fwd.bf16.ds56.r8.d64.masked.colbias",        // wrong mask token
      "fwd.bf16.ds56.r8.d64.causal.bias",           // wrong bias token
      "fwd.bf16.ds56.r8.d64.colbias.causal",        // swapped tokens
      "fwd,bf16,ds56,r8,d64,causal,colbias",        // wrong separator
  };
  for (const char* key : bad) {
    CAPTURE(key);
    CHECK_THROWS_AS(rajit::gen::parse_spec_key(key), SpecError);
    CHECK_THROWS_WITH_AS(rajit::gen::parse_spec_key(key),
                         doctest::Contains("fwd.bf16.ds56.r8.d64.causal.colbias"), SpecError);
  }
  // The smallest canonical numbers are accepted.
  CHECK(rajit::gen::parse_spec_key("fwd.fp16.ds0.r0.d0.full.nobias").r == 0);
}

TEST_CASE("TileConfig: parse_tile_key rejects malformed keys with SpecError") {
  const char* bad[] = {"",
                       "bm128.bn64.w4",
                       "bm128.bn64.w4.s2.s3",
                       "bm128.bn64.w4.s2.",
                       "bm0128.bn64.w4.s2",
                       "bm128.bn064.w4.s2",
                       "bm128.bn64.w04.s2",
                       "bm128.bn64.w4.s02",
                       "BM128.bn64.w4.s2",
                       "bn64.bm128.w4.s2",
                       "bm128.bn64.w4.st2",
                       "bm128.bn64.w.s2",
                       "bm-128.bn64.w4.s2",
                       "bm128.bn64.w4.s2x",
                       "bm128,bn64,w4,s2",
                       "fwd.bf16.ds56.r8.d64.causal.colbias"};
  for (const char* key : bad) {
    CAPTURE(key);
    CHECK_THROWS_WITH_AS(rajit::gen::parse_tile_key(key), doctest::Contains("bm128.bn64.w4.s2"),
                         SpecError);
  }
}

TEST_CASE("AttentionSpec: parse_bias and parse_dtype accept exactly the documented tokens") {
  CHECK(rajit::gen::parse_bias("none") == BiasKind::kNone);
  CHECK(rajit::gen::parse_bias("column") == BiasKind::kColumn);
  CHECK(rajit::gen::parse_dtype("fp16") == Dtype::kFp16);
  CHECK(rajit::gen::parse_dtype("bf16") == Dtype::kBf16);
  for (BiasKind b : {BiasKind::kNone, BiasKind::kColumn}) {
    CHECK(rajit::gen::parse_bias(rajit::gen::to_string(b)) == b);
  }
  for (Dtype d : {Dtype::kFp16, Dtype::kBf16}) {
    CHECK(rajit::gen::parse_dtype(rajit::gen::to_string(d)) == d);
  }
  CHECK_THROWS_WITH_AS(rajit::gen::parse_bias("diagonal"),
                       doctest::Contains("bias=diagonal: must be none or column"), SpecError);
  CHECK_THROWS_WITH_AS(rajit::gen::parse_dtype("fp32"),
                       doctest::Contains("dtype=fp32: must be fp16 or bf16"), SpecError);
  CHECK_THROWS_AS(rajit::gen::parse_bias("Column"), SpecError);
  CHECK_THROWS_AS(rajit::gen::parse_dtype(""), SpecError);
}

TEST_CASE("AttentionSpec: validate accepts the documented ranges and nothing else") {
  for (int ds = -4; ds <= 264; ++ds)
    for (int r : {-4, 0, 3, 4, 8, 252, 256, 260})
      for (int d : {0, 16, 32, 48, 64, 96, 128, 192, 256, 512}) {
        const AttentionSpec s{ds, r, d, true, BiasKind::kNone, Dtype::kBf16};
        const bool ds_ok = ds >= 4 && ds <= 256 && ds % 4 == 0;
        const bool r_ok = r >= 0 && r <= 256 && r % 4 == 0;
        const bool d_ok = d == 32 || d == 64 || d == 96 || d == 128 || d == 256;
        const bool sum_ok = !(ds_ok && r_ok) || ds + r <= 256;
        const auto problems = rajit::gen::validate(s);
        CAPTURE(s.key());
        CAPTURE(joined(problems));
        CHECK(problems.empty() == (ds_ok && r_ok && d_ok && sum_ok));
        CHECK(problems.size() == static_cast<std::size_t>(!ds_ok + !r_ok + !d_ok + !sum_ok));
      }
  CHECK(rajit::gen::validate(kSeeds).empty());
  CHECK(rajit::gen::validate(AttentionSpec{}).empty());  // the defaults are valid
}

TEST_CASE("AttentionSpec: validate lists every bad field at once with its allowed values") {
  const AttentionSpec s{3, 3, 48, true, BiasKind::kNone, Dtype::kBf16};
  const auto problems = rajit::gen::validate(s);
  CAPTURE(joined(problems));
  REQUIRE(problems.size() == 3);
  CHECK(has_problem(problems, "d_std=3: must be a multiple of 4 in [4, 256]"));
  CHECK(has_problem(problems, "r=3: must be a multiple of 4 in [0, 256]"));
  CHECK(has_problem(problems, "head_dim=48: must be one of 32, 64, 96, 128 or 256"));

  // require_valid throws one SpecError carrying all of them, one per line.
  try {
    rajit::gen::require_valid(s);
    FAIL("require_valid accepted an invalid spec");
  } catch (const SpecError& e) {
    CHECK(e.problems() == problems);
    const std::string what = e.what();
    CHECK(what == problems[0] + "\n" + problems[1] + "\n" + problems[2]);
  }

  const auto wide = rajit::gen::validate(AttentionSpec{252, 8, 64, true, BiasKind::kNone, Dtype::kBf16});
  REQUIRE(wide.size() == 1);
  CHECK(wide[0].find("d_std+r=260: must be at most 256") != std::string::npos);
  CHECK_NOTHROW(rajit::gen::require_valid(kSeeds));
}

TEST_CASE("TileConfig: validate names every bad tile field and its allowed values") {
  const auto problems = rajit::gen::validate(kSeeds, TileConfig{96, 16, 2, 4}, 1 << 30);
  CAPTURE(joined(problems));
  CHECK(problems.size() == 4);
  CHECK(has_problem(problems, "block_m=96: must be 64 or 128"));
  CHECK(has_problem(problems, "block_n=16: must be 32, 64 or 128"));
  CHECK(has_problem(problems, "warps=2: must be 4 or 8"));
  CHECK(has_problem(problems, "stages=4: must be in [2, 3]"));

  // Spec and tile problems are reported together.
  const auto both = rajit::gen::validate(AttentionSpec{3, 8, 64, true, BiasKind::kNone, Dtype::kBf16},
                                         TileConfig{128, 64, 4, 1}, 1 << 30);
  CAPTURE(joined(both));
  CHECK(has_problem(both, "d_std=3"));
  CHECK(has_problem(both, "stages=1"));
  CHECK_THROWS_WITH_AS(rajit::gen::require_valid(kSeeds, TileConfig{128, 64, 4, 7}, 1 << 30),
                       doctest::Contains("stages=7"), SpecError);
}

TEST_CASE("TileConfig: block_m must give each warp one or two 16-row tiles") {
  // A narrow spec, so that the register budget does not interfere.
  const AttentionSpec narrow{28, 4, 32, true, BiasKind::kNone, Dtype::kBf16};
  // 64 rows over 8 warps is 8 rows per warp: less than one MMA tile.
  const auto few = rajit::gen::validate(narrow, TileConfig{64, 32, 8, 2}, 1 << 30);
  CAPTURE(joined(few));
  REQUIRE(few.size() == 1);
  CHECK(few[0].find("block_m=64 with warps=8") != std::string::npos);
  CHECK(rajit::gen::validate(narrow, TileConfig{64, 32, 4, 2}, 1 << 30).empty());   // 1 tile/warp
  CHECK(rajit::gen::validate(narrow, TileConfig{128, 32, 4, 2}, 1 << 30).empty());  // 2 tiles/warp
  CHECK(rajit::gen::validate(narrow, TileConfig{128, 32, 8, 2}, 1 << 30).empty());  // 1 tile/warp
}

TEST_CASE("TileConfig: a tile over the shared-memory limit names the bytes it needs") {
  // Seeds' config, bm128.bn64.s2: Q/O 128 * (64 + 8) * 2 = 18432 bytes, per stage
  // 64 * (72 + 72) * 2 + 64 * 4 = 18688 bytes, two stages: 55808 bytes in all.
  const TileConfig t{128, 64, 8, 2};
  CHECK(rajit::attn::fwd_shared_bytes(56, 8, 64, 128, 64, 2) == 55808);
  CHECK(rajit::gen::validate(kSeeds, t, 55808).empty());  // the limit is inclusive
  const auto over = rajit::gen::validate(kSeeds, t, 55807);
  CAPTURE(joined(over));
  REQUIRE(over.size() == 1);
  CHECK(over[0].find("bm128.bn64.w8.s2") != std::string::npos);
  CHECK(over[0].find("needs 55808 bytes") != std::string::npos);
  CHECK(over[0].find("allows 55807") != std::string::npos);
  CHECK_THROWS_WITH_AS(rajit::gen::require_valid(kSeeds, t, 1024), doctest::Contains("55808 bytes"),
                       SpecError);
}

TEST_CASE("TileConfig: a tile whose accumulators exceed the register budget is rejected") {
  const AttentionSpec wide{64, 0, 256, false, BiasKind::kNone, Dtype::kFp16};
  // O accumulators alone: 2 row tiles per warp * 32 column tiles * 4 registers = 256.
  const int regs = rajit::attn::fwd_accumulator_registers(64, 0, 256, 128, 64, 4);
  REQUIRE(regs > rajit::attn::kRegisterBudget);
  const auto problems = rajit::gen::validate(wide, TileConfig{128, 64, 4, 2}, 1 << 30);
  CAPTURE(joined(problems));
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("bm128.bn64.w4.s2") != std::string::npos);
  CHECK(problems[0].find("need " + std::to_string(regs) + " registers") != std::string::npos);
  CHECK(problems[0].find("at most " + std::to_string(rajit::attn::kRegisterBudget)) !=
        std::string::npos);
}

TEST_CASE("TileConfig: tile validity follows the documented rules exactly") {
  for (const AttentionSpec& s : valid_spec_grid()) {
    if (s.causal || s.dtype == Dtype::kFp16 || s.bias == BiasKind::kColumn) continue;
    for (const TileConfig& t : tile_grid()) {
      const bool listed = (t.block_m == 64 || t.block_m == 128) &&
                          (t.block_n == 32 || t.block_n == 64 || t.block_n == 128) &&
                          (t.warps == 4 || t.warps == 8) && t.stages >= 2 && t.stages <= 3;
      if (!listed) {
        CHECK_FALSE(rajit::gen::validate(s, t, 1 << 30).empty());
        continue;
      }
      const int row_tiles = t.block_m / (16 * t.warps);
      const bool rows_ok = t.block_m % (16 * t.warps) == 0 && row_tiles >= 1 && row_tiles <= 2;
      const int dqk = (s.d_std + s.r + 15) / 16 * 16;
      const int regs = row_tiles * (s.head_dim / 8) * 4 + row_tiles * (t.block_n / 8) * 4 +
                       (dqk <= 128 && s.head_dim <= 128 ? row_tiles * (dqk / 16) * 4 : 0);
      const bool regs_ok = rows_ok && regs <= rajit::attn::kRegisterBudget;
      const int bytes = t.block_m * (std::max(dqk, s.head_dim) + 8) * 2 +
                        t.stages * (t.block_n * (dqk + 8 + s.head_dim + 8) * 2 + t.block_n * 4);
      for (int limit : {99 * 1024, 163 * 1024, 227 * 1024}) {
        CAPTURE(s.key());
        CAPTURE(t.key());
        CAPTURE(limit);
        const bool smem_ok = rows_ok && bytes <= limit;
        CHECK(rajit::gen::validate(s, t, limit).empty() == (rows_ok && regs_ok && smem_ok));
      }
    }
  }
}

TEST_CASE("TileConfig: valid_tiles is exactly the valid part of the tile space, in a fixed order") {
  const int limits[] = {99 * 1024, 163 * 1024, 227 * 1024, 48 * 1024};
  const std::vector<AttentionSpec> specs = valid_spec_grid();
  REQUIRE(specs.size() > 50);
  for (const AttentionSpec& s : specs) {
    if (s.causal || s.dtype == Dtype::kFp16) continue;  // the tile rules ignore both
    for (int limit : limits) {
      CAPTURE(s.key());
      CAPTURE(limit);
      const auto tiles = rajit::gen::valid_tiles(s, limit);
      CHECK(tiles == rajit::gen::valid_tiles(s, limit));  // deterministic
      std::set<std::tuple<int, int, int, int>> seen;
      for (const TileConfig& t : tiles) {
        CAPTURE(t.key());
        CHECK(rajit::gen::validate(s, t, limit).empty());
        seen.insert({t.block_m, t.block_n, t.warps, t.stages});
      }
      CHECK(seen.size() == tiles.size());  // no duplicates
      CHECK(std::is_sorted(tiles.begin(), tiles.end(), [](const TileConfig& a, const TileConfig& b) {
        return std::tie(a.block_m, a.block_n, a.warps, a.stages) <
               std::tie(b.block_m, b.block_n, b.warps, b.stages);
      }));
      // Complete: every valid tile of a wider grid is listed.
      for (const TileConfig& t : tile_grid()) {
        if (rajit::gen::validate(s, t, limit).empty()) {
          CAPTURE(t.key());
          CHECK(seen.count({t.block_m, t.block_n, t.warps, t.stages}) == 1);
        }
      }
    }
  }
  // The seeds' config has several shapes to tune over on every supported arch.
  for (const Arch& a : rajit::gen::supported_archs()) {
    CAPTURE(a.name());
    CHECK(rajit::gen::valid_tiles(kSeeds, a.max_shared_bytes()).size() >= 4);
  }
  CHECK(rajit::gen::valid_tiles(AttentionSpec{3, 0, 64, true, BiasKind::kNone, Dtype::kBf16},
                                227 * 1024)
            .empty());
}

TEST_CASE("Arch: parse_arch accepts sm_80 to sm_90a and names them") {
  const char* names[] = {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"};
  REQUIRE(rajit::gen::supported_archs().size() == std::size(names));
  for (const char* n : names) {
    CAPTURE(n);
    const Arch a = rajit::gen::parse_arch(n);
    CHECK(a.name() == n);
    CHECK(rajit::gen::parse_arch(a.name()) == a);
  }
  CHECK(rajit::gen::parse_arch("sm_90a").arch_specific);
  CHECK_FALSE(rajit::gen::parse_arch("sm_90").arch_specific);
  CHECK(rajit::gen::parse_arch("sm_86").cc == 86);
  CHECK(rajit::gen::parse_arch("sm_80").max_shared_bytes() == 163 * 1024);
  CHECK(rajit::gen::parse_arch("sm_86").max_shared_bytes() == 99 * 1024);
  CHECK(rajit::gen::parse_arch("sm_89").max_shared_bytes() == 99 * 1024);
  CHECK(rajit::gen::parse_arch("sm_90").max_shared_bytes() == 227 * 1024);
  CHECK(rajit::gen::parse_arch("sm_90a").max_shared_bytes() == 227 * 1024);
}

TEST_CASE("Arch: parse_arch rejects other archs and lists the allowed ones") {
  for (const char* n : {"sm_75", "sm_70", "sm_100", "sm_90A", "90", "compute_90", "", "sm_80 "}) {
    CAPTURE(n);
    CHECK_THROWS_WITH_AS(rajit::gen::parse_arch(n),
                         doctest::Contains("must be one of sm_80, sm_86, sm_89, sm_90, sm_90a"),
                         SpecError);
  }
  CHECK_THROWS_WITH_AS(rajit::gen::parse_arch("sm_75"), doctest::Contains("arch=sm_75"), SpecError);
}

TEST_CASE("AttentionSpec: entry_name is a distinct C identifier for every spec and tile") {
  CHECK(rajit::gen::entry_name(kSeeds, TileConfig{128, 64, 4, 2}) ==
        "rajit_fwd_bf16_ds56_r8_d64_causal_colbias_bm128_bn64_w4_s2");
  std::set<std::string> names;
  std::size_t count = 0;
  for (const AttentionSpec& s : valid_spec_grid()) {
    for (const TileConfig& t : {TileConfig{64, 32, 4, 2}, TileConfig{128, 128, 8, 3}}) {
      const std::string name = rajit::gen::entry_name(s, t);
      CAPTURE(name);
      CHECK(is_c_identifier(name));
      CHECK(name.rfind("rajit_fwd_", 0) == 0);
      names.insert(name);
      ++count;
    }
  }
  CHECK(names.size() == count);
}

TEST_CASE("TileConfig: wgmma tiles have their own key suffix, rules and messages") {
  using rajit::gen::MmaKind;
  const TileConfig wg{128, 128, 8, 3, MmaKind::kWgmma};
  CHECK(wg.key() == "bm128.bn128.w8.s3.wgmma");
  CHECK(rajit::gen::parse_tile_key("bm128.bn128.w8.s3.wgmma") == wg);
  CHECK(rajit::gen::parse_tile_key("bm128.bn128.w8.s3").mma == MmaKind::kSync);
  CHECK_THROWS_AS(rajit::gen::parse_tile_key("bm128.bn128.w8.s3.wgmmax"), SpecError);
  CHECK_THROWS_AS(rajit::gen::parse_tile_key("bm128.bn128.w8.s3.wgmma.x"), SpecError);

  const AttentionSpec seeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
  CHECK(rajit::gen::validate(seeds, wg, 227 * 1024).empty());
  // warps must be block_m / 16; stages exactly 3; head_dim 64 or 128; shared memory named.
  const auto bad_warps = rajit::gen::validate(seeds, TileConfig{128, 128, 4, 3, MmaKind::kWgmma}, 227 * 1024);
  REQUIRE(bad_warps.size() == 1);
  CHECK(bad_warps[0].find("warps = block_m / 16") != std::string::npos);
  const auto bad_stages = rajit::gen::validate(seeds, TileConfig{128, 128, 8, 2, MmaKind::kWgmma}, 227 * 1024);
  REQUIRE(bad_stages.size() == 1);
  CHECK(bad_stages[0].find("stages=2") != std::string::npos);
  const AttentionSpec d96{88, 8, 96, true, BiasKind::kColumn, Dtype::kBf16};
  const auto bad_dim = rajit::gen::validate(d96, wg, 227 * 1024);
  REQUIRE(bad_dim.size() == 1);
  CHECK(bad_dim[0].find("head_dim=96") != std::string::npos);
  const auto too_big = rajit::gen::validate(seeds, wg, 64 * 1024);
  REQUIRE(too_big.size() == 1);
  CHECK(too_big[0].find("bytes of shared memory") != std::string::npos);

  // valid_tiles lists wgmma tiles only when asked, after every mma.sync tile; they run on sm_90.
  const auto sync_only = rajit::gen::valid_tiles(seeds, 227 * 1024);
  const auto with_wg = rajit::gen::valid_tiles(seeds, 227 * 1024, true);
  CHECK(std::none_of(sync_only.begin(), sync_only.end(),
                     [](const TileConfig& t) { return t.mma == MmaKind::kWgmma; }));
  REQUIRE(with_wg.size() > sync_only.size());
  CHECK(std::equal(sync_only.begin(), sync_only.end(), with_wg.begin()));
  for (std::size_t i = sync_only.size(); i < with_wg.size(); ++i) {
    CHECK(with_wg[i].mma == MmaKind::kWgmma);
    CHECK(rajit::gen::validate(seeds, with_wg[i], 227 * 1024).empty());
    CHECK(rajit::gen::runs_on(with_wg[i], 90));
    CHECK_FALSE(rajit::gen::runs_on(with_wg[i], 80));
    CHECK_FALSE(rajit::gen::runs_on(with_wg[i], 89));
  }
}
