/// Host tests for the `rajit` command line: exit codes, messages and `gen --emit cu` output.
// Runs the real binary (RAJIT_CLI_PATH) with RAJIT_CACHE_DIR pointing at a fresh folder. Nothing
// here compiles a kernel, so no NVRTC or GPU is needed.
#include <doctest/doctest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "generator/spec.hpp"
#include "runtime/driver.hpp"
#include "tests/host/tools/cli_support.hpp"

namespace cli = rajit::test::cli;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kSeedsFlags = {"--d-std", "56",     "--r",    "8",
                                              "--head-dim", "64",  "--causal", "--bias",
                                              "column", "--dtype", "bf16"};

std::vector<std::string> gen_args(std::vector<std::string> extra) {
  std::vector<std::string> args = {"gen"};
  args.insert(args.end(), kSeedsFlags.begin(), kSeedsFlags.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string describe(const cli::Result& r) {
  return r.command + "\n--- exit " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out +
         "--- stderr:\n" + r.err;
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

}  // namespace

TEST_CASE("cli: --help exits 0 and lists the subcommands") {
  cli::TempFolder cache("cli-cache");
  const auto r = cli::rajit({"--help"}, cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 0);
  for (const char* sub : {"info", "gen", "run", "cache"}) CHECK(cli::contains(r.out, sub));
  const auto g = cli::rajit({"gen", "--help"}, cache.path());
  CAPTURE(describe(g));
  CHECK(g.exit_code == 0);
  CHECK(cli::contains(g.out, "--d-std"));
  CHECK(cli::contains(g.out, "--arch"));
}

TEST_CASE("cli: usage errors exit 2") {
  cli::TempFolder cache("cli-cache");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{}, {"frobnicate"}, {"gen", "--no-such-flag"},
                                             {"gen", "--d-std", "many"}, {"cache"}}) {
    const auto r = cli::rajit(args, cache.path());
    CAPTURE(describe(r));
    CHECK(r.exit_code == 2);
    CHECK_FALSE(r.err.empty());
  }
}

TEST_CASE("cli: gen with an invalid spec exits 2 naming every bad field and writes nothing") {
  cli::TempFolder cache("cli-cache");
  cli::TempFolder work("cli-out");
  const fs::path out = work.path() / "kernels";
  const auto r = cli::rajit({"gen", "--d-std", "3", "--r", "3", "--head-dim", "48", "--emit", "cu",
                             "--out", out.string()},
                            cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 2);
  CHECK(cli::contains(r.err, "d_std=3"));
  CHECK(cli::contains(r.err, "r=3: must be a multiple of 4 in [0, 256]"));
  CHECK(cli::contains(r.err, "head_dim=48"));
  CHECK_FALSE(fs::exists(out));

  const auto one = cli::rajit({"gen", "--d-std", "3", "--emit", "cu", "--out", out.string()},
                              cache.path());
  CAPTURE(describe(one));
  CHECK(one.exit_code == 2);
  CHECK(cli::contains(one.err, "d_std=3"));
}

TEST_CASE("cli: bench with an unknown --layout exits 2 naming the allowed layouts, GPU or not") {
  cli::TempFolder cache("cli-cache");
  const auto r = cli::rajit({"bench", "--layout", "diagonal"}, cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 2);
  CHECK(cli::contains(r.err, "layout=diagonal: must be separate or folded"));
}

TEST_CASE("cli: bench --gates takes random or none, and none only for forward timing, GPU or not") {
  cli::TempFolder cache("cli-cache");
  const auto bad = cli::rajit({"bench", "--gates", "ones"}, cache.path());
  CAPTURE(describe(bad));
  CHECK(bad.exit_code == 2);
  CHECK(cli::contains(bad.err, "gates=ones: must be random or none"));
  const auto backward = cli::rajit({"bench", "--gates", "none", "--backward"}, cache.path());
  CAPTURE(describe(backward));
  CHECK(backward.exit_code == 2);
  CHECK(cli::contains(backward.err, "gates=none: forward timing only"));
}

