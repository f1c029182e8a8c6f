/// Host tests for the strict renderer, Value kinds, template lookup, the flattener and
/// generate_forward().
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "generator/spec.hpp"
#include "templates/attention/limits.cuh"
#include "tests/host/generator/generator_test_support.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::SpecError;
using rajit::gen::TileConfig;
using rajit::gen::Value;
using rajit::gen::Values;
using rajit::test::gen_support::ScopedEnv;
using rajit::test::gen_support::ScratchDir;
using rajit::test::gen_support::write_text;

namespace {

using rajit::test::gen_support::has_problem;
using rajit::test::gen_support::joined;

// Problems of the SpecError `fn` throws; fails the test if it throws nothing or something else.
template <class Fn>
std::vector<std::string> problems_of(Fn&& fn) {
  try {
    fn();
  } catch (const SpecError& e) {
    return e.problems();
  }
  FAIL("expected a SpecError");
  return {};
}

// Splits on '\n' exactly (a trailing newline gives a last, empty piece).
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t eol = text.find('\n', pos);
    out.push_back(text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos));
    if (eol == std::string::npos) break;
    pos = eol + 1;
  }
  return out;
}

std::string trim_left(const std::string& s) {
  const std::size_t p = s.find_first_not_of(" \t");
  return p == std::string::npos ? "" : s.substr(p);
}

// Follows the #line markers of a flattened text and checks that every other line is the line of
// the named source file the markers say it is ("#pragma once" lines become empty). Returns the
// number of lines checked; reports each mismatch.
std::size_t check_line_markers(const std::string& flat,
                               const std::map<std::string, std::string>& sources) {
  std::map<std::string, std::vector<std::string>> lines;
  for (const auto& [name, text] : sources) lines[name] = split_lines(text);
  std::string file;
  long line = 0;
  std::size_t checked = 0;
  for (const std::string& out : split_lines(flat)) {
    if (out.rfind("#line ", 0) == 0) {
      const std::size_t q = out.find('"');
      REQUIRE(q != std::string::npos);
      line = std::stol(out.substr(6, q - 6));
      file = out.substr(q + 1, out.rfind('"') - q - 1);
      REQUIRE_MESSAGE(lines.count(file) == 1, "#line names an unknown file: ", file);
      continue;
    }
    if (file.empty()) {
      CHECK_MESSAGE(out.empty(), "text before the first #line marker: ", out);
      continue;
    }
    const auto& src = lines[file];
    CAPTURE(file);
    CAPTURE(line);
    CAPTURE(out);
    if (line < 1 || static_cast<std::size_t>(line) > src.size()) {
      CHECK_MESSAGE(out.empty(), "output line beyond the end of its source");
    } else {
      const std::string& want = src[static_cast<std::size_t>(line) - 1];
      if (trim_left(want).rfind("#pragma once", 0) == 0) CHECK(out.empty());
      else CHECK(out == want);
    }
    ++line;
    ++checked;
  }
  return checked;
}

std::size_t count_of(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

const AttentionSpec kSeeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};
// bm128.bn64.w8.s2: one 16-row tile per warp, within the register budget of every version.
const TileConfig kSeedsTile{128, 64, 8, 2};

}  // namespace

TEST_CASE("render: placeholders are replaced by their values") {
  const Values values = {{"X", Value::integer(42)},
                         {"NAME_2", Value::identifier("rajit_fwd")},
                         {"NOTE", Value::comment("hello, world")}};
  CHECK(rajit::gen::render("a ${X} b ${NAME_2}(${X}) // ${NOTE}\n", values) ==
        "a 42 b rajit_fwd(42) // hello, world\n");
  CHECK(rajit::gen::render("", {}) == "");
  CHECK(rajit::gen::render("no placeholders: $ { } $x {y} $", {}) ==
        "no placeholders: $ { } $x {y} $");
  CHECK(rajit::gen::render("${X}${X}", {{"X", Value::integer(-7)}}) == "-7-7");
}

TEST_CASE("render: an unknown placeholder is an error naming it and its line") {
  const auto problems =
      problems_of([] { rajit::gen::render("a ${A}\n${B}\nc ${C}\n", {{"A", Value::integer(1)}}); });
  CAPTURE(joined(problems));
  CHECK(problems.size() == 2);
  CHECK(has_problem(problems, "line 2: unknown placeholder ${B}"));
  CHECK(has_problem(problems, "line 3: unknown placeholder ${C}"));
}

