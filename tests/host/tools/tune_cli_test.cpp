/// Host tests for `rajit tune`: --dry-run output, shape ranges, usage errors, --export, no-GPU exit.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "generator/render.hpp"
#include "runtime/driver.hpp"
#include "tests/host/tools/cli_support.hpp"
#include "tuner/tune_cache.hpp"

namespace cli = rajit::test::cli;

namespace {
std::string describe(const cli::Result& r) {
  return r.command + "\n--- exit " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out +
         "--- stderr:\n" + r.err;
}
const std::string kSpec = "fwd.bf16.ds56.r8.d64.causal.colbias";
}  // namespace

TEST_CASE("cli: tune --dry-run lists every candidate per shape as JSON, ranges expanded") {
  cli::TempFolder cache("tune-cli");
  const auto r = cli::rajit({"tune", "--dry-run", "--spec", kSpec, "--shapes", "4x16x1024:4096,2x16x8192x4096",
                             "--format", "json"},
                            cache.path());
  INFO(describe(r));
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  const auto& rows = j["rows"];
  // 1024, 2048, 4096 and one explicit Tq != Tk shape; sm_90: 24 mma.sync + 12 wgmma grid points
  CHECK(rows.size() == 4 * (24 + 12));
  int defaults = 0, invalid = 0;
  for (const auto& row : rows) {
    defaults += row["default"].get<bool>();
    if (row["status"] == "invalid") {
      ++invalid;
      CHECK_FALSE(row["reason"].get<std::string>().empty());
    } else {
      CHECK(row["status"] == "pending");
    }
  }
  CHECK(defaults == 4);
  CHECK(invalid > 0);
  CHECK(rows.back()["shape"] == "2x16x8192x4096");
  CHECK(rows.back()["bucket"] == "tq8192.tk4096.bh32");
}

TEST_CASE("cli: tune --dry-run writes CSV to -o; sm_80 limits differ from sm_90") {
  cli::TempFolder cache("tune-cli");
  const auto out = cache.path() / "sweep.csv";
  const auto r = cli::rajit({"tune", "--dry-run", "--spec", "fwd.bf16.ds120.r8.d128.full.nobias", "--shapes",
                             "2x16x8192", "--format", "csv", "-o", out.string(), "--arch", "sm_86"},
                            cache.path());
  INFO(describe(r));
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.empty());
  const std::string csv = cli::slurp(out);
  CHECK(csv.rfind("device,spec,shape,bucket,tile,default,winner,status,ms,tflops,max_err,reason\n", 0) == 0);
  CHECK(cli::contains(csv, "dry-run sm_86"));
  const auto r90 = cli::rajit({"tune", "--dry-run", "--spec", "fwd.bf16.ds120.r8.d128.full.nobias", "--shapes",
                               "2x16x8192", "--format", "csv"},
                              cache.path());
  REQUIRE(r90.exit_code == 0);
  const auto count = [](const std::string& s, const std::string& w) {
    std::size_t n = 0;
    for (auto p = s.find(w); p != std::string::npos; p = s.find(w, p + 1)) ++n;
    return n;
  };
  CHECK(count(csv, ",pending,") < count(r90.out, ",pending,"));  // 99 KiB vs 227 KiB of smem
}

TEST_CASE("cli: tune usage errors exit 2 and name the flag") {
  cli::TempFolder cache("tune-cli");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"tune", "--dry-run", "--shapes", "4x16"},
           {"tune", "--dry-run", "--shapes", "4x16x0"},
           {"tune", "--dry-run", "--shapes", "4x16x4096:1024"},
           {"tune", "--dry-run", "--shapes", "4x16x1:8:*1"},
           {"tune", "--dry-run", "--format", "xml"},
           {"tune", "--dry-run", "--spec", "fwd.bf16.ds56"},
           {"tune", "--dry-run", "--arch", "sm_70"},
           {"tune", "--iters"},
       }) {
    const auto r = cli::rajit(args, cache.path());
    INFO(describe(r));
    CHECK(r.exit_code == 2);
    CHECK_FALSE(r.err.empty());
  }
  const auto r = cli::rajit({"tune", "--dry-run", "--shapes", "4xzx1"}, cache.path());
  CHECK(cli::contains(r.err, "shapes=4xzx1"));
}

TEST_CASE("cli: tune without a GPU exits 77; --export copies the tune cache") {
  cli::TempFolder cache("tune-cli");
  if (!rajit::rt::probe_driver().ok) {
    const auto r = cli::rajit({"tune", "--spec", kSpec, "--shapes", "1x1x128"}, cache.path());
    INFO(describe(r));
    CHECK(r.exit_code == 77);
    CHECK(cli::contains(r.err, "--dry-run"));
  }
  rajit::tune::TuneFile f;
  f.meta = {"0.1.0", rajit::gen::template_set_hash(), "13.0", 0};
  rajit::tune::TuneEntry e;
  e.device = "nvidia_h200.sm90.132sm";
  e.spec = kSpec;
  e.bucket = "tq4096.tk4096.bh64";
  e.template_set_hash = rajit::gen::template_set_hash();
  e.tile = {128, 32, 8, 2};
  f.entries.push_back(e);
  e.template_set_hash = "other";
  f.entries.push_back(e);
  const std::string text = rajit::tune::serialize_tune_file(f);
  {
    std::ofstream out(cache.path() / "tune.json");
    out << text;
  }
  const auto exported = cache.path() / "ranks.json";
  const auto r = cli::rajit({"tune", "--export", exported.string()}, cache.path());
  INFO(describe(r));
  REQUIRE(r.exit_code == 0);
  const auto back = rajit::tune::read_tune_file(exported);
  REQUIRE(back.entries.size() == 1);  // only this template set's entries are exported
  CHECK(back.entries[0].tile.key() == "bm128.bn32.w8.s2");
  // A corrupt tune file is reported and treated as empty; exporting still succeeds.
  {
    std::ofstream out(cache.path() / "tune.json");
    out << text.substr(0, 77);
  }
  const auto r2 = cli::rajit({"tune", "--export", exported.string()}, cache.path());
  CHECK(r2.exit_code == 0);
  CHECK(cli::contains(r2.err, "tune file ignored"));
  CHECK(rajit::tune::read_tune_file(exported).entries.empty());
}
