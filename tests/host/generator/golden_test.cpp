/// Golden test for the generator (S54): the seeds' kernel source, byte for byte.
// RAJIT_UPDATE_GOLDENS=1 rewrites tests/golden/<readable_key>.cu; review the diff like code.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "generator/kernel_source.hpp"
#include "generator/spec.hpp"
#include "tests/host/generator/generator_test_support.hpp"

namespace {

namespace gs = rajit::test::gen_support;

bool update_goldens() {
  const char* v = std::getenv("RAJIT_UPDATE_GOLDENS");
  return v != nullptr && std::string(v) == "1";
}

// "line N: expected ... / actual ..." for the first line where a and b differ.
std::string first_difference(const std::string& expected, const std::string& actual) {
  std::size_t line = 1, start = 0;
  const std::size_t n = std::min(expected.size(), actual.size());
  std::size_t i = 0;
  for (; i < n && expected[i] == actual[i]; ++i) {
    if (expected[i] == '\n') {
      ++line;
      start = i + 1;
    }
  }
  const auto line_at = [&](const std::string& s) {
    if (start >= s.size()) return std::string("<end of file>");
    const std::size_t eol = s.find('\n', start);
    return s.substr(start, eol == std::string::npos ? std::string::npos : eol - start);
  };
  return "first difference at line " + std::to_string(line) + "\n  golden: " + line_at(expected) +
         "\n  actual: " + line_at(actual) + "\n(sizes: golden " + std::to_string(expected.size()) +
         " bytes, actual " + std::to_string(actual.size()) + " bytes)";
}

void check_golden(const rajit::gen::AttentionSpec& spec, const rajit::gen::TileConfig& tile) {
  // Goldens pin the embedded template set, never a $RAJIT_TEMPLATE_DIR a developer has set.
  gs::ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
  const rajit::gen::GeneratedSource src = rajit::gen::generate_forward(spec, tile);
  const std::filesystem::path path =
      std::filesystem::path(RAJIT_SOURCE_DIR) / "tests" / "golden" / (src.readable_key + ".cu");
  CAPTURE(path.string());
  if (update_goldens()) {
    gs::write_text(path, src.text);
    MESSAGE("rewrote golden " << path.string());
  }
  const auto golden = gs::read_text(path);
  REQUIRE_MESSAGE(golden.has_value(),
                  "golden file missing; run with RAJIT_UPDATE_GOLDENS=1 to create it");
  if (*golden != src.text) {
    FAIL_CHECK("generated source differs from the golden (RAJIT_UPDATE_GOLDENS=1 rewrites it)\n"
               << first_difference(*golden, src.text));
  }
}

}  // namespace

// The seeds' config (ds56 r8 d64, causal, column bias, bf16) with tile bm128.bn64.w8.s2 (two MMA
// row tiles per warp would be bm128.bn64.w4.s2, but that needs 160 accumulator registers, over
// limits.cuh's budget of 150, so generate_forward rejects it).
TEST_CASE("golden: the seeds' config with bm128.bn64.w8.s2 matches tests/golden byte for byte") {
  check_golden({56, 8, 64, true, rajit::gen::BiasKind::kColumn, rajit::gen::Dtype::kBf16},
               {128, 64, 8, 2});
}

// The same config with the Hopper family's heuristic tile (wgmma, sm_90a).
TEST_CASE("golden: the seeds' config with bm128.bn64.w8.s3.wgmma matches tests/golden byte for byte") {
  check_golden({56, 8, 64, true, rajit::gen::BiasKind::kColumn, rajit::gen::Dtype::kBf16},
               {128, 64, 8, 3, rajit::gen::MmaKind::kWgmma});
}

// The same tile as the TMA kernel over folded rows (what forward() runs on sm_90 when q_low
// follows k_std in memory).
TEST_CASE("golden: the seeds' config with bm128.bn64.w8.s3.tmafold matches tests/golden byte for byte") {
  check_golden({56, 8, 64, true, rajit::gen::BiasKind::kColumn, rajit::gen::Dtype::kBf16},
               {128, 64, 8, 3, rajit::gen::MmaKind::kTmaFolded});
}
