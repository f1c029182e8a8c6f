/// GPU tier: faults on a real device: a wrong-arch or garbage cubin in the cache, CUDA graph capture, problems past 2^31 elements.
#include <doctest/doctest.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/module.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"
#include "tuner/forward.hpp"
#include "tuner/host_numeric.hpp"
#include "tuner/reference.hpp"

namespace fs = std::filesystem;
namespace rt = rajit::rt;
namespace tune = rajit::tune;
namespace gen = rajit::gen;

namespace {

rt::KernelRequest answer_kernel(const std::string& arch) {
  rt::KernelRequest r;
  r.readable_name = "reliability.answer";
  r.entry_name = "answer";
  r.source = "extern \"C\" __global__ void answer(int* out) { out[threadIdx.x] = 42; }\n";
  r.arch = arch;
  r.extra_key = "gpu-faults-test";
  return r;
}

int run_answer(const rt::Kernel& k) {
  rt::DeviceBuffer out(32 * sizeof(int));
  out.fill_bytes(0);
  CUdeviceptr p = out.get();
  void* args[] = {&p};
  rt::launch(k, 1, 1, 1, 32, 0, nullptr, args);
  RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "synchronizing after the answer kernel");
  std::vector<int> host(32);
  out.download(host.data(), host.size() * sizeof(int));
  return *std::min_element(host.begin(), host.end());
}

// Separate contiguous (B,H,T,width) operands whose (b,h) slices hold one of two random patterns:
// slices before `split` pattern 0, the rest pattern 1. Filling copies one uploaded slice on the
// device, so tensors of many GiB fill in well under a second.
struct SlicedProblem {
  gen::AttentionSpec spec;
  long long B, H, T, split;
  std::array<std::array<std::vector<std::uint16_t>, 2>, 5> host;  // q_std, k_low, k_std, q_low, v
  std::array<rt::DeviceBuffer, 6> dev;                             // ... and o
  std::array<long long, 6> width;

  SlicedProblem(gen::AttentionSpec s, long long b, long long h, long long t, long long split_at)
      : spec(s), B(b), H(h), T(t), split(split_at) {
    width = {s.d_std, std::max(s.r, 1), s.d_std, std::max(s.r, 1), s.head_dim, s.head_dim};
    std::mt19937_64 rng(7);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (int i = 0; i < 6; ++i) {
      const std::size_t slice = static_cast<std::size_t>(T * width[i]);
      dev[i] = rt::DeviceBuffer(static_cast<std::size_t>(B * H) * slice * 2);
      if (i == 5) break;
      for (int p = 0; p < 2; ++p) {
        host[i][p].resize(slice);
        for (auto& x : host[i][p]) x = rajit::tune::to_storage(s.dtype, dist(rng));
      }
      fill(i);
    }
    // The copies ran on the legacy stream; kernels may run on a non-blocking one.
    RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "filling the operands");
  }

  void fill(int i) {
    const std::size_t slice_bytes = static_cast<std::size_t>(T * width[i]) * 2;
    const long long n = B * H;
    auto fill_range = [&](long long first, long long count, const std::vector<std::uint16_t>& pat) {
      if (count <= 0) return;
      dev[i].upload(pat.data(), slice_bytes, static_cast<std::size_t>(first) * slice_bytes);
      for (long long done = 1; done < count;) {
        const long long k = std::min(done, count - done);
        RAJIT_CU_CHECK(rt::driver().cuMemcpyDtoD(dev[i].get() + static_cast<std::size_t>(first + done) * slice_bytes,
                                                 dev[i].get() + static_cast<std::size_t>(first) * slice_bytes,
                                                 static_cast<std::size_t>(k) * slice_bytes),
                       "replicating operand {}", i);
        done += k;
      }
    };
    fill_range(0, std::min(split, n), host[i][0]);
    fill_range(split, n - split, host[i][1]);
  }

  tune::TensorView view(int i) const {
    tune::TensorView v;
    v.ptr = dev[i].data();
    v.shape = {B, H, T, width[i]};
    v.stride = {H * T * width[i], T * width[i], width[i], 1};
    return v;
  }

  tune::ForwardArgs args(CUstream stream) const {
    tune::ForwardArgs a;
    a.spec = spec;
    a.q_std = view(0);
    a.k_low = view(1);
    a.k_std = view(2);
    a.q_low = view(3);
    a.v = view(4);
    a.o = view(5);
    a.stream = stream;
    return a;
  }

  void poison_output() {
    dev[5].fill_bytes(0xff);  // NaN in bf16 and fp16
    RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "poisoning the output");
  }

  // |o - ref|_F / |ref|_F of output slice `slice` against the float64 reference of its pattern.
  double rel_err(long long slice) const {
    const int p = slice < split ? 0 : 1;
    tune::RefProblem ref;
    ref.spec = spec;
    ref.seqlen_q = ref.seqlen_k = static_cast<int>(T);
    auto as_double = [&](int i) {
      std::vector<double> out;
      if (i == 1 || i == 3) {
        if (spec.r == 0) return out;
      }
      for (auto x : host[i][p]) out.push_back(rajit::tune::from_storage(spec.dtype, x));
      return out;
    };
    ref.q_std = as_double(0);
    ref.k_low = as_double(1);
    ref.k_std = as_double(2);
    ref.q_low = as_double(3);
    ref.v = as_double(4);
    ref.w_std = ref.w_rec = ref.w_disc = {1.0};
    const tune::RefForward want = tune::reference_forward(ref);
    const std::size_t elems = static_cast<std::size_t>(T * spec.head_dim);
    std::vector<std::uint16_t> got(elems);
    dev[5].download(got.data(), elems * 2, static_cast<std::size_t>(slice) * elems * 2);
    double num = 0, den = 0;
    for (std::size_t k = 0; k < elems; ++k) {
      const double g = rajit::tune::from_storage(spec.dtype, got[k]);
      if (!std::isfinite(g)) return INFINITY;  // poison left, or NaN
      num += (g - want.o[k]) * (g - want.o[k]);
      den += want.o[k] * want.o[k];
    }
    return std::sqrt(num / std::max(den, 1e-30));
  }
};

