/// bench_forward() and bench_dispatch_us(): the measurements behind `rajit bench`.
#include "tuner/bench.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "tuner/backward.hpp"
#include "tuner/forward.hpp"
#include "tuner/harness.hpp"
#include "tuner/host_numeric.hpp"

namespace rajit::tune {
namespace {

// Random host data every input set is filled from: N(0, 1) values in the element type, and
// gate/bias values in [0.5, 1.5] (never zeros).
struct Noise {
  std::vector<std::uint16_t> values = std::vector<std::uint16_t>(1 << 20);
  std::vector<float> gates = std::vector<float>(1 << 16);
  Noise(gen::Dtype dtype, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.f, 1.f);
    for (auto& x : values) x = to_storage(dtype, dist(rng));
    std::uniform_real_distribution<float> gate(0.5f, 1.5f);
    for (auto& x : gates) x = gate(rng);
  }
};

// One complete set of inputs and outputs on the device, filled from shared random host data.
struct InputSet {
  rt::DeviceBuffer q_std, k_low, k_std, q_low, v, o, lse, bias, gates;
  ForwardArgs args;
};

std::unique_ptr<InputSet> make_set(const gen::AttentionSpec& s, const Shape& sh,
                                   const std::vector<std::uint16_t>& noise,
                                   const std::vector<float>& fnoise, bool folded) {
  auto set = std::make_unique<InputSet>();
  const long long B = sh.batch, H = sh.heads, Tq = sh.seqlen_q, Tk = sh.seqlen_k;
  // Each tensor reads the noise from its own start, an odd number of elements past the last
  // one's: from one start, Q and K were the same tensor and each row's largest score sat on its
  // diagonal (perf-notes v8). The tensors whose rows meet in Q K^T are filled one after the
  // other, and an odd shift is no multiple of a row, so none of their rows repeats another's.
  constexpr std::size_t kShift = 349525;  // about a third of the noise
  std::size_t start = 0;
  const auto fill = [&](rt::DeviceBuffer& buf, TensorView& view, long long T, long long W) {
    const std::size_t n = static_cast<std::size_t>(B * H * T * std::max(W, 1LL));
    buf = rt::DeviceBuffer(n * 2);
    for (std::size_t off = 0, src = start; off < n; src = 0) {
      const std::size_t len = std::min(noise.size() - src, n - off);
      buf.upload(noise.data() + src, len * 2, off * 2);
      off += len;
    }
    start = (start + kShift) % noise.size();
    view.ptr = buf.data();
    view.shape = {B, H, T, W};
    view.stride = {H * T * W, T * W, W, 1};
  };
  ForwardArgs& a = set->args;
  a.spec = s;
  if (folded && s.r > 0) {  // Qf = [q_std | k_low], Kf = [k_std | q_low]; views, no copies
    const long long W = s.d_std + s.r;
    const auto split = [&](TensorView& std_part, TensorView& low, const TensorView& rows) {
      std_part = rows;
      std_part.shape[3] = s.d_std;
      low = rows;
      low.ptr = static_cast<const char*>(rows.ptr) + 2 * s.d_std;
      low.shape[3] = s.r;
    };
    TensorView qf, kf;
    fill(set->q_std, qf, Tq, W);
    fill(set->k_std, kf, Tk, W);
    split(a.q_std, a.k_low, qf);
    split(a.k_std, a.q_low, kf);
  } else {
    fill(set->q_std, a.q_std, Tq, s.d_std);
    fill(set->k_std, a.k_std, Tk, s.d_std);
    if (s.r > 0) {
      fill(set->k_low, a.k_low, Tq, s.r);
      fill(set->q_low, a.q_low, Tk, s.r);
    }
  }
  fill(set->v, a.v, Tk, s.head_dim);
  TensorView o_view;
  fill(set->o, o_view, Tq, s.head_dim);
  a.o = o_view;
  set->lse = rt::DeviceBuffer(static_cast<std::size_t>(B * H * Tq) * 4);
  a.lse = static_cast<float*>(set->lse.data());
  set->gates = rt::DeviceBuffer(static_cast<std::size_t>(3 * H) * 4);
  set->gates.upload(fnoise.data(), static_cast<std::size_t>(3 * H) * 4);
  const float* g = static_cast<const float*>(set->gates.data());
  a.w_std = g;
  a.w_rec = g + H;
  a.w_disc = g + 2 * H;
  if (s.bias == gen::BiasKind::kColumn) {
    set->bias = rt::DeviceBuffer(static_cast<std::size_t>(H * Tk) * 4);
    for (long long off = 0; off < H * Tk; off += static_cast<long long>(fnoise.size())) {
      const auto n = std::min(static_cast<long long>(fnoise.size()), H * Tk - off);
      set->bias.upload(fnoise.data(), static_cast<std::size_t>(n) * 4, static_cast<std::size_t>(off) * 4);
    }
    a.bias = {static_cast<const float*>(set->bias.data()), 0, Tk};
  }
  return set;
}

}  // namespace

