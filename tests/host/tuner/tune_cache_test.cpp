/// Host tests for the tune file: round trip, merge, limits, corruption of every kind, foreign
/// entries, version drift, concurrent writers.
#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "generator/render.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"
#include "tuner/tune_cache.hpp"

using rajit::gen::TileConfig;
using rajit::tune::TuneEntry;
using rajit::tune::TuneFile;
using rajit::tune::TuneFileError;

namespace {

TuneEntry make_entry(const std::string& device, const std::string& bucket, TileConfig tile,
                     std::string templates = rajit::gen::template_set_hash()) {
  TuneEntry e;
  e.device = device;
  e.spec = "fwd.bf16.ds56.r8.d64.causal.colbias";
  e.bucket = bucket;
  e.template_set_hash = std::move(templates);
  e.tile = tile;
  e.ms = 0.5;
  e.default_tile = TileConfig{64, 64, 4, 2};
  e.default_ms = 0.6;
  e.runner_up_margin = 0.03;
  e.candidates = 24;
  e.shape = "4x16x4096x4096";
  return e;
}

TuneFile sample_file() {
  TuneFile f;
  f.meta = {"0.1.0", rajit::gen::template_set_hash(), "13.0", 13000};
  f.entries.push_back(make_entry("nvidia_h200.sm90.132sm", "tq4096.tk4096.bh64", {128, 32, 8, 2}));
  f.entries.push_back(make_entry("nvidia_h100_80gb_hbm3.sm90.132sm", "tq1024.tk1024.bh128", {64, 64, 4, 3}));
  return f;
}

void write(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("tune file: device identity and shape buckets follow S42/S43") {
  CHECK(rajit::tune::device_identity("NVIDIA H100 80GB HBM3", 90, 132) == "nvidia_h100_80gb_hbm3.sm90.132sm");
  CHECK(rajit::tune::device_identity("NVIDIA H200", 90, 132) == "nvidia_h200.sm90.132sm");
  CHECK(rajit::tune::device_identity("  ", 80, 108) == "unknown.sm80.108sm");
  const auto b = rajit::tune::bucket_of({4, 16, 3000, 4096});
  CHECK(b.key() == "tq4096.tk4096.bh64");
  CHECK(rajit::tune::bucket_of({1, 1, 1, 1}).key() == "tq1.tk1.bh1");
  CHECK(rajit::tune::bucket_of({2, 3, 1025, 17}).key() == "tq2048.tk32.bh8");
  CHECK(rajit::tune::parse_bucket_key("tq4096.tk4096.bh64") == b);
  for (const char* bad : {"", "tq4096.tk4096", "tq3000.tk4096.bh64", "tq4096.tk4096.bh64.", "tq.tk1.bh1",
                          "tq0.tk1.bh1", "tk1.tq1.bh1", "tq99999999999999999.tk1.bh1"}) {
    CAPTURE(bad);
    CHECK_FALSE(rajit::tune::parse_bucket_key(bad).has_value());
  }
}

TEST_CASE("tune file: serialize then parse is the identity, and merge replaces only its key") {
  const TuneFile f = sample_file();
  const std::string text = rajit::tune::serialize_tune_file(f);
  const TuneFile g = rajit::tune::parse_tune_file(text);
  REQUIRE(g.entries.size() == 2);
  CHECK(g.meta.rajit_version == "0.1.0");
  CHECK(g.meta.driver_version == 13000);
  CHECK(rajit::tune::serialize_tune_file(g) == text);
  TuneFile m = g;
  rajit::tune::merge_entries(m, {make_entry("nvidia_h200.sm90.132sm", "tq4096.tk4096.bh64", {64, 32, 4, 2}),
                                 make_entry("nvidia_h200.sm90.132sm", "tq8192.tk8192.bh32", {64, 32, 4, 3})});
  REQUIRE(m.entries.size() == 3);
  int replaced = 0;
  for (const auto& e : m.entries) {
    if (e.bucket == "tq4096.tk4096.bh64") {
      CHECK(e.tile == TileConfig{64, 32, 4, 2});
      ++replaced;
    }
  }
  CHECK(replaced == 1);
  CHECK(rajit::tune::parse_tune_file("").entries.empty());
}

TEST_CASE("tune file: truncation at every byte and flipped bytes never crash and never half-parse") {
  const std::string text = rajit::tune::serialize_tune_file(sample_file());
  int rejected = 0;
  for (std::size_t n = 1; n < text.size(); ++n) {
    try {
      const TuneFile f = rajit::tune::parse_tune_file(std::string_view(text).substr(0, n));
      // Only whitespace may be cut without the file becoming invalid.
      CHECK(text.find_first_not_of(" \n", n) == std::string::npos);
      CHECK(f.entries.size() == 2);
    } catch (const TuneFileError& e) {
      CHECK(e.kind() == TuneFileError::Kind::kCorrupt);
      ++rejected;
    }
  }
  CHECK(rejected > static_cast<int>(text.size()) - 3);
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    std::string t = text;
    const std::size_t pos = rng() % t.size();
    t[pos] = static_cast<char>(rng() % 256);
    try {
      const TuneFile f = rajit::tune::parse_tune_file(t);
      for (const auto& e : f.entries) {  // whatever parses is fully valid
        CHECK(rajit::tune::parse_bucket_key(e.bucket).has_value());
        CHECK(rajit::gen::validate(rajit::gen::parse_spec_key(e.spec)).empty());
      }
    } catch (const TuneFileError&) {
    }
  }
}

TEST_CASE("tune file: size, depth, type, key and version checks name what is wrong") {
  const auto rejects = [](const std::string& text, const std::string& needle) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(rajit::tune::parse_tune_file(text), doctest::Contains(needle.c_str()),
                         TuneFileError);
  };
  rejects(std::string(100, '['), "nesting deeper than");
  rejects("[]", "top level must be a JSON object");
  rejects(R"({"format":"other","version":1})", "file.format");
  rejects(R"({"format":"rajit-tune","version":"1"})", "file.version: must be an integer");
  rejects(R"({"format":"rajit-tune","version":0})", "must be >= 1");
  std::string text = rajit::tune::serialize_tune_file(sample_file());
  {
    std::string t = text;
    t.replace(t.find("bm128.bn32.w8.s2"), 16, "bm999.bn32.w8.s2");
    rejects(t, "entries[");
  }
  {
    std::string t = text;
    t.replace(t.find("tq4096.tk4096.bh64"), 18, "tq4000.tk4096.bh64");
    rejects(t, ".bucket");
  }
  {
    std::string t = text;
    t.replace(t.find("\"ms\": 0.5"), 9, "\"ms\": -1.0");
    rejects(t, ".ms");
  }
  {  // found by the tune-file fuzzer: converting 1e10 to int was undefined behaviour
    std::string t = text;
    t.replace(t.find("\"driver_version\": 13000"), 23, "\"driver_version\": 10888883000");
    rejects(t, "meta.driver_version: 10888883000 must be a whole number");
  }
  {
    std::string t = text;
    t.replace(t.find("\"candidates\": "), 14, "\"candidates\": 2.5, \"x\": ");
    rejects(t, ".candidates: 2.5 must be a whole number");
  }
  {
    std::string t = text;
    t.replace(t.find("\"version\": 1"), 12, "\"version\": 7");
    CHECK_THROWS_AS(
        [&] {
          try {
            rajit::tune::parse_tune_file(t);
          } catch (const TuneFileError& e) {
            CHECK(e.kind() == TuneFileError::Kind::kNewerVersion);
            throw;
          }
        }(),
        TuneFileError);
  }
  rajit::tune::TuneFileLimits small;
  small.max_bytes = 100;
  CHECK_THROWS_WITH_AS(rajit::tune::parse_tune_file(text, small), doctest::Contains("exceeds the limit"),
                       TuneFileError);
  small = {};
  small.max_entries = 1;
  CHECK_THROWS_WITH_AS(rajit::tune::parse_tune_file(text, small), doctest::Contains("entries exceeds"),
                       TuneFileError);
}