TEST_CASE("cli: bench --turn is a count from 1, and only where RA and its baseline run in turn") {
  cli::TempFolder cache("cli-cache");
  const auto zero = cli::rajit({"bench", "--layout", "folded", "--turn", "0"}, cache.path());
  CAPTURE(describe(zero));
  CHECK(zero.exit_code != 0);
  CHECK(cli::contains(zero.err, "--turn"));
  const auto separate = cli::rajit({"bench", "--turn", "10"}, cache.path());
  CAPTURE(describe(separate));
  CHECK(separate.exit_code == 2);
  CHECK(cli::contains(separate.err, "turn=10: only where RA and its baseline are timed in turn"));
  const auto alone = cli::rajit({"bench", "--layout", "folded", "--turn", "10", "--no-baseline"},
                                cache.path());
  CAPTURE(describe(alone));
  CHECK(alone.exit_code == 2);
  CHECK(cli::contains(alone.err, "turn=10:"));
}

TEST_CASE("cli: gen with an unsupported arch exits 2 naming the allowed archs") {
  cli::TempFolder cache("cli-cache");
  cli::TempFolder work("cli-out");
  const auto r = cli::rajit(gen_args({"--arch", "sm_75", "--emit", "cu", "--out",
                                      (work.path() / "k").string()}),
                            cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 2);
  CHECK(cli::contains(r.err, "sm_75"));
  CHECK(cli::contains(r.err, "sm_80, sm_86, sm_89, sm_90, sm_90a"));
  CHECK_FALSE(fs::exists(work.path() / "k"));
}

TEST_CASE("cli: gen rejects bad bias, emit, tile and spec keys with exit 2") {
  cli::TempFolder cache("cli-cache");
  cli::TempFolder work("cli-out");
  const std::string out = (work.path() / "k").string();
  struct Case {
    std::vector<std::string> args;
    const char* needle;
  };
  const Case cases[] = {
      {{"gen", "--bias", "diagonal", "--emit", "cu", "--out", out}, "bias=diagonal"},
      {{"gen", "--dtype", "fp8", "--emit", "cu", "--out", out}, "dtype=fp8"},
      {gen_args({"--emit", "exe", "--out", out}), "emit=exe"},
      {gen_args({"--tile", "bm96.bn64.w4.s2", "--emit", "cu", "--out", out}), "block_m=96"},
      {gen_args({"--tile", "bm128.bn64", "--emit", "cu", "--out", out}), "bm128.bn64.w4.s2"},
      {{"gen", "--spec", "fwd.bf16.ds056.r8.d64.causal.colbias", "--emit", "cu", "--out", out},
       "ds056"},
      {{"gen", "--spec", "fwd.bf16.ds56.r8.d48.causal.colbias", "--emit", "cu", "--out", out},
       "head_dim=48"},
  };
  for (const Case& c : cases) {
    const auto r = cli::rajit(c.args, cache.path());
    CAPTURE(describe(r));
    CHECK(r.exit_code == 2);
    CHECK(cli::contains(r.err, c.needle));
  }
  CHECK_FALSE(fs::exists(work.path() / "k"));
}

TEST_CASE("cli: info exits 0 and says whether kernels can run here") {
  cli::TempFolder cache("cli-cache");
  const auto r = cli::rajit({"info"}, cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 0);
  CHECK(cli::contains(r.out, "rajit "));
  CHECK(cli::contains(r.out, "templates: "));
  CHECK(cli::contains(r.out, "cache: " + cache.path().string()));
  CHECK(cli::contains(r.out, "nvrtc: "));
  if (!rajit::rt::probe_driver().ok) {
    CHECK(cli::contains(r.out, "driver: unavailable"));
    CHECK(cli::contains(r.out, "cannot run"));
  } else {
    CHECK(cli::contains(r.out, "gpus: "));
  }
}