struct ForwardInputs::Set {
  std::unique_ptr<InputSet> set;
};

ForwardInputs::ForwardInputs(const gen::AttentionSpec& s, const Shape& sh, double l2_multiple,
                             int ordinal, std::uint64_t seed, bool folded)
    : folded_(folded) {
  rt::make_primary_context_current(ordinal);
  const rt::DeviceInfo dev = rt::device_info(ordinal);
  const Noise noise_src(s.dtype, seed);
  const auto& noise = noise_src.values;
  const auto& fnoise = noise_src.gates;

  const double set_bytes =
      2.0 * sh.batch * sh.heads *
      (static_cast<double>(sh.seqlen_q) * (s.d_std + s.r + s.head_dim) +
       static_cast<double>(sh.seqlen_k) * (s.d_std + s.r + s.head_dim));
  int sets = static_cast<int>(std::ceil(l2_multiple * dev.l2_bytes / set_bytes));
  sets = std::clamp(sets, 1, 64);
  for (int i = 0; i < sets; ++i) {
    sets_.push_back(std::make_unique<Set>());
    sets_.back()->set = make_set(s, sh, noise, fnoise, folded);
  }
}

ForwardInputs::~ForwardInputs() = default;
ForwardInputs::ForwardInputs(ForwardInputs&&) noexcept = default;
ForwardInputs& ForwardInputs::operator=(ForwardInputs&&) noexcept = default;

int ForwardInputs::size() const noexcept { return static_cast<int>(sets_.size()); }

ForwardArgs& ForwardInputs::args(int i) { return sets_.at(static_cast<std::size_t>(i))->set->args; }

void ForwardInputs::poison_output(int i) {
  sets_.at(static_cast<std::size_t>(i))->set->o.fill_bytes(0xff);  // 0xffff is NaN in fp16 and bf16
}

std::vector<std::uint16_t> ForwardInputs::output(int i) const {
  const InputSet& set = *sets_.at(static_cast<std::size_t>(i))->set;
  RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "waiting for the output");
  std::vector<std::uint16_t> out(set.o.size() / 2);
  set.o.download(out.data(), out.size() * 2);
  return out;
}

ForwardArgs ForwardInputs::plain_baseline(int set) const {
  ForwardArgs a = sets_.at(static_cast<std::size_t>(set))->set->args;
  if (a.spec.r > 0 && !folded_) {
    throw std::logic_error(
        "plain_baseline: separate operand tensors have no (B,H,T,d_std + r) Q and K to read as "
        "plain attention; only folded rows (or r = 0) do");
  }
  const int width = a.spec.d_std + a.spec.r;
  a.spec.d_std = width;
  a.spec.r = 0;
  a.spec.bias = gen::BiasKind::kNone;
  a.q_std.shape[3] = width;  // Qf = [q_std | k_low] starts at q_std's pointer, stride width
  a.k_std.shape[3] = width;  // Kf = [k_std | q_low] likewise
  a.k_low = {};
  a.q_low = {};
  a.bias = {};
  a.w_std = a.w_rec = a.w_disc = nullptr;
  return a;
}

