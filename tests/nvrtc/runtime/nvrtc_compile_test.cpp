/// NVRTC-tier tests of the runtime: real compiles to CUBIN for sm_80/sm_90, the ptxas report, rejected source and the disk layer.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <unistd.h>

#include "runtime/error.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/log.hpp"
#include "runtime/nvrtc.hpp"

namespace {

constexpr const char* kSource = R"(
extern "C" __global__ void scale_rows(float* x, float factor, int n) {
  __shared__ float tile[128];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = i < n ? x[i] : 0.f;
  __syncthreads();
  if (i < n) x[i] = tile[blockDim.x - 1 - threadIdx.x] * factor;
}
)";

rajit::rt::CompileRequest request(const std::string& arch) {
  rajit::rt::CompileRequest r;
  r.program_name = "scale_rows.cu";
  r.source = kSource;
  r.options = {"-std=c++17"};
  r.arch = arch;
  r.entry_name = "scale_rows";
  return r;
}

// Quiet, unique cache directory for one test.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("rajit-nvrtc-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Swallows log output (compile progress) for its lifetime.
struct QuietLog {
  QuietLog() { rajit::rt::set_log_sink([](rajit::rt::LogLevel, std::string_view) {}); }
  ~QuietLog() { rajit::rt::set_log_sink(nullptr); }
};

}  // namespace

TEST_CASE("nvrtc: probe reports the loaded library and a version string like 13.0") {
  const rajit::rt::NvrtcStatus st = rajit::rt::probe_nvrtc();
  REQUIRE(st.ok);
  CHECK(st.major >= 12);
  CHECK_FALSE(st.library.empty());
  CHECK(rajit::rt::nvrtc_version_string() == std::to_string(st.major) + "." + std::to_string(st.minor));
  const std::vector<int> archs = rajit::rt::nvrtc_supported_archs();
  CHECK(std::find(archs.begin(), archs.end(), 80) != archs.end());
  CHECK(std::find(archs.begin(), archs.end(), 90) != archs.end());
}

TEST_CASE("nvrtc: a small kernel compiles to CUBIN for sm_80, sm_90 and sm_90a with resources") {
  for (const char* arch : {"sm_80", "sm_90", "sm_90a"}) {
    CAPTURE(arch);
    const rajit::rt::CompileResult r = rajit::rt::compile(request(arch));
    CAPTURE(r.log);
    REQUIRE(r.ok);
    CHECK(r.cubin.size() > 64);
    CHECK(r.cubin[0] == 0x7f);  // ELF magic
    CHECK(std::string(r.cubin.data() + 1, 3) == "ELF");
    CHECK(r.ptx.empty());
    CHECK(r.resources.registers > 0);
    CHECK(r.resources.shared_bytes == 128 * 4);
    CHECK(r.resources.spill_store_bytes == 0);
    CHECK(r.resources.spill_load_bytes == 0);
    CHECK(r.resources.stack_bytes == 0);
    CHECK(std::find(r.options_used.begin(), r.options_used.end(),
                    std::string("--gpu-architecture=") + arch) != r.options_used.end());
    CHECK(std::find(r.options_used.begin(), r.options_used.end(),
                    std::string(rajit::rt::kPtxasVerboseOption)) != r.options_used.end());
  }
}

// Two wgmma into the same accumulators, with a plain mov defining one of them while the first is
// in flight (kInterlude), or not: ptxas serialises the first kernel's wgmma and says so in the
// report NVRTC returns, which is what the forward and backward compile tests check never happens.
std::string wgmma_source(bool interlude) {
  return std::string(R"(
extern "C" __global__ void two_wgmma(float* out, unsigned long long da, unsigned long long db) {
  float d0, d1, d2, d3;
  asm volatile(
      "{\n.reg .f32 a<4>;\n"
      "mov.f32 a0, 0f00000000; mov.f32 a1, 0f00000000; mov.f32 a2, 0f00000000; mov.f32 a3, 0f00000000;\n"
      "wgmma.fence.sync.aligned;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {a0, a1, a2, a3}, %4, %5, 1, 1, 1, 0, 0;\n"
      "wgmma.commit_group.sync.aligned;\n")") +
         (interlude ? R"("mov.f32 a0, 0f3F800000;\n")" : "") + R"(
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {a0, a1, a2, a3}, %4, %5, 1, 1, 1, 0, 0;\n"
      "wgmma.commit_group.sync.aligned;\n"
      "wgmma.wait_group.sync.aligned 0;\n"
      "mov.f32 %0, a0; mov.f32 %1, a1; mov.f32 %2, a2; mov.f32 %3, a3;\n}\n"
      : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
      : "l"(da), "l"(db));
  out[threadIdx.x] = d0 + d1 + d2 + d3;
}
)";
}

