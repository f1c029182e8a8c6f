/// nvrtc tier: `rajit gen --emit cu,ptx,cubin` end to end, and its .cu builds with plain nvcc.
// Needs libnvrtc (the tier's probe) but no GPU. The nvcc/cuobjdump part runs only where the
// toolkit's binaries are installed.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/host/tools/cli_support.hpp"

namespace cli = rajit::test::cli;
namespace fs = std::filesystem;

namespace {

// A toolkit binary: from $PATH, else $CUDA_HOME/bin, $CUDA_PATH/bin, /usr/local/cuda/bin.
std::optional<fs::path> find_tool(const std::string& name) {
  std::vector<fs::path> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    for (std::string d; std::getline(ss, d, ':');)
      if (!d.empty()) dirs.emplace_back(d);
  }
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* v = std::getenv(env); v && *v) dirs.push_back(fs::path(v) / "bin");
  }
  dirs.emplace_back("/usr/local/cuda/bin");
  for (const auto& d : dirs) {
    std::error_code ec;
    const fs::path p = d / name;
    if (fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0) return p;
  }
  return std::nullopt;
}

std::string describe(const cli::Result& r) {
  return r.command + "\n--- exit " + std::to_string(r.exit_code) + "\n--- stdout:\n" + r.out +
         "--- stderr:\n" + r.err;
}

}  // namespace

TEST_CASE("cli: gen --emit cu,ptx,cubin compiles the seeds' config without spills, and nvcc agrees") {
  cli::TempFolder cache("nvrtc-cache");
  cli::TempFolder work("nvrtc-gen");
  const fs::path out = work.path() / "kernels";
  const auto r = cli::rajit({"gen", "--d-std", "56", "--r", "8", "--head-dim", "64", "--causal",
                             "--bias", "column", "--dtype", "bf16", "--emit", "cu,ptx,cubin",
                             "--arch", "sm_80,sm_90", "--out", out.string()},
                            cache.path());
  CAPTURE(describe(r));
  REQUIRE(r.exit_code == 0);

  const auto manifest = nlohmann::json::parse(cli::slurp(out / "manifest.json"));
  CHECK(manifest.at("nvrtc_version").get<std::string>() != "unavailable");
  const auto& kernels = manifest.at("kernels");
  REQUIRE(kernels.size() >= 2);
  std::set<std::string> archs;
  std::optional<fs::path> sm90_cu;
  for (const auto& k : kernels) {
    const std::string arch = k.at("arch").get<std::string>();
    const std::string entry = k.at("entry").get<std::string>();
    CAPTURE(arch);
    CAPTURE(k.at("tile").get<std::string>());
    archs.insert(arch);
    REQUIRE(k.contains("resources"));
    const auto& res = k.at("resources");
    CHECK(res.at("registers").get<int>() > 0);
    CHECK(res.at("registers").get<int>() <= 255);
    CHECK(res.at("spill_store_bytes").get<int>() == 0);
    CHECK(res.at("spill_load_bytes").get<int>() == 0);
    std::set<std::string> exts;
    for (const std::string& f : k.at("files").get<std::vector<std::string>>()) {
      CAPTURE(f);
      REQUIRE(fs::exists(out / f));
      const std::string ext = fs::path(f).extension().string();
      exts.insert(ext);
      const std::string bytes = cli::slurp(out / f);
      if (ext == ".cubin") {
        REQUIRE(bytes.size() > 4);
        CHECK(bytes.compare(0, 4, "\x7f" "ELF") == 0);
      } else if (ext == ".ptx") {
        CHECK(bytes.find(".target " + arch) != std::string::npos);
        CHECK(bytes.find(".entry " + entry) != std::string::npos);
        CHECK(bytes.find("mma.sync.aligned") != std::string::npos);  // tensor cores, not FMA
      } else if (ext == ".cu") {
        CHECK(bytes.find("#include") == std::string::npos);
        if (arch == "sm_90") sm90_cu = out / f;
      }
    }
    CHECK(exts == std::set<std::string>{".cu", ".ptx", ".cubin"});
  }
  CHECK(archs == std::set<std::string>{"sm_80", "sm_90"});
  for (const auto& e : fs::directory_iterator(out)) {
    CAPTURE(e.path().string());
    CHECK(e.path().filename().string()[0] != '.');  // no leftover temporary files
  }
  REQUIRE(sm90_cu.has_value());

  // The .cu needs no include path: plain nvcc builds it for sm_90.
  const auto nvcc = find_tool("nvcc");
  if (!nvcc) {
    MESSAGE("nvcc not found on PATH or in /usr/local/cuda/bin: skipping the nvcc check");
    return;
  }
  const fs::path cubin = work.path() / "nvcc_sm90.cubin";
  const auto built = cli::run(nvcc->string(), {"-arch=sm_90", "-cubin", "-o", cubin.string(),
                                               sm90_cu->string()},
                              cache.path());
  CAPTURE(describe(built));
  REQUIRE(built.exit_code == 0);
  REQUIRE(fs::exists(cubin));
  CHECK(cli::slurp(cubin).compare(0, 4, "\x7f" "ELF") == 0);

  const auto cuobjdump = find_tool("cuobjdump");
  if (!cuobjdump) {
    MESSAGE("cuobjdump not found: skipping the SASS check");
    return;
  }
  const auto sass = cli::run(cuobjdump->string(), {"-sass", cubin.string()}, cache.path());
  CHECK(sass.exit_code == 0);
  CHECK_MESSAGE(sass.out.find("HMMA") != std::string::npos, "no tensor-core MMA (HMMA) in the SASS");
}