TEST_CASE("render: a value no placeholder uses is an error") {
  const auto problems = problems_of([] {
    rajit::gen::render("${A}", {{"A", Value::integer(1)},
                                {"B", Value::integer(2)},
                                {"C", Value::identifier("c")}});
  });
  CAPTURE(joined(problems));
  CHECK(problems.size() == 2);
  CHECK(has_problem(problems, "value B is never used"));
  CHECK(has_problem(problems, "value C is never used"));
}

TEST_CASE("render: malformed ${ sequences are errors") {
  for (const char* text : {"${lower}", "${}", "${A", "x ${A-B}", "${A B}", "${ A}", "$${"}) {
    CAPTURE(text);
    const auto problems = problems_of([&] { rajit::gen::render(text, {}); });
    CAPTURE(joined(problems));
    CHECK(has_problem(problems, "malformed placeholder"));
  }
}

TEST_CASE("render: every offender is listed in one SpecError") {
  const std::string text = "ok ${A}\n${UNKNOWN}\n${bad}\nend ${NOPE}";
  const auto problems = problems_of([&] {
    rajit::gen::render(text, {{"A", Value::integer(1)}, {"EXTRA", Value::integer(2)}});
  });
  CAPTURE(joined(problems));
  CHECK(problems.size() == 4);
  CHECK(has_problem(problems, "line 2: unknown placeholder ${UNKNOWN}"));
  CHECK(has_problem(problems, "line 3: malformed placeholder"));
  CHECK(has_problem(problems, "line 4: unknown placeholder ${NOPE}"));
  CHECK(has_problem(problems, "value EXTRA is never used"));
  // what() carries all of them, one per line.
  try {
    rajit::gen::render(text, {{"A", Value::integer(1)}, {"EXTRA", Value::integer(2)}});
  } catch (const SpecError& e) {
    CHECK(count_of(e.what(), "\n") == 3);
  }
}