TEST_CASE("nvrtc: the ptxas report says when wgmma instructions were serialised") {
  for (bool interlude : {true, false}) {
    CAPTURE(interlude);
    rajit::rt::CompileRequest req = request("sm_90a");
    req.program_name = "two_wgmma.cu";
    req.source = wgmma_source(interlude);
    req.entry_name = "two_wgmma";
    const rajit::rt::CompileResult r = rajit::rt::compile(req);
    CAPTURE(r.log);
    REQUIRE(r.ok);
    CHECK(r.resources.registers > 0);
    CHECK(r.resources.wgmma_serialized == interlude);
  }
}

TEST_CASE("nvrtc: PTX is returned when asked for") {
  rajit::rt::CompileRequest req = request("sm_80");
  req.want_ptx = true;
  req.want_cubin = false;
  const rajit::rt::CompileResult r = rajit::rt::compile(req);
  REQUIRE(r.ok);
  CHECK(r.cubin.empty());
  CHECK(r.ptx.find(".entry scale_rows") != std::string::npos);
  CHECK(r.ptx.back() != '\0');
}

TEST_CASE("nvrtc: a syntax error gives ok=false with the error in the log") {
  rajit::rt::CompileRequest req = request("sm_80");
  req.source = "extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name }\n";
  const rajit::rt::CompileResult r = rajit::rt::compile(req);
  CHECK_FALSE(r.ok);
  CHECK(r.cubin.empty());
  CHECK(r.log.find("scale_rows.cu(1): error") != std::string::npos);
  CHECK(r.log.find("undefined_name") != std::string::npos);
}

TEST_CASE("nvrtc: a malformed arch or an arch option is a rejected request, not an exception") {
  rajit::rt::CompileRequest bad_arch = request("compute_80");
  const rajit::rt::CompileResult a = rajit::rt::compile(bad_arch);
  CHECK_FALSE(a.ok);
  CHECK(a.log.find("invalid CompileRequest::arch") != std::string::npos);
  rajit::rt::CompileRequest arch_option = request("sm_80");
  arch_option.options.push_back("-arch=sm_86");
  const rajit::rt::CompileResult b = rajit::rt::compile(arch_option);
  CHECK_FALSE(b.ok);
  CHECK(b.log.find("set CompileRequest::arch") != std::string::npos);
  rajit::rt::CompileRequest bad_option = request("sm_80");
  bad_option.options.push_back("--no-such-option");
  const rajit::rt::CompileResult c = rajit::rt::compile(bad_option);
  CHECK_FALSE(c.ok);
  CHECK(c.log.find("--no-such-option") != std::string::npos);
}

TEST_CASE("KernelCache: get_cubin compiles with NVRTC once, then reads the disk entry") {
  ScratchDir dir;
  const QuietLog quiet;
  rajit::rt::KernelRequest req{"scale_rows.test", "scale_rows", kSource, {"-std=c++17"}, "sm_80",
                               "test"};
  rajit::rt::KernelCache cache(dir.path);
  const std::vector<char> first = cache.get_cubin(req);
  rajit::rt::KernelCache fresh(dir.path);
  const std::vector<char> second = fresh.get_cubin(req);
  CHECK(first == second);
  CHECK(cache.counters().compiles == 1);
  CHECK(fresh.counters().compiles == 0);
  CHECK(fresh.counters().disk_hits == 1);
  const std::string name = rajit::rt::cache_file_name(req);
  std::string version = rajit::rt::nvrtc_version_string();
  std::replace(version.begin(), version.end(), '.', '-');
  CHECK(name.find(".sm80.nvrtc" + version + ".") != std::string::npos);
}

TEST_CASE("KernelCache: NVRTC-rejected source raises CompileError with the log and dumped source") {
  ScratchDir dir;
  const QuietLog quiet;
  rajit::rt::KernelRequest req{"broken.test", "broken", "extern \"C\" __global__ void broken( {}",
                               {}, "sm_90", ""};
  rajit::rt::KernelCache cache(dir.path);
  try {
    cache.get_cubin(req);
    FAIL("expected CompileError");
  } catch (const rajit::rt::CompileError& e) {
    CHECK(std::string(e.what()).rfind("NVRTC failed to compile broken.test.cu for sm_90\n", 0) == 0);
    CHECK(e.log().find("error") != std::string::npos);
    CHECK(std::filesystem::exists(e.source_path()));
  }
}