TurnSchedule::TurnSchedule(int variants, int turn, int sets, int timed_per_variant)
    : variants_(static_cast<std::size_t>(std::max(variants, 1))),
      turn_(variants > 1 ? static_cast<std::size_t>(std::max(turn, 1)) : 1) {
  const auto n_sets = static_cast<std::size_t>(std::max(sets, 1));
  const std::size_t period = turn_ * variants_;
  // Kernel v reads sets (v * turn + i + m * gcd(period, cycle)) % cycle for i < turn: all of them
  // unless turn < gcd(period, cycle).
  cycle_ = n_sets;
  while (variants_ > 1 && cycle_ > 1 && turn_ < std::gcd(period, cycle_)) --cycle_;
  const std::size_t timed_per_turn = turn_ > 1 ? turn_ - 1 : 1;
  const auto wanted = static_cast<std::size_t>(std::max(timed_per_variant, 1));
  launches_ = (wanted + timed_per_turn - 1) / timed_per_turn * period;
}

namespace {

// Times the variants launched in turns (TurnSchedule, opt.turn launches each), one event after
// each launch, so every variant runs under the same clocks and power state: at (2,16,8192)
// head_dim 128 a kernel timed alone runs ~1.01 or ~1.14 ms from one run to the next (perf-notes
// v7f). The first launch of a turn follows the other kernel and is not timed (perf-notes v8).
// variants[v][set] are the launch arguments; tile pinned or not as given. Results are per
// variant (opt.iters timed launches each), TFLOP/s from the FlashAttention count.
std::vector<BenchResult> time_in_turn(std::vector<std::vector<ForwardArgs>>& variants,
                                      const BenchOptions& opt) {
  const rt::DriverApi& api = rt::driver();
  const std::size_t nv = variants.size();
  const TurnSchedule order(static_cast<int>(nv), opt.turn, static_cast<int>(variants.front().size()),
                           opt.iters);
  std::vector<BenchResult> res(nv);
  for (std::size_t v = 0; v < nv; ++v) {
    res[v].input_sets = static_cast<int>(variants.front().size());
    res[v].tile = forward(variants[v][0]).tile;
  }
  for (int i = 1; i < opt.warmup; ++i) {
    for (std::size_t v = 0; v < nv; ++v) forward(variants[v][order.set(i * nv + v)]);
  }
  const std::size_t launches = order.launches();
  std::vector<CUevent> events(launches + 1);
  for (auto& e : events) RAJIT_CU_CHECK(api.cuEventCreate(&e, CU_EVENT_DEFAULT), "creating an event");
  const auto destroy = [&] {
    for (auto& e : events) api.cuEventDestroy(e);
  };
  try {
    RAJIT_CU_CHECK(api.cuEventRecord(events[0], nullptr), "recording an event");
    for (std::size_t k = 0; k < launches; ++k) {
      forward(variants[order.variant(k)][order.set(k)]);
      RAJIT_CU_CHECK(api.cuEventRecord(events[k + 1], nullptr), "recording an event");
    }
    RAJIT_CU_CHECK(api.cuEventSynchronize(events.back()), "waiting for the benchmark");
    std::vector<std::vector<float>> ms(nv);
    for (std::size_t k = 0; k < launches; ++k) {
      if (!order.timed(k)) continue;
      float t = 0;
      RAJIT_CU_CHECK(api.cuEventElapsedTime(&t, events[k], events[k + 1]), "reading an event");
      ms[order.variant(k)].push_back(t);
    }
    for (std::size_t v = 0; v < nv; ++v) {
      std::sort(ms[v].begin(), ms[v].end());
      res[v].median_ms = ms[v][ms[v].size() / 2];
      res[v].min_ms = ms[v].front();
      const ForwardArgs& a = variants[v][0];
      const Shape sh{static_cast<int>(a.q_std.shape[0]), static_cast<int>(a.q_std.shape[1]),
                     static_cast<int>(a.q_std.shape[2]), static_cast<int>(a.k_std.shape[2])};
      res[v].tflops = forward_flops(a.spec, sh) / (res[v].median_ms * 1e-3) / 1e12;
    }
  } catch (...) {
    destroy();
    throw;
  }
  destroy();
  return res;
}

}  // namespace

BenchResult time_forward(ForwardInputs& inputs, std::optional<gen::TileConfig> tile,
                         const BenchOptions& opt) {
  std::vector<std::vector<ForwardArgs>> variants(1);
  for (int i = 0; i < inputs.size(); ++i) {
    inputs.args(i).tile = tile;
    variants[0].push_back(inputs.args(i));
  }
  return time_in_turn(variants, opt).front();
}