constexpr double kBf16Tolerance = 8e-3;  // ra-math.md, as tuner/harness.cpp

// The graph API is not in rt::DriverApi (the library never captures); the test resolves it.
struct GraphApi {
  CUresult (*begin)(CUstream, CUstreamCaptureMode);
  CUresult (*end)(CUstream, CUgraph*);
  CUresult (*instantiate)(CUgraphExec*, CUgraph, unsigned long long);
  CUresult (*launch)(CUgraphExec, CUstream);
  CUresult (*exec_destroy)(CUgraphExec);
  CUresult (*destroy)(CUgraph);
};

GraphApi graph_api() {
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) lib = ::dlopen("libcuda.so.1", RTLD_NOW);
  REQUIRE(lib != nullptr);
  GraphApi g{};
  g.begin = reinterpret_cast<decltype(g.begin)>(::dlsym(lib, "cuStreamBeginCapture_v2"));
  g.end = reinterpret_cast<decltype(g.end)>(::dlsym(lib, "cuStreamEndCapture"));
  g.instantiate = reinterpret_cast<decltype(g.instantiate)>(::dlsym(lib, "cuGraphInstantiateWithFlags"));
  g.launch = reinterpret_cast<decltype(g.launch)>(::dlsym(lib, "cuGraphLaunch"));
  g.exec_destroy = reinterpret_cast<decltype(g.exec_destroy)>(::dlsym(lib, "cuGraphExecDestroy"));
  g.destroy = reinterpret_cast<decltype(g.destroy)>(::dlsym(lib, "cuGraphDestroy"));
  const bool all_found = g.begin != nullptr && g.end != nullptr && g.instantiate != nullptr &&
                         g.launch != nullptr && g.exec_destroy != nullptr && g.destroy != nullptr;
  REQUIRE(all_found);
  return g;
}

}  // namespace

TEST_CASE("gpu faults: a cubin for another arch, or garbage with a valid checksum, planted under "
          "this GPU's key is evicted and rebuilt once") {
  const rt::DeviceInfo info = rt::device_info(0);
  const std::string arch = fmt::format("sm_{}{}", info.cc_major, info.cc_minor);
  const std::string wrong_arch = info.cc_major >= 9 ? "sm_80" : "sm_90";
  rajit::test::TempDir tmp;
  rt::KernelCache cache{tmp.path()};
  const rt::KernelRequest req = answer_kernel(arch);
  const std::vector<char> wrong = cache.get_cubin(answer_kernel(wrong_arch));  // real NVRTC
  // ELF magic, then garbage: the driver parses it as an image and refuses it. (Bytes that are
  // not ELF or fatbin would be read as NUL-terminated PTX text.)
  std::string garbage_text = "\x7f" "ELF";
  garbage_text.resize(4096, '\x5a');
  garbage_text.back() = '\0';
  const std::string text_garbage(4096, 'Z');  // no terminator: must not be read past its end
  const std::vector<std::pair<std::string, std::vector<char>>> planted = {
      {wrong_arch + " cubin", wrong},
      {"ELF-headed garbage", {garbage_text.begin(), garbage_text.end()}},
      {"unterminated text garbage", {text_garbage.begin(), text_garbage.end()}}};
  for (const auto& item : planted) {
    const std::string& what = item.first;
    const auto& payload = item.second;
    CAPTURE(what);
    const std::vector<char> entry = rt::encode_cache_entry(rt::full_key(req), payload);
    REQUIRE(!rt::replace_file_atomically(tmp.path() / rt::cache_file_name(req), entry));
    rt::KernelCache fresh{tmp.path()};
    rajit::test::LogCapture log;
    const rt::Kernel k = fresh.get(req, 0);
    CHECK(fresh.counters().compiles == 1);
    CHECK(fresh.counters().disk_hits == 1);  // the planted entry passed its checksum...
    REQUIRE(log.warnings().size() == 1);    // ...and the driver's refusal was reported once
    CHECK(log.warnings()[0].text.find("rejected by the driver") != std::string::npos);
    MESSAGE(log.warnings()[0].text);
    CHECK(run_answer(k) == 42);
    // The rebuilt entry is this GPU's: a later process loads it without compiling.
    rt::KernelCache later{tmp.path()};
    CHECK(run_answer(later.get(req, 0)) == 42);
    CHECK(later.counters().compiles == 0);
  }
}

