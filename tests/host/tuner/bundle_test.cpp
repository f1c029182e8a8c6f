/// Host tests for bundles: manifest round trip and limits, SHA-256 verification, bundle plans.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "generator/render.hpp"
#include "runtime/hash.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"
#include "tuner/bundle.hpp"
#include "tuner/offline.hpp"

using rajit::tune::BundleError;

namespace {

const std::string kSpecKey = "fwd.bf16.ds56.r8.d64.causal.colbias";
const std::string kCubinBytes = std::string("\x7f" "ELF fake cubin bytes", 21);

nlohmann::json manifest_json(const std::string& sha) {
  return {{"rajit_version", "0.1.0"},
          {"template_set_hash", rajit::gen::template_set_hash()},
          {"kernels",
           {{{"spec", kSpecKey},
             {"tile", "bm64.bn64.w4.s2"},
             {"arch", "sm_90"},
             {"entry", "rajit_fwd_bf16_ds56_r8_d64_causal_colbias_bm64_bn64_w4_s2"},
             {"cubin", "k.cubin"},
             {"sha256", sha},
             {"threads", 128},
             {"dynamic_shared_bytes", 46592}}}},
          {"routes",
           {{{"spec", kSpecKey}, {"bucket", "tq4096.tk4096.bh64"}, {"arch", "sm_90"}, {"tile", "bm64.bn64.w4.s2"}}}}};
}

void write(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

}  // namespace

TEST_CASE("bundle: a manifest round-trips; routes and kernels are found; the cubin verifies") {
  rajit::test::TempDir dir;
  write(dir.path() / "k.cubin", kCubinBytes);
  write(dir.path() / "manifest.json", manifest_json(rajit::rt::sha256_hex(kCubinBytes)).dump(2));
  const auto b = rajit::tune::Bundle::open(dir.path());
  CHECK(b->matches_templates());
  CHECK(b->route(kSpecKey, "tq4096.tk4096.bh64", "sm_90")->key() == "bm64.bn64.w4.s2");
  CHECK_FALSE(b->route(kSpecKey, "tq2048.tk2048.bh64", "sm_90"));
  CHECK_FALSE(b->route(kSpecKey, "tq4096.tk4096.bh64", "sm_80"));
  const auto* k = b->kernel(kSpecKey, "bm64.bn64.w4.s2", "sm_90");
  REQUIRE(k != nullptr);
  CHECK(k->threads == 128);
  const auto bytes = b->read_cubin(*k);
  CHECK(std::string(bytes.begin(), bytes.end()) == kCubinBytes);
}

TEST_CASE("bundle: a cubin whose SHA-256 does not match is an error naming the file") {
  rajit::test::TempDir dir;
  write(dir.path() / "manifest.json", manifest_json(rajit::rt::sha256_hex(kCubinBytes)).dump(2));
  std::string tampered = kCubinBytes;
  tampered[5] ^= 1;
  write(dir.path() / "k.cubin", tampered);
  const auto b = rajit::tune::Bundle::open(dir.path());
  const auto* k = b->kernel(kSpecKey, "bm64.bn64.w4.s2", "sm_90");
  REQUIRE(k != nullptr);
  CHECK_THROWS_WITH_AS(b->read_cubin(*k), doctest::Contains("k.cubin: SHA-256"), BundleError);
  std::filesystem::remove(dir.path() / "k.cubin");
  CHECK_THROWS_WITH_AS(b->read_cubin(*k), doctest::Contains("k.cubin"), BundleError);
}

TEST_CASE("bundle: bad manifests are refused with the field named") {
  const std::string sha = rajit::rt::sha256_hex(kCubinBytes);
  const auto rejects = [](const nlohmann::json& j, const char* needle) {
    CAPTURE(j.dump());
    CHECK_THROWS_WITH_AS(rajit::tune::parse_bundle_manifest(j.dump()), doctest::Contains(needle), BundleError);
  };
  auto j = manifest_json(sha);
  j["kernels"][0]["sha256"] = "abc";
  rejects(j, "kernels[0].sha256");
  j = manifest_json(sha);
  j["kernels"][0]["cubin"] = "../etc/passwd";
  rejects(j, "not a plain file name");
  j = manifest_json(sha);
  j["routes"][0]["tile"] = "bm128.bn64.w8.s2";
  rejects(j, "routes[0]: no cubin");
  j = manifest_json(sha);
  j["kernels"][0]["tile"] = "bmx.bn64.w4.s2";
  rejects(j, "kernels[0]");
  j = manifest_json(sha);
  j.erase("kernels");
  rejects(j, "manifest.kernels");
  CHECK_THROWS_WITH_AS(rajit::tune::parse_bundle_manifest(std::string(64, '[')), doctest::Contains("nesting"),
                       BundleError);
  CHECK_THROWS_AS(rajit::tune::parse_bundle_manifest("{\"rajit_version\": "), BundleError);
  rajit::test::TempDir dir;
  CHECK_THROWS_WITH_AS(rajit::tune::Bundle::open(dir.path()), doctest::Contains("manifest.json"), BundleError);
}

TEST_CASE("bundle plans: tune-file entries route by arch; other template sets are skipped") {
  rajit::tune::TuneFile f;
  rajit::tune::TuneEntry e;
  e.device = "nvidia_h200.sm90.132sm";
  e.spec = kSpecKey;
  e.bucket = "tq4096.tk4096.bh64";
  e.template_set_hash = rajit::gen::template_set_hash();
  e.tile = {128, 32, 8, 2};
  f.entries.push_back(e);
  e.device = "nvidia_h100_80gb_hbm3.sm90.132sm";  // same arch, same bucket: the first one wins
  e.tile = {64, 64, 4, 2};
  f.entries.push_back(e);
  e.bucket = "tq1024.tk1024.bh64";
  e.template_set_hash = "0000";
  f.entries.push_back(e);
  e.template_set_hash = rajit::gen::template_set_hash();
  e.device = "nvidia_a100.sm80.108sm";
  f.entries.push_back(e);
  const auto plan = rajit::tune::plan_bundle_from_tune_file(f, {rajit::gen::parse_arch("sm_90")});
  REQUIRE(plan.routes.size() == 1);
  CHECK(plan.routes[0].tile == "bm128.bn32.w8.s2");
  CHECK(plan.routes[0].arch == "sm_90");
  REQUIRE(plan.choices.size() == 1);
  CHECK(plan.skipped.size() == 3);

  const auto h = rajit::tune::plan_bundle_heuristic(
      {rajit::gen::parse_spec_key(kSpecKey)}, {{4, 16, 4096, 4096}, {4, 16, 3000, 3000}, {8, 12, 1024, 1024}},
      {rajit::gen::parse_arch("sm_90"), rajit::gen::parse_arch("sm_80")});
  CHECK(h.routes.size() == 4);  // 3000 falls in the 4096 bucket
}