TEST_CASE("cli: cache ls and rm work on an empty cache") {
  cli::TempFolder cache("cli-cache");
  const auto ls = cli::rajit({"cache", "ls"}, cache.path());
  CAPTURE(describe(ls));
  CHECK(ls.exit_code == 0);
  CHECK(cli::contains(ls.out, "0 entries in " + cache.path().string()));
  const auto rm_nothing = cli::rajit({"cache", "rm"}, cache.path());
  CAPTURE(describe(rm_nothing));
  CHECK(rm_nothing.exit_code == 2);
  const auto rm_missing = cli::rajit({"cache", "rm", "no-such-entry.cubin"}, cache.path());
  CAPTURE(describe(rm_missing));
  CHECK(rm_missing.exit_code == 1);
  CHECK(cli::contains(rm_missing.err, "no-such-entry.cubin"));
  const auto rm_all = cli::rajit({"cache", "rm", "--all"}, cache.path());
  CAPTURE(describe(rm_all));
  CHECK(rm_all.exit_code == 0);
  CHECK(cli::contains(rm_all.out, "removed 0 entries"));
}

TEST_CASE("cli: gen --emit cu writes the generator's sources and a manifest, and no temp files") {
  cli::TempFolder cache("cli-cache");
  cli::TempFolder work("cli-out");
  const fs::path out = work.path() / "nested" / "kernels";  // created as needed
  const auto r = cli::rajit(gen_args({"--emit", "cu", "--arch", "sm_80,sm_90", "--out", out.string()}),
                            cache.path());
  CAPTURE(describe(r));
  REQUIRE(r.exit_code == 0);
  CHECK(cli::contains(r.out, "manifest: "));

  std::set<std::string> on_disk;
  for (const std::string& name : names_in(out)) {
    CAPTURE(name);
    CHECK(name[0] != '.');  // no leftover temporary files
    on_disk.insert(name);
  }
  REQUIRE(on_disk.count("manifest.json") == 1);
  const auto manifest = nlohmann::json::parse(cli::slurp(out / "manifest.json"));
  CAPTURE(manifest.dump(2));
  CHECK(manifest.at("rajit_version").is_string());
  CHECK(manifest.at("template_set_hash").get<std::string>() == rajit::gen::template_set_hash());
  const auto& kernels = manifest.at("kernels");
  REQUIRE(kernels.is_array());
  REQUIRE(kernels.size() >= 2);  // one entry per (choice, arch)

  const rajit::gen::AttentionSpec seeds{56, 8, 64, true, rajit::gen::BiasKind::kColumn,
                                        rajit::gen::Dtype::kBf16};
  std::set<std::string> archs, listed{"manifest.json"};
  for (const auto& k : kernels) {
    CHECK(k.at("spec").get<std::string>() == "fwd.bf16.ds56.r8.d64.causal.colbias");
    const std::string arch = k.at("arch").get<std::string>();
    archs.insert(arch);
    const rajit::gen::TileConfig tile = rajit::gen::parse_tile_key(k.at("tile").get<std::string>());
    CHECK(rajit::gen::validate(seeds, tile, rajit::gen::parse_arch(arch).max_shared_bytes()).empty());
    CHECK(k.at("entry").get<std::string>() == rajit::gen::entry_name(seeds, tile));
    CHECK(k.at("threads").get<int>() == tile.warps * 32);
    CHECK_FALSE(k.contains("resources"));  // nothing was compiled
    const auto files = k.at("files").get<std::vector<std::string>>();
    REQUIRE(files.size() == 1);
    const rajit::gen::GeneratedSource src = rajit::gen::generate_forward(seeds, tile);
    CHECK(files[0] == src.readable_key + "." + arch + ".cu");
    REQUIRE(fs::exists(out / files[0]));
    CHECK(cli::slurp(out / files[0]) == src.text);  // the generator's text, byte for byte
    listed.insert(files[0]);
  }
  CHECK(archs == std::set<std::string>{"sm_80", "sm_90"});
  CHECK(listed == on_disk);  // every file is in the manifest, and nothing else was written
}

TEST_CASE("cli: gen --out at an unwritable path exits 2 with a message") {
  cli::TempFolder cache("cli-cache");
  const auto r = cli::rajit(gen_args({"--emit", "cu", "--out", "/proc/forbidden/x"}), cache.path());
  CAPTURE(describe(r));
  CHECK(r.exit_code == 2);
  CHECK(cli::contains(r.err, "/proc/forbidden"));
  CHECK_FALSE(fs::exists("/proc/forbidden"));
}