TEST_CASE("gpu faults: compiling during CUDA graph capture is refused with a clear message; a "
          "warmed-up kernel captures and replays correctly") {
  const GraphApi g = graph_api();
  const rt::DriverApi& api = rt::driver();
  rt::make_primary_context_current(0);
  // A spec no other gpu test uses, so that its kernel is not loaded yet in this process.
  const gen::AttentionSpec spec{40, 8, 64, true, gen::BiasKind::kNone, gen::Dtype::kBf16};
  REQUIRE(gen::validate(spec).empty());
  SlicedProblem prob(spec, 1, 2, 129, 1);
  CUstream stream = nullptr;
  RAJIT_CU_CHECK(api.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), "creating a stream");
  const tune::ForwardArgs args = prob.args(stream);

  // 1. Not warmed up: refused during capture, before anything is compiled or recorded.
  REQUIRE(g.begin(stream, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_SUCCESS);
  std::string message;
  try {
    tune::forward(args);
  } catch (const rt::Error& e) {
    message = e.what();
  }
  CUgraph refused = nullptr;
  CHECK(g.end(stream, &refused) == CUDA_SUCCESS);  // the capture itself is still intact
  if (refused) g.destroy(refused);
  MESSAGE(message);
  CHECK(message.find("capturing a CUDA graph") != std::string::npos);
  CHECK(message.find("warm-up") != std::string::npos);
  CHECK(message.find(spec.key()) != std::string::npos);

  // 2. Warm up outside capture, then capture and replay twice over a poisoned output.
  tune::forward(args);
  RAJIT_CU_CHECK(api.cuStreamSynchronize(stream), "warm-up");
  CHECK(prob.rel_err(0) <= kBf16Tolerance);
  prob.poison_output();
  REQUIRE(g.begin(stream, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_SUCCESS);
  tune::forward(args);
  CUgraph graph = nullptr;
  REQUIRE(g.end(stream, &graph) == CUDA_SUCCESS);
  CUgraphExec exec = nullptr;
  REQUIRE(g.instantiate(&exec, graph, 0) == CUDA_SUCCESS);
  CHECK(prob.rel_err(0) == INFINITY);  // capture recorded the launch, it did not run it
  for (int replay = 0; replay < 2; ++replay) {
    REQUIRE(g.launch(exec, stream) == CUDA_SUCCESS);
    RAJIT_CU_CHECK(api.cuStreamSynchronize(stream), "replay");
    for (long long slice = 0; slice < 2; ++slice) {
      const double err = prob.rel_err(slice);
      CAPTURE(slice);
      CHECK(err <= kBf16Tolerance);
    }
    prob.poison_output();
  }
  g.exec_destroy(exec);
  g.destroy(graph);
  api.cuStreamDestroy(stream);
}

TEST_CASE("gpu faults: a problem past 2^31 elements per tensor is computed with 64-bit offsets") {
  rt::make_primary_context_current(0);
  // V and O hold 1 * 32800 * 1024 * 64 = 2,149,580,800 elements (> 2^31 = 2,147,483,648); slices
  // from 32768 on (the first at element 2^31) hold a second pattern, so a 32-bit offset that
  // wrapped would read or write the first pattern's slices and fail the check.
  const long long H = 32800, T = 1024, split = 32768;
  const gen::AttentionSpec spec{56, 8, 64, false, gen::BiasKind::kNone, gen::Dtype::kBf16};
  std::size_t free_bytes = 0, total_bytes = 0;
  RAJIT_CU_CHECK(rt::driver().cuMemGetInfo(&free_bytes, &total_bytes), "querying memory");
  const double need = static_cast<double>(H * T) * (56 + 8 + 56 + 8 + 64 + 64) * 2;
  if (static_cast<double>(free_bytes) < need * 1.1) {
    MESSAGE(fmt::format("needs {:.1f} GiB, {:.1f} GiB free: not run on this device", need / (1 << 30),
                        static_cast<double>(free_bytes) / (1 << 30)));
    return;
  }
  SlicedProblem prob(spec, 1, H, T, split);
  REQUIRE(H * T * spec.head_dim > (1LL << 31));
  prob.poison_output();
  tune::forward(prob.args(nullptr));
  RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "the 2^31-element forward");
  for (long long slice : {0LL, 1LL, split - 1, split, split + 1, H - 1}) {
    CAPTURE(slice);
    const double err = prob.rel_err(slice);
    MESSAGE(fmt::format("slice {}: rel err {:.2e}", slice, err));
    CHECK(err <= kBf16Tolerance);
  }
}