TEST_CASE("TuneStore: a corrupt file is reported once, treated as empty and rebuilt by record()") {
  rajit::test::TempDir dir;
  const auto path = dir.path() / "tune.json";
  const std::string text = rajit::tune::serialize_tune_file(sample_file());
  write(path, text.substr(0, text.size() / 2));
  rajit::test::LogCapture logs;
  rajit::tune::TuneStore store(path);
  CHECK_FALSE(store.lookup("nvidia_h200.sm90.132sm", "fwd.bf16.ds56.r8.d64.causal.colbias",
                           "tq4096.tk4096.bh64"));
  CHECK_FALSE(store.lookup("nvidia_h200.sm90.132sm", "x", "y"));
  CHECK(logs.warnings().size() == 1);
  CHECK(logs.warnings()[0].text.find("tune.json") != std::string::npos);
  const auto e = make_entry("nvidia_h200.sm90.132sm", "tq4096.tk4096.bh64", {128, 32, 8, 2});
  CHECK(store.record({e}, rajit::tune::current_meta()));
  const TuneFile back = rajit::tune::read_tune_file(path);
  REQUIRE(back.entries.size() == 1);
  CHECK(back.entries[0].tile == TileConfig{128, 32, 8, 2});
  rajit::tune::TuneStore fresh(path);
  CHECK(fresh.lookup(e.device, e.spec, e.bucket)->tile == e.tile);
}