std::pair<BenchResult, BenchResult> time_forward_with_baseline(
    ForwardInputs& inputs, std::optional<gen::TileConfig> tile, const BenchOptions& opt) {
  std::vector<std::vector<ForwardArgs>> variants(2);
  for (int i = 0; i < inputs.size(); ++i) {
    inputs.args(i).tile = tile;
    variants[0].push_back(inputs.args(i));
    variants[1].push_back(inputs.plain_baseline(i));
  }
  const auto res = time_in_turn(variants, opt);
  return {res[0], res[1]};
}

ForwardInputs bench_inputs(const gen::AttentionSpec& s, const Shape& sh, const BenchOptions& opt) {
  ForwardInputs inputs(s, sh, opt.l2_multiple, 0, 12345, opt.folded);
  if (!opt.gates) {
    for (int i = 0; i < inputs.size(); ++i) {
      ForwardArgs& a = inputs.args(i);
      a.w_std = a.w_rec = a.w_disc = nullptr;
    }
  }
  return inputs;
}

BenchResult bench_forward(const gen::AttentionSpec& s, const Shape& sh,
                          std::optional<gen::TileConfig> tile, const BenchOptions& opt) {
  ForwardInputs inputs = bench_inputs(s, sh, opt);
  return time_forward(inputs, tile, opt);
}