TEST_CASE("Value: identifier accepts C identifiers only") {
  for (const char* ok : {"a", "_", "_x1", "Bf16", "rajit_fwd_bf16_ds56", "CausalMask"}) {
    CAPTURE(ok);
    CHECK(Value::identifier(ok).text() == ok);
  }
  for (const char* bad : {"", "a b", "1x", "x;y", "a-b", "a.b", "x)", "a\nb", "é", "ns::T"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(Value::identifier(bad), doctest::Contains("not a C identifier"), SpecError);
  }
}

TEST_CASE("Value: comment accepts one printable ASCII line without */") {
  CHECK(Value::comment("fwd.bf16.ds56.r8.d64.causal.colbias.bm128.bn64.w4.s2").text() ==
        "fwd.bf16.ds56.r8.d64.causal.colbias.bm128.bn64.w4.s2");
  CHECK(Value::comment("opening /* is harmless").text() == "opening /* is harmless");
  CHECK_THROWS_AS(Value::comment("--std=c++17 */ x"), SpecError);
  for (const char* bad : {"a\nb", "a\rb", "tab\there", "end */", "*/", "caf\xc3\xa9", "nul\x01"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(Value::comment(bad), SpecError);
  }
  CHECK(Value::integer(0).text() == "0");
  CHECK(Value::integer(1234567890123LL).text() == "1234567890123");
}

TEST_CASE("template_text: an unknown template path throws SpecError") {
  CHECK_THROWS_WITH_AS(rajit::gen::template_text("attention/no_such_file.cuh"),
                       doctest::Contains("attention/no_such_file.cuh"), SpecError);
  CHECK_THROWS_AS(rajit::gen::template_text(""), SpecError);
  CHECK_FALSE(rajit::gen::template_text("attention/fwd_entry.cu.in").empty());
  CHECK_FALSE(rajit::gen::template_text("attention/limits.cuh").empty());
}

TEST_CASE("template_text: the embedded copy equals the templates in the source tree") {
  ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
  for (const char* p : {"attention/fwd_entry.cu.in", "attention/fwd.cuh", "attention/limits.cuh",
                        "attention/params.cuh", "common/host_device.cuh", "common/ptx.cuh"}) {
    CAPTURE(p);
    const auto on_disk = rajit::test::gen_support::read_text(
        std::filesystem::path(RAJIT_SOURCE_DIR) / "templates" / p);
    REQUIRE(on_disk.has_value());
    CHECK(rajit::gen::template_text(p) == *on_disk);
  }
}

TEST_CASE("template_text: $RAJIT_TEMPLATE_DIR overrides the embedded set and changes its hash") {
  const std::string embedded_hash = [] {
    ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
    return rajit::gen::template_set_hash();
  }();
  ScratchDir dir("tpl");
  std::filesystem::copy(std::filesystem::path(RAJIT_SOURCE_DIR) / "templates", dir.path(),
                        std::filesystem::copy_options::recursive);
  ScopedEnv env("RAJIT_TEMPLATE_DIR", dir.path().string());
  const std::string hash1 = rajit::gen::template_set_hash();
  CHECK(hash1 != embedded_hash);
  CHECK(hash1 == rajit::gen::template_set_hash());  // stable while nothing changes
  write_text(dir.path() / "common/ptx.cuh",
             *rajit::test::gen_support::read_text(dir.path() / "common/ptx.cuh") + "// edited\n");
  CHECK(rajit::gen::template_text("common/ptx.cuh").find("// edited") != std::string::npos);
  CHECK(rajit::gen::template_set_hash() != hash1);  // an edit never reuses a stale cache entry
  CHECK_THROWS_WITH_AS(rajit::gen::template_text("nope.cuh"),
                       doctest::Contains("RAJIT_TEMPLATE_DIR"), SpecError);
}

TEST_CASE("flatten: includes are inlined once, #pragma once dropped, #line markers exact") {
  ScratchDir dir("flat");
  const std::map<std::string, std::string> sources = {
      {"a.cuh", "#pragma once\n// file a\nint a_value = 1;\n"},
      {"sub/b.cuh", "#pragma once\n#include \"a.cuh\"\n  #include \"a.cuh\"\nint b_value = 2;\n"},
      {"main.cu", "// main\n#include \"a.cuh\"\n#include \"sub/b.cuh\"\nint main_value = 3;\n"}};
  for (const auto& [name, text] : sources) {
    if (name != "main.cu") write_text(dir.path() / name, text);
  }
  ScopedEnv env("RAJIT_TEMPLATE_DIR", dir.path().string());
  const std::string flat = rajit::gen::flatten(sources.at("main.cu"), "main.cu");
  CAPTURE(flat);
  CHECK(count_of(flat, "int a_value = 1;") == 1);
  CHECK(count_of(flat, "int b_value = 2;") == 1);
  CHECK(count_of(flat, "int main_value = 3;") == 1);
  CHECK(flat.find("#include") == std::string::npos);
  CHECK(flat.find("#pragma once") == std::string::npos);
  CHECK(flat.rfind("#line 1 \"main.cu\"\n", 0) == 0);
  CHECK(flat.find("#line 1 \"a.cuh\"") != std::string::npos);
  CHECK(flat.find("#line 1 \"sub/b.cuh\"") != std::string::npos);
  CHECK(flat.find("#line 3 \"main.cu\"") != std::string::npos);  // back in main after a.cuh
  CHECK(flat.find("#line 4 \"main.cu\"") != std::string::npos);  // ... and after sub/b.cuh
  // Definitions come before their users.
  CHECK(flat.find("a_value") < flat.find("b_value"));
  CHECK(flat.find("b_value") < flat.find("main_value"));
  CHECK(check_line_markers(flat, sources) >= 8);
}

TEST_CASE("flatten: <system> includes and missing templates are rejected") {
  CHECK_THROWS_WITH_AS(rajit::gen::flatten("// x\n#include <cuda_fp16.h>\n", "entry.cu"),
                       doctest::Contains("entry.cu:2"), SpecError);
  CHECK_THROWS_AS(rajit::gen::flatten("  #include <cstdint>\n", "entry.cu"), SpecError);
  CHECK_THROWS_WITH_AS(rajit::gen::flatten("#include \"attention/missing.cuh\"\n", "entry.cu"),
                       doctest::Contains("attention/missing.cuh"), SpecError);
}

TEST_CASE("flatten: the real template set flattens with exact #line markers") {
  ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
  std::map<std::string, std::string> sources;
  for (const char* p : {"attention/fwd.cuh", "attention/fwd_wgmma.cuh", "attention/fwd_tma.cuh",
                        "attention/wgmma_fwd_steps.cuh", "attention/limits.cuh",
                        "attention/params.cuh", "attention/policies.cuh", "attention/tile_copy.cuh",
                        "common/host_device.cuh",
                        "common/ptx.cuh", "common/wgmma.cuh"}) {
    sources[p] = rajit::gen::template_text(p);
  }
  for (const char* top : {"attention/fwd.cuh", "attention/fwd_wgmma.cuh", "attention/fwd_tma.cuh"}) {
    CAPTURE(top);
    const std::string flat = rajit::gen::flatten(sources.at(top), top);
    CHECK(flat.find("#include") == std::string::npos);
    CHECK(check_line_markers(flat, sources) > 100);
  }
}

TEST_CASE("generate_forward: output is deterministic, self-contained and fully rendered") {
  ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
  const auto a = rajit::gen::generate_forward(kSeeds, kSeedsTile);
  const auto b = rajit::gen::generate_forward(kSeeds, kSeedsTile);
  CHECK(a.text == b.text);
  CHECK(a.entry == b.entry);
  CHECK(a.options == b.options);
  CHECK(a.text.find("#include") == std::string::npos);
  CHECK(a.text.find("${") == std::string::npos);
  CHECK(a.entry == rajit::gen::entry_name(kSeeds, kSeedsTile));
  CHECK(a.readable_key == "fwd.bf16.ds56.r8.d64.causal.colbias.bm128.bn64.w8.s2");
  CHECK(a.text.find(a.entry + "(") != std::string::npos);
  CHECK(a.text.find("extern \"C\"") != std::string::npos);
  CHECK(a.text.rfind("// rajit ", 0) == 0);
  CHECK(a.text.find(a.readable_key) != std::string::npos);
  CHECK(a.threads == 256);
  CHECK(a.shared_bytes == 55808);
  CHECK(a.template_set_hash == rajit::gen::template_set_hash());
  CHECK(std::find(a.options.begin(), a.options.end(), "--std=c++17") != a.options.end());
  for (const auto& o : a.options) CHECK(o.rfind("--gpu-architecture", 0) != 0);  // added per arch
}

TEST_CASE("generate_forward: every valid config of a grid renders, and differently") {
  ScopedEnv no_dir("RAJIT_TEMPLATE_DIR", std::nullopt);
  std::set<std::string> texts;
  std::size_t count = 0;
  for (int ds : {4, 56, 60, 128})
    for (int r : {0, 4, 8, 128})
      for (int d : {32, 64, 256})
        for (bool causal : {false, true})
          for (BiasKind bias : {BiasKind::kNone, BiasKind::kColumn})
            for (Dtype dtype : {Dtype::kFp16, Dtype::kBf16}) {
              const AttentionSpec s{ds, r, d, causal, bias, dtype};
              if (!rajit::gen::validate(s).empty()) continue;
              for (const TileConfig& t : {TileConfig{64, 32, 4, 2}, TileConfig{128, 64, 8, 3}}) {
                if (!rajit::gen::validate(s, t, 1 << 30).empty()) continue;
                CAPTURE(s.key());
                CAPTURE(t.key());
                const auto src = rajit::gen::generate_forward(s, t);
                CHECK(src.text.find("${") == std::string::npos);
                CHECK(src.text.find("#include") == std::string::npos);
                CHECK(src.threads == t.warps * 32);
                CHECK(src.shared_bytes ==
                      rajit::attn::fwd_shared_bytes(ds, r, d, t.block_m, t.block_n, t.stages));
                texts.insert(src.text);
                ++count;
              }
            }
  CHECK(count > 100);
  CHECK(texts.size() == count);
}

TEST_CASE("generate_forward: an invalid spec or tile throws before rendering") {
  CHECK_THROWS_WITH_AS(
      rajit::gen::generate_forward(AttentionSpec{3, 8, 64, true, BiasKind::kNone, Dtype::kBf16},
                                   kSeedsTile),
      doctest::Contains("d_std=3"), SpecError);
  CHECK_THROWS_WITH_AS(rajit::gen::generate_forward(kSeeds, TileConfig{96, 64, 4, 2}),
                       doctest::Contains("block_m=96"), SpecError);
  // Shared memory is device-specific and is not checked here: 64 KiB of Q/O alone.
  const AttentionSpec wide{128, 128, 128, false, BiasKind::kNone, Dtype::kBf16};
  const TileConfig big{128, 128, 8, 3};
  REQUIRE(rajit::gen::validate(wide, big, 1 << 30).empty());
  REQUIRE_FALSE(rajit::gen::validate(wide, big, 227 * 1024).empty());
  CHECK_NOTHROW(rajit::gen::generate_forward(wide, big));
}