TEST_CASE("TuneStore: entries of another template set or device are not used but stay on disk") {
  rajit::test::TempDir dir;
  const auto path = dir.path() / "tune.json";
  TuneFile f = sample_file();
  f.entries.push_back(make_entry("nvidia_h200.sm90.132sm", "tq8192.tk8192.bh32", {64, 32, 4, 2}, "0123456789abcdef"));
  write(path, rajit::tune::serialize_tune_file(f));
  rajit::tune::TuneStore store(path);
  CHECK(store.lookup("nvidia_h200.sm90.132sm", f.entries[0].spec, "tq4096.tk4096.bh64"));
  CHECK_FALSE(store.lookup("nvidia_h200.sm90.132sm", f.entries[0].spec, "tq8192.tk8192.bh32"));
  CHECK_FALSE(store.lookup("nvidia_a100.sm80.108sm", f.entries[0].spec, "tq4096.tk4096.bh64"));
  CHECK(store.entries().size() == 2);
  store.record({make_entry("nvidia_a100.sm80.108sm", "tq4096.tk4096.bh64", {64, 64, 4, 2})},
               rajit::tune::current_meta());
  const TuneFile back = rajit::tune::read_tune_file(path);
  CHECK(back.entries.size() == 4);  // the foreign-template entry survived the rewrite
}

TEST_CASE("TuneStore: version drift is a warning, once; a read-only file keeps choices in memory") {
  rajit::test::TempDir dir;
  const auto path = dir.path() / "tune.json";
  TuneFile f = sample_file();
  f.meta.rajit_version = "0.0.1";
  write(path, rajit::tune::serialize_tune_file(f));
  rajit::test::LogCapture logs;
  rajit::tune::TuneStore store(path);
  CHECK(store.entries().size() == 2);
  CHECK(store.lookup(f.entries[0].device, f.entries[0].spec, f.entries[0].bucket));
  REQUIRE(logs.warnings().size() == 1);
  CHECK(logs.warnings()[0].text.find("rajit 0.0.1") != std::string::npos);
  if (::geteuid() != 0) {  // root ignores permissions
    std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    const auto e = make_entry("nvidia_h200.sm90.132sm", "tq8192.tk8192.bh32", {64, 32, 4, 2});
    CHECK_FALSE(store.record({e}, rajit::tune::current_meta()));
    CHECK_FALSE(store.record({e}, rajit::tune::current_meta()));
    CHECK(store.lookup(e.device, e.spec, e.bucket)->tile == e.tile);
    std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all);
    CHECK(logs.warnings().size() == 2);  // drift + one write failure, not two
  }
}

TEST_CASE("TuneStore: eight processes recording at once leave one valid file with every entry") {
  rajit::test::TempDir dir;
  const auto path = dir.path() / "tune.json";
  std::vector<pid_t> kids;
  for (int p = 0; p < 8; ++p) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      rajit::tune::TuneStore store(path);
      bool ok = true;
      for (int i = 0; i < 5; ++i) {
        const std::string bucket = "tq" + std::to_string(1 << (p + 1)) + ".tk" + std::to_string(1 << i) + ".bh1";
        ok = store.record({make_entry("nvidia_h200.sm90.132sm", bucket, {64, 64, 4, 2})},
                          rajit::tune::TuneFileMeta{"0.1.0", "x", "13.0", 0}) && ok;
      }
      ::_exit(ok ? 0 : 1);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  const TuneFile f = rajit::tune::read_tune_file(path);
  CHECK(f.entries.size() == 40);
}