BackwardBenchResult bench_backward(const gen::AttentionSpec& s, const Shape& sh, bool deterministic,
                                   const BenchOptions& opt, std::optional<gen::TileConfig> dkv_tile) {
  rt::make_primary_context_current(0);
  const rt::DeviceInfo dev = rt::device_info(0);
  const Noise noise_src(s.dtype, 12345);
  const auto& noise = noise_src.values;
  const auto& fnoise = noise_src.gates;

  const long long B = sh.batch, H = sh.heads, Tq = sh.seqlen_q, Tk = sh.seqlen_k;
  // Inputs, dO and every gradient: about twice the forward's working set.
  const double set_bytes = 4.0 * static_cast<double>(B * H) *
                           (static_cast<double>(Tq) * (s.d_std + s.r + 2.0 * s.head_dim) +
                            static_cast<double>(Tk) * (s.d_std + s.r + s.head_dim));
  const int sets = std::clamp(static_cast<int>(std::ceil(opt.l2_multiple * dev.l2_bytes / set_bytes)), 1, 16);
  struct BackwardSet {
    std::unique_ptr<InputSet> fwd;
    rt::DeviceBuffer d_o, dq_std, dk_low, dk_std, dq_low, dv, d_bias, dw, workspace;
    BackwardArgs args;
  };
  std::vector<BackwardSet> all(static_cast<std::size_t>(sets));
  for (auto& set : all) {
    set.fwd = make_set(s, sh, noise, fnoise, opt.folded);
    const ForwardArgs& f = set.fwd->args;
    BackwardArgs& a = set.args;
    a.spec = s;
    a.q_std = f.q_std;
    a.k_low = f.k_low;
    a.k_std = f.k_std;
    a.q_low = f.q_low;
    a.v = f.v;
    a.o = f.o;
    a.lse = f.lse;
    a.bias = f.bias;
    a.w_std = f.w_std;
    a.w_rec = f.w_rec;
    a.w_disc = f.w_disc;
    a.deterministic = deterministic;
    a.dkv_tile = dkv_tile;
    const auto grad = [&](rt::DeviceBuffer& buf, MutableTensorView& view, long long T, long long W) {
      buf = rt::DeviceBuffer(static_cast<std::size_t>(B * H * T * std::max(W, 1LL)) * 2);
      view.ptr = buf.data();
      view.shape = {B, H, T, W};
      view.stride = {H * T * W, T * W, W, 1};
    };
    MutableTensorView d_o_view;
    grad(set.d_o, d_o_view, Tq, s.head_dim);
    const std::size_t n = static_cast<std::size_t>(B * H * Tq * s.head_dim);
    for (std::size_t off = 0; off < n; off += noise.size()) {
      set.d_o.upload(noise.data(), std::min(noise.size(), n - off) * 2, off * 2);
    }
    a.d_o = d_o_view.as_const();
    grad(set.dq_std, a.dq_std, Tq, s.d_std);
    grad(set.dk_std, a.dk_std, Tk, s.d_std);
    if (s.r > 0) {
      grad(set.dk_low, a.dk_low, Tq, s.r);
      grad(set.dq_low, a.dq_low, Tk, s.r);
    }
    grad(set.dv, a.dv, Tk, s.head_dim);
    set.dw = rt::DeviceBuffer(static_cast<std::size_t>(3 * H) * 4);
    float* dw = static_cast<float*>(set.dw.data());
    a.dw_std = dw;
    a.dw_rec = s.r > 0 ? dw + H : nullptr;
    if (s.bias == gen::BiasKind::kColumn) {
      set.d_bias = rt::DeviceBuffer(static_cast<std::size_t>(H * Tk) * 4);
      a.d_bias = static_cast<float*>(set.d_bias.data());
      a.d_bias_head_stride = Tk;
      a.dw_disc = dw + 2 * H;
    }
    a.workspace_bytes = backward_workspace_bytes(a);
    set.workspace = rt::DeviceBuffer(a.workspace_bytes);
    a.workspace = set.workspace.data();
  }

  const rt::DriverApi& api = rt::driver();
  BackwardBenchResult res;
  res.input_sets = sets;
  for (int i = 0; i < opt.warmup; ++i) {
    auto& set = all[static_cast<std::size_t>(i % sets)];
    forward(set.fwd->args);
    const BackwardRecord rec = backward(set.args);
    res.kernels = rec.kernels;
    res.dkv_tile = rec.dkv_tile;
  }
  const auto time_loop = [&](bool with_forward) {
    std::vector<CUevent> events(static_cast<std::size_t>(opt.iters) + 1);
    for (auto& e : events) RAJIT_CU_CHECK(api.cuEventCreate(&e, CU_EVENT_DEFAULT), "creating an event");
    RAJIT_CU_CHECK(api.cuEventRecord(events[0], nullptr), "recording an event");
    for (int i = 0; i < opt.iters; ++i) {
      auto& set = all[static_cast<std::size_t>(i % sets)];
      if (with_forward) forward(set.fwd->args);
      backward(set.args);
      RAJIT_CU_CHECK(api.cuEventRecord(events[static_cast<std::size_t>(i) + 1], nullptr),
                     "recording an event");
    }
    RAJIT_CU_CHECK(api.cuEventSynchronize(events.back()), "waiting for the benchmark");
    std::vector<float> ms(static_cast<std::size_t>(opt.iters));
    for (std::size_t i = 0; i < ms.size(); ++i) {
      RAJIT_CU_CHECK(api.cuEventElapsedTime(&ms[i], events[i], events[i + 1]), "reading an event");
    }
    for (auto& e : events) api.cuEventDestroy(e);
    std::sort(ms.begin(), ms.end());
    return static_cast<double>(ms[ms.size() / 2]);
  };
  res.fwd_bwd_ms = time_loop(true);
  res.bwd_ms = time_loop(false);
  res.fwd_bwd_tflops = 3.5 * forward_flops(s, sh) / (res.fwd_bwd_ms * 1e-3) / 1e12;
  return res;
}

double bench_dispatch_us(int calls) {
  rt::make_primary_context_current(0);
  const gen::AttentionSpec s{56, 8, 64, true, gen::BiasKind::kColumn, gen::Dtype::kBf16};
  const Shape sh{1, 1, 16, 16};
  std::vector<std::uint16_t> noise(4096, to_storage(s.dtype, 0.5f));
  std::vector<float> fnoise(64, 1.0f);
  auto set = make_set(s, sh, noise, fnoise, /*folded=*/false);
  const rt::DriverApi& api = rt::driver();
  forward(set->args);  // compile or load outside the timing
  RAJIT_CU_CHECK(api.cuCtxSynchronize(), "warming up");
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(calls));
  for (int i = 0; i < calls; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    forward(set->args);
    const auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (i % 256 == 255) RAJIT_CU_CHECK(api.cuCtxSynchronize(), "draining the queue");
  }
  RAJIT_CU_CHECK(api.cuCtxSynchronize(), "draining the queue");
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace rajit::tune
