/// Random inputs -> device -> rajit::forward (and backward) -> compare with the float64 reference, plus event timing.
#include "tuner/harness.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "tuner/backward.hpp"
#include "tuner/forward.hpp"
#include "tuner/host_numeric.hpp"
#include "tuner/reference.hpp"

namespace rajit::tune {
namespace {

constexpr std::uint16_t kPoison = 0xffff;  // NaN in both fp16 and bf16

// One device allocation holding a (B, T, H, W) or (B, H, T, W) tensor family; `view` gives the
// strided operand for a column range [col0, col0 + width).
struct HostTensor {
  std::vector<std::uint16_t> data;
  long long B, H, T, W;
  bool heads_inner;  // (B,T,H,W) when true
  std::array<long long, 4> strides() const {
    return heads_inner ? std::array<long long, 4>{T * H * W, W, H * W, 1}
                       : std::array<long long, 4>{H * T * W, T * W, W, 1};
  }
  std::size_t index(long long b, long long h, long long t, long long c) const {
    const auto s = strides();
    return static_cast<std::size_t>(b * s[0] + h * s[1] + t * s[2] + c);
  }
};

HostTensor make_tensor(std::mt19937_64& rng, gen::Dtype dt, long long B, long long H, long long T,
                       long long W, bool heads_inner, double stddev) {
  HostTensor t{{}, B, H, T, W, heads_inner};
  t.data.resize(static_cast<std::size_t>(B * H * T * W));
  std::normal_distribution<float> dist(0.f, static_cast<float>(stddev));
  for (auto& x : t.data) x = to_storage(dt, dist(rng));
  return t;
}

// Copies columns [col0, col0+width) of a tensor into a contiguous float64 (B,H,T,width) array.
std::vector<double> extract(const HostTensor& t, gen::Dtype dt, long long col0, long long width) {
  std::vector<double> out(static_cast<std::size_t>(t.B * t.H * t.T * width));
  std::size_t k = 0;
  for (long long b = 0; b < t.B; ++b)
    for (long long h = 0; h < t.H; ++h)
      for (long long r = 0; r < t.T; ++r)
        for (long long c = 0; c < width; ++c) out[k++] = from_storage(dt, t.data[t.index(b, h, r, col0 + c)]);
  return out;
}

struct DeviceTensor {
  rt::DeviceBuffer buf;
  const HostTensor* host;
  TensorView view(long long col0, long long width) const {
    TensorView v;
    v.ptr = static_cast<const std::uint16_t*>(buf.data()) + col0;
    v.shape = {host->B, host->H, host->T, width};
    v.stride = host->strides();
    return v;
  }
};

DeviceTensor upload(const HostTensor& t) {
  DeviceTensor d{rt::DeviceBuffer(t.data.size() * 2), &t};
  d.buf.upload(t.data.data(), t.data.size() * 2);
  return d;
}

}  // namespace

std::string_view to_string(Layout l) {
  switch (l) {
    case Layout::kSeparate: return "separate";
    case Layout::kStrided: return "strided";
    case Layout::kPaired: return "paired";
    case Layout::kFolded: return "folded";
  }
  return "?";
}

Layout parse_layout(std::string_view s) {
  for (Layout l : {Layout::kSeparate, Layout::kStrided, Layout::kPaired, Layout::kFolded}) {
    if (to_string(l) == s) return l;
  }
  throw gen::SpecError({fmt::format("layout={}: must be separate, strided, paired or folded", s)});
}

double forward_flops(const gen::AttentionSpec& s, const Shape& sh) {
  double f = 2.0 * sh.batch * sh.heads * static_cast<double>(sh.seqlen_q) * sh.seqlen_k *
             (s.d_std + s.r + s.head_dim);
  if (s.causal && sh.seqlen_q == sh.seqlen_k) f *= 0.5;
  return f;
}

CheckResult run_forward_check(const CheckOptions& opt) {
  const gen::AttentionSpec& s = opt.spec;
  gen::require_valid(s);
  const Shape& sh = opt.shape;
  const long long B = sh.batch, H = sh.heads, Tq = sh.seqlen_q, Tk = sh.seqlen_k;
  const long long Ds = s.d_std, R = s.r, Dv = s.head_dim;
  if (opt.layout == Layout::kPaired && Tq != Tk) {
    throw gen::SpecError({"layout=paired: needs seqlen_q == seqlen_k (Q and K share rows)"});
  }
  std::mt19937_64 rng(opt.seed);
  const gen::Dtype dt = s.dtype;
  const bool inner = opt.layout != Layout::kSeparate;

  // Host tensors. Columns are placed as the layout says; the reference reads them back.
  HostTensor qa, ka, qlow_t, klow_t;  // per layout, some of these are unused
  const HostTensor v = make_tensor(rng, dt, B, H, Tk, Dv, inner, 1.0);
  const bool fused = opt.layout == Layout::kPaired || opt.layout == Layout::kFolded;
  if (fused) {
    qa = make_tensor(rng, dt, B, H, Tq, Ds + R, true, 1.0);  // paired: Q rows; folded: Qf rows
    ka = make_tensor(rng, dt, B, H, Tk, Ds + R, true, 1.0);
  } else {
    qa = make_tensor(rng, dt, B, H, Tq, Ds, inner, 1.0);      // q_std
    ka = make_tensor(rng, dt, B, H, Tk, Ds, inner, 1.0);      // k_std
    klow_t = make_tensor(rng, dt, B, H, Tq, std::max(R, 1LL), inner, 1.0);
    qlow_t = make_tensor(rng, dt, B, H, Tk, std::max(R, 1LL), inner, 1.0);
  }
  const long long bias_batch = opt.bias_per_batch ? B : 1;
  std::vector<float> bias(static_cast<std::size_t>(bias_batch * H * Tk));
  std::normal_distribution<float> unit(0.f, 1.f);
  for (auto& x : bias) x = static_cast<float>(opt.bias_scale) * unit(rng);
  std::vector<float> w_std(H), w_rec(H), w_disc(H);
  std::uniform_real_distribution<float> gate(0.5f, 1.5f);
  for (long long h = 0; h < H; ++h) {
    w_std[h] = gate(rng);
    w_rec[h] = gate(rng);
    // Odd heads get a negative w_disc and heads 2, 6, ... w_disc = 0 (a disabled bias): kernels
    // may treat the signs of bl = w_disc * log2(e) differently (the t-space softmax and the
    // unscaled-bias softmax tried in perf-notes v5b and v6 needed bl > 0), and all must be checked.
    w_disc[h] = h % 4 == 2 ? 0.f : (h % 2 == 1 ? -1.f : 1.f) * gate(rng);
  }

  // Device side.
  rt::make_primary_context_current(0);
  const DeviceTensor dv = upload(v), dqa = upload(qa), dka = upload(ka);
  std::optional<DeviceTensor> dkl, dql;
  if (!fused) {
    dkl.emplace(upload(klow_t));
    dql.emplace(upload(qlow_t));
  }
  rt::DeviceBuffer dbias(bias.size() * 4), dgates(static_cast<std::size_t>(3 * H) * 4);
  dbias.upload(bias.data(), bias.size() * 4);
  dgates.upload(w_std.data(), H * 4, 0);
  dgates.upload(w_rec.data(), H * 4, H * 4);
  dgates.upload(w_disc.data(), H * 4, 2 * H * 4);
  const std::size_t o_elems = static_cast<std::size_t>(B * H * Tq * Dv);
  rt::DeviceBuffer dout(o_elems * 2), dlse(static_cast<std::size_t>(B * H * Tq) * 4);

  ForwardArgs args;
  args.spec = s;
  if (opt.layout == Layout::kPaired) {  // q_std=Q[:Ds], k_low=K[Ds:], k_std=K[:Ds], q_low=Q[Ds:]
    args.q_std = dqa.view(0, Ds);
    args.k_low = dka.view(Ds, R);
    args.k_std = dka.view(0, Ds);
    args.q_low = dqa.view(Ds, R);
  } else if (opt.layout == Layout::kFolded) {  // q_std=Qf[:Ds], k_low=Qf[Ds:], k_std=Kf[:Ds], q_low=Kf[Ds:]
    args.q_std = dqa.view(0, Ds);
    args.k_low = dqa.view(Ds, R);
    args.k_std = dka.view(0, Ds);
    args.q_low = dka.view(Ds, R);
  } else {
    args.q_std = dqa.view(0, Ds);
    args.k_std = dka.view(0, Ds);
    args.k_low = dkl->view(0, R);
    args.q_low = dql->view(0, R);
  }
  args.v = dv.view(0, Dv);
  args.o.ptr = dout.data();
  args.o.shape = {B, H, Tq, Dv};
  args.o.stride = {H * Tq * Dv, Tq * Dv, Dv, 1};
  args.lse = static_cast<float*>(dlse.data());
  if (s.bias == gen::BiasKind::kColumn) {
    args.bias.ptr = static_cast<const float*>(dbias.data());
    args.bias.batch_stride = opt.bias_per_batch ? H * Tk : 0;
    args.bias.head_stride = Tk;
  }
  if (opt.random_gates) {
    const float* g = static_cast<const float*>(dgates.data());
    args.w_std = g;
    args.w_rec = g + H;
    args.w_disc = g + 2 * H;
  }
  args.scale = opt.scale;
  args.tile = opt.tile;

  dout.fill_bytes(0xff);  // poison: NaN everywhere until written
  dlse.fill_bytes(0xff);
  const LaunchRecord rec = forward(args);
  RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "running {}", rec.kernel);

  CheckResult res;
  res.kernel = rec.kernel;
  res.tile = rec.tile;
  res.bias_row_keys = rec.bias_row_keys;
  res.tolerance = dt == gen::Dtype::kFp16 ? 2e-3 : 8e-3;
  if (opt.check) {
    std::vector<std::uint16_t> o(o_elems);
    std::vector<float> lse(static_cast<std::size_t>(B * H * Tq));
    dout.download(o.data(), o.size() * 2);
    dlse.download(lse.data(), lse.size() * 4);

    RefProblem ref;
    ref.spec = s;
    ref.batch = static_cast<int>(B);
    ref.heads = static_cast<int>(H);
    ref.seqlen_q = static_cast<int>(Tq);
    ref.seqlen_k = static_cast<int>(Tk);
    ref.bias_batch = static_cast<int>(bias_batch);
    ref.scale = opt.scale;
    if (opt.layout == Layout::kPaired) {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.q_low = extract(qa, dt, Ds, R);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.k_low = extract(ka, dt, Ds, R);
    } else if (opt.layout == Layout::kFolded) {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.k_low = extract(qa, dt, Ds, R);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.q_low = extract(ka, dt, Ds, R);
    } else {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.k_low = extract(klow_t, dt, 0, R);
      ref.q_low = extract(qlow_t, dt, 0, R);
    }
    ref.v = extract(v, dt, 0, Dv);
    if (s.bias == gen::BiasKind::kColumn) ref.bias.assign(bias.begin(), bias.end());
    if (opt.random_gates) {
      ref.w_std.assign(w_std.begin(), w_std.end());
      ref.w_rec.assign(w_rec.begin(), w_rec.end());
      ref.w_disc.assign(w_disc.begin(), w_disc.end());
    }
    const RefForward want = reference_forward(ref);

    double num = 0, den = 0;
    for (std::size_t i = 0; i < o_elems; ++i) {
      if (o[i] == kPoison) {
        ++res.unwritten;
        continue;
      }
      const double got = from_storage(dt, o[i]);
      if (!std::isfinite(got)) {
        ++res.non_finite;
        continue;
      }
      num += (got - want.o[i]) * (got - want.o[i]);
      den += want.o[i] * want.o[i];
    }
    res.rel_err_o = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    for (std::size_t i = 0; i < lse.size(); ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, &lse[i], 4);
      if (bits == 0xffffffffu) {
        ++res.unwritten;
      } else if (std::isinf(want.lse[i])) {
        if (!(std::isinf(lse[i]) && lse[i] < 0)) ++res.non_finite;
      } else if (!std::isfinite(lse[i])) {
        ++res.non_finite;
      } else {
        res.max_abs_err_lse = std::max(res.max_abs_err_lse, std::abs(lse[i] - want.lse[i]));
      }
    }
    res.checked = true;
    res.passed = res.unwritten == 0 && res.non_finite == 0 && res.rel_err_o <= res.tolerance &&
                 res.max_abs_err_lse <= 1e-2;
  }

  if (opt.timing_iters > 0) {
    const rt::DriverApi& api = rt::driver();
    CUevent start = nullptr, stop = nullptr;
    RAJIT_CU_CHECK(api.cuEventCreate(&start, CU_EVENT_DEFAULT), "creating an event");
    RAJIT_CU_CHECK(api.cuEventCreate(&stop, CU_EVENT_DEFAULT), "creating an event");
    for (int i = 0; i < 3; ++i) forward(args);  // warm-up
    std::vector<float> ms;
    for (int i = 0; i < opt.timing_iters; ++i) {
      RAJIT_CU_CHECK(api.cuEventRecord(start, nullptr), "recording an event");
      forward(args);
      RAJIT_CU_CHECK(api.cuEventRecord(stop, nullptr), "recording an event");
      RAJIT_CU_CHECK(api.cuEventSynchronize(stop), "waiting for an event");
      float t = 0;
      RAJIT_CU_CHECK(api.cuEventElapsedTime(&t, start, stop), "reading an event");
      ms.push_back(t);
    }
    api.cuEventDestroy(start);
    api.cuEventDestroy(stop);
    std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
    res.median_ms = ms[ms.size() / 2];
    res.tflops = forward_flops(s, sh) / (res.median_ms * 1e-3) / 1e12;
  }
  return res;
}

}  // namespace rajit::tune

// ---- backward -----------------------------------------------------------------------------------
namespace rajit::tune {
namespace {

// A gradient tensor family mirroring an input family's layout (so fused layouts get fused,
// strided gradient views), poisoned with 0xff bytes.
struct GradTensor {
  rt::DeviceBuffer buf;
  HostTensor shape;  // data unused; shape and strides only
  MutableTensorView view(long long col0, long long width) const {
    MutableTensorView v;
    v.ptr = static_cast<std::uint16_t*>(buf.data()) + col0;
    v.shape = {shape.B, shape.H, shape.T, width};
    v.stride = shape.strides();
    return v;
  }
  std::vector<double> read(gen::Dtype dt, long long col0, long long width, long long& unwritten,
                           long long& non_finite) const {
    std::vector<std::uint16_t> raw(static_cast<std::size_t>(shape.B * shape.H * shape.T * shape.W));
    buf.download(raw.data(), raw.size() * 2);
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(shape.B * shape.H * shape.T * width));
    for (long long b = 0; b < shape.B; ++b)
      for (long long h = 0; h < shape.H; ++h)
        for (long long r = 0; r < shape.T; ++r)
          for (long long c = 0; c < width; ++c) {
            const std::uint16_t x = raw[shape.index(b, h, r, col0 + c)];
            if (x == kPoison) ++unwritten;
            const double v = from_storage(dt, x);
            if (!std::isfinite(v)) ++non_finite;
            out.push_back(v);
          }
    return out;
  }
};

GradTensor make_grad(const HostTensor& like) {
  GradTensor g{rt::DeviceBuffer(like.data.size() * 2), {{}, like.B, like.H, like.T, like.W, like.heads_inner}};
  g.buf.fill_bytes(0xff);
  return g;
}

GradientError compare(std::string name, const std::vector<double>& got,
                      const std::vector<double>& want, long long unwritten, long long non_finite) {
  GradientError e;
  e.name = std::move(name);
  e.unwritten = unwritten;
  e.non_finite = non_finite;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i])) continue;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  e.rel_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  e.plain_rel_err = e.rel_err;
  return e;
}

// Per-head scalars: the reference magnitude of head h is floored at kFloor * bound[h].
GradientError compare_scalars(std::string name, const std::vector<double>& got,
                              const std::vector<double>& want, const std::vector<double>& bound,
                              long long unwritten, long long non_finite) {
  constexpr double kFloor = 0.02;
  GradientError e = compare(std::move(name), got, want, unwritten, non_finite);
  double num = 0, den = 0;
  for (std::size_t h = 0; h < got.size(); ++h) {
    if (!std::isfinite(got[h])) continue;
    num += (got[h] - want[h]) * (got[h] - want[h]);
    const double m = std::max(std::abs(want[h]), kFloor * bound[h]);
    den += m * m;
  }
  e.rel_err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return e;
}

// Per head h: sqrt(sum over (b, row, col) of x^2) for a contiguous (B, H, rows, width) array.
std::vector<double> head_norms(const std::vector<double>& x, long long B, long long H) {
  std::vector<double> out(static_cast<std::size_t>(H), 0.0);
  if (x.empty()) return out;
  const auto per_head = static_cast<long long>(x.size()) / (B * H);
  for (long long b = 0; b < B; ++b)
    for (long long h = 0; h < H; ++h)
      for (long long k = 0; k < per_head; ++k) {
        const double v = x[static_cast<std::size_t>((b * H + h) * per_head + k)];
        out[static_cast<std::size_t>(h)] += v * v;
      }
  for (auto& v : out) v = std::sqrt(v);
  return out;
}

std::vector<double> read_floats(const rt::DeviceBuffer& buf, std::size_t n, long long& unwritten,
                                long long& non_finite) {
  std::vector<float> raw(n);
  buf.download(raw.data(), n * 4);
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &raw[i], 4);
    if (bits == 0xffffffffu) ++unwritten;
    if (!std::isfinite(raw[i])) ++non_finite;
    out[i] = raw[i];
  }
  return out;
}

std::vector<unsigned char> bytes_of(const rt::DeviceBuffer& buf) {
  std::vector<unsigned char> out(buf.size());
  buf.download(out.data(), out.size());
  return out;
}

}  // namespace

BackwardCheckResult run_backward_check(const CheckOptions& opt, bool deterministic) {
  const gen::AttentionSpec& s = opt.spec;
  gen::require_valid(s);
  const Shape& sh = opt.shape;
  const long long B = sh.batch, H = sh.heads, Tq = sh.seqlen_q, Tk = sh.seqlen_k;
  const long long Ds = s.d_std, R = s.r, Dv = s.head_dim;
  if (opt.layout == Layout::kPaired && Tq != Tk) {
    throw gen::SpecError({"layout=paired: needs seqlen_q == seqlen_k (Q and K share rows)"});
  }
  std::mt19937_64 rng(opt.seed);
  const gen::Dtype dt = s.dtype;
  const bool inner = opt.layout != Layout::kSeparate;
  const bool fused = opt.layout == Layout::kPaired || opt.layout == Layout::kFolded;
  const bool paired = opt.layout == Layout::kPaired;

  HostTensor qa, ka, qlow_t, klow_t;
  const HostTensor v = make_tensor(rng, dt, B, H, Tk, Dv, inner, 1.0);
  if (fused) {
    qa = make_tensor(rng, dt, B, H, Tq, Ds + R, true, 1.0);
    ka = make_tensor(rng, dt, B, H, Tk, Ds + R, true, 1.0);
  } else {
    qa = make_tensor(rng, dt, B, H, Tq, Ds, inner, 1.0);
    ka = make_tensor(rng, dt, B, H, Tk, Ds, inner, 1.0);
    klow_t = make_tensor(rng, dt, B, H, Tq, std::max(R, 1LL), inner, 1.0);
    qlow_t = make_tensor(rng, dt, B, H, Tk, std::max(R, 1LL), inner, 1.0);
  }
  const HostTensor d_o = make_tensor(rng, dt, B, H, Tq, Dv, false, 1.0);
  const long long bias_batch = opt.bias_per_batch ? B : 1;
  std::vector<float> bias(static_cast<std::size_t>(bias_batch * H * Tk));
  std::normal_distribution<float> unit(0.f, 1.f);
  for (auto& x : bias) x = unit(rng);
  std::vector<float> gates(static_cast<std::size_t>(3 * H));
  std::uniform_real_distribution<float> gate(0.5f, 1.5f);
  for (auto& g : gates) g = gate(rng);
  const bool has_bias = s.bias == gen::BiasKind::kColumn;

  rt::make_primary_context_current(0);
  const DeviceTensor dv_in = upload(v), dqa = upload(qa), dka = upload(ka), ddo = upload(d_o);
  std::optional<DeviceTensor> dkl, dql;
  if (!fused) {
    dkl.emplace(upload(klow_t));
    dql.emplace(upload(qlow_t));
  }
  rt::DeviceBuffer dbias(bias.size() * 4), dgates(gates.size() * 4);
  dbias.upload(bias.data(), bias.size() * 4);
  dgates.upload(gates.data(), gates.size() * 4);
  rt::DeviceBuffer dout(static_cast<std::size_t>(B * H * Tq * Dv) * 2);
  rt::DeviceBuffer dlse(static_cast<std::size_t>(B * H * Tq) * 4);

  ForwardArgs fa;
  fa.spec = s;
  if (paired) {
    fa.q_std = dqa.view(0, Ds);
    fa.k_low = dka.view(Ds, R);
    fa.k_std = dka.view(0, Ds);
    fa.q_low = dqa.view(Ds, R);
  } else if (fused) {
    fa.q_std = dqa.view(0, Ds);
    fa.k_low = dqa.view(Ds, R);
    fa.k_std = dka.view(0, Ds);
    fa.q_low = dka.view(Ds, R);
  } else {
    fa.q_std = dqa.view(0, Ds);
    fa.k_std = dka.view(0, Ds);
    fa.k_low = dkl->view(0, R);
    fa.q_low = dql->view(0, R);
  }
  fa.v = dv_in.view(0, Dv);
  fa.o.ptr = dout.data();
  fa.o.shape = {B, H, Tq, Dv};
  fa.o.stride = {H * Tq * Dv, Tq * Dv, Dv, 1};
  fa.lse = static_cast<float*>(dlse.data());
  if (has_bias) {
    fa.bias.ptr = static_cast<const float*>(dbias.data());
    fa.bias.batch_stride = opt.bias_per_batch ? H * Tk : 0;
    fa.bias.head_stride = Tk;
  }
  if (opt.random_gates) {
    const float* g = static_cast<const float*>(dgates.data());
    fa.w_std = g;
    fa.w_rec = g + H;
    fa.w_disc = g + 2 * H;
  }
  fa.scale = opt.scale;
  forward(fa);

  // Gradients mirror the operand layout: fused inputs get fused (strided) gradient views.
  GradTensor gqa = make_grad(qa), gka = make_grad(ka), gv = make_grad(v);
  std::optional<GradTensor> gkl, gql;
  if (!fused) {
    gkl.emplace(make_grad(klow_t));
    gql.emplace(make_grad(qlow_t));
  }
  rt::DeviceBuffer g_bias(bias.size() * 4), g_w(static_cast<std::size_t>(3 * H) * 4);
  g_bias.fill_bytes(0xff);
  g_w.fill_bytes(0xff);

  BackwardArgs ba;
  ba.spec = s;
  ba.q_std = fa.q_std;
  ba.k_low = fa.k_low;
  ba.k_std = fa.k_std;
  ba.q_low = fa.q_low;
  ba.v = fa.v;
  ba.o = fa.o;
  ba.d_o = ddo.view(0, Dv);
  ba.lse = fa.lse;
  ba.bias = fa.bias;
  ba.w_std = fa.w_std;
  ba.w_rec = fa.w_rec;
  ba.w_disc = fa.w_disc;
  ba.scale = opt.scale;
  if (paired) {
    ba.dq_std = gqa.view(0, Ds);
    ba.dk_low = gka.view(Ds, R);
    ba.dk_std = gka.view(0, Ds);
    ba.dq_low = gqa.view(Ds, R);
  } else if (fused) {
    ba.dq_std = gqa.view(0, Ds);
    ba.dk_low = gqa.view(Ds, R);
    ba.dk_std = gka.view(0, Ds);
    ba.dq_low = gka.view(Ds, R);
  } else {
    ba.dq_std = gqa.view(0, Ds);
    ba.dk_std = gka.view(0, Ds);
    ba.dk_low = gkl->view(0, R);
    ba.dq_low = gql->view(0, R);
  }
  ba.dv = gv.view(0, Dv);
  float* gw = static_cast<float*>(g_w.data());
  ba.dw_std = gw;
  ba.dw_rec = R > 0 ? gw + H : nullptr;
  if (has_bias) {
    ba.d_bias = static_cast<float*>(g_bias.data());
    ba.d_bias_batch_stride = opt.bias_per_batch ? H * Tk : 0;
    ba.d_bias_head_stride = Tk;
    ba.dw_disc = gw + 2 * H;
  }
  ba.deterministic = deterministic;
  ba.dkv_tile = opt.backward_tile;
  const BackwardRecord rec = backward(ba);
  RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "running the backward of {}", s.key());

  BackwardCheckResult res;
  res.kernels = rec.kernels;
  if (opt.check) {
    RefProblem ref;
    ref.spec = s;
    ref.batch = static_cast<int>(B);
    ref.heads = static_cast<int>(H);
    ref.seqlen_q = static_cast<int>(Tq);
    ref.seqlen_k = static_cast<int>(Tk);
    ref.bias_batch = static_cast<int>(bias_batch);
    ref.scale = opt.scale;
    if (paired) {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.q_low = extract(qa, dt, Ds, R);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.k_low = extract(ka, dt, Ds, R);
    } else if (fused) {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.k_low = extract(qa, dt, Ds, R);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.q_low = extract(ka, dt, Ds, R);
    } else {
      ref.q_std = extract(qa, dt, 0, Ds);
      ref.k_std = extract(ka, dt, 0, Ds);
      ref.k_low = extract(klow_t, dt, 0, R);
      ref.q_low = extract(qlow_t, dt, 0, R);
    }
    ref.v = extract(v, dt, 0, Dv);
    if (has_bias) ref.bias.assign(bias.begin(), bias.end());
    if (opt.random_gates) {
      ref.w_std.assign(gates.begin(), gates.begin() + H);
      ref.w_rec.assign(gates.begin() + H, gates.begin() + 2 * H);
      ref.w_disc.assign(gates.begin() + 2 * H, gates.end());
    }
    const RefGradients want = reference_backward(ref, extract(d_o, dt, 0, Dv));

    const auto grad = [&](const char* name, const GradTensor& t, long long col0, long long width,
                          const std::vector<double>& w) {
      long long unwritten = 0, non_finite = 0;
      const auto got = t.read(dt, col0, width, unwritten, non_finite);
      res.gradients.push_back(compare(name, got, w, unwritten, non_finite));
    };
    grad("dq_std", gqa, 0, Ds, want.dq_std);
    grad("dk_std", gka, 0, Ds, want.dk_std);
    if (R > 0) {
      if (paired) {
        grad("dk_low", gka, Ds, R, want.dk_low);
        grad("dq_low", gqa, Ds, R, want.dq_low);
      } else if (fused) {
        grad("dk_low", gqa, Ds, R, want.dk_low);
        grad("dq_low", gka, Ds, R, want.dq_low);
      } else {
        grad("dk_low", *gkl, 0, R, want.dk_low);
        grad("dq_low", *gql, 0, R, want.dq_low);
      }
    }
    grad("dv", gv, 0, Dv, want.dv);
    const auto floats = [&](const char* name, const rt::DeviceBuffer& buf, std::size_t offset,
                            std::size_t n, const std::vector<double>& w,
                            const std::vector<double>* bound) {
      long long unwritten = 0, non_finite = 0;
      auto all = read_floats(buf, offset + n, unwritten, non_finite);
      unwritten = non_finite = 0;  // recount only the slice
      std::vector<double> got(all.begin() + static_cast<long>(offset), all.end());
      for (double x : got) {
        if (std::isnan(x)) ++unwritten;
        else if (!std::isfinite(x)) ++non_finite;
      }
      res.gradients.push_back(bound ? compare_scalars(name, got, w, *bound, unwritten, non_finite)
                                    : compare(name, got, w, unwritten, non_finite));
    };
    // Cauchy-Schwarz bounds of the per-head scalars: dw_std[h] = sum q_std . dq_std / w_std[h],
    // dw_rec[h] = sum k_low . dk_low / w_rec[h], dw_disc[h] = sum beta . dbias / w_disc[h].
    const auto bound_of = [&](const std::vector<double>& x, const std::vector<double>& dx,
                              long long batches, std::size_t gate_offset) {
      const auto a = head_norms(x, batches, H), b = head_norms(dx, batches, H);
      std::vector<double> out(static_cast<std::size_t>(H));
      for (std::size_t h = 0; h < out.size(); ++h) {
        const double g = opt.random_gates ? gates[gate_offset + h] : 1.0;
        out[h] = a[h] * b[h] / g;
      }
      return out;
    };
    const auto h_count = static_cast<std::size_t>(H);
    const auto bound_std = bound_of(ref.q_std, want.dq_std, B, 0);
    floats("dw_std", g_w, 0, h_count, want.dw_std, &bound_std);
    if (R > 0) {
      const auto bound_rec = bound_of(ref.k_low, want.dk_low, B, h_count);
      floats("dw_rec", g_w, h_count, h_count, want.dw_rec, &bound_rec);
    }
    if (has_bias) {
      floats("dbias", g_bias, 0, bias.size(), want.dbias, nullptr);
      const auto bound_disc = bound_of(ref.bias, want.dbias, bias_batch, 2 * h_count);
      floats("dw_disc", g_w, 2 * h_count, h_count, want.dw_disc, &bound_disc);
    }
    res.checked = true;
    res.passed = true;
    for (const auto& g : res.gradients) {
      res.max_rel_err = std::max(res.max_rel_err, g.rel_err);
      if (g.unwritten != 0 || g.non_finite != 0 || !(g.rel_err <= res.tolerance)) res.passed = false;
    }
  }

  if (deterministic) {  // a second run must reproduce every output bit for bit
    std::vector<std::vector<unsigned char>> first;
    const auto snapshot = [&] {
      std::vector<std::vector<unsigned char>> out;
      out.push_back(bytes_of(gqa.buf));
      out.push_back(bytes_of(gka.buf));
      out.push_back(bytes_of(gv.buf));
      if (gkl) out.push_back(bytes_of(gkl->buf));
      if (gql) out.push_back(bytes_of(gql->buf));
      out.push_back(bytes_of(g_bias));
      out.push_back(bytes_of(g_w));
      return out;
    };
    first = snapshot();
    for (auto* b : {&gqa.buf, &gka.buf, &gv.buf}) b->fill_bytes(0xff);
    if (gkl) gkl->buf.fill_bytes(0xff);
    if (gql) gql->buf.fill_bytes(0xff);
    g_bias.fill_bytes(0xff);
    g_w.fill_bytes(0xff);
    backward(ba);
    RAJIT_CU_CHECK(rt::driver().cuCtxSynchronize(), "running the backward of {}", s.key());
    res.repeat_checked = true;
    res.bitwise_repeatable = snapshot() == first;
    if (opt.check) res.passed = res.passed && res.bitwise_repeatable;
  }

  if (opt.timing_iters > 0) {
    const rt::DriverApi& api = rt::driver();
    CUevent start = nullptr, stop = nullptr;
    RAJIT_CU_CHECK(api.cuEventCreate(&start, CU_EVENT_DEFAULT), "creating an event");
    RAJIT_CU_CHECK(api.cuEventCreate(&stop, CU_EVENT_DEFAULT), "creating an event");
    const auto time_it = [&](bool with_forward) {
      for (int i = 0; i < 3; ++i) {
        if (with_forward) forward(fa);
        backward(ba);
      }
      std::vector<float> ms;
      for (int i = 0; i < opt.timing_iters; ++i) {
        RAJIT_CU_CHECK(api.cuEventRecord(start, nullptr), "recording an event");
        if (with_forward) forward(fa);
        backward(ba);
        RAJIT_CU_CHECK(api.cuEventRecord(stop, nullptr), "recording an event");
        RAJIT_CU_CHECK(api.cuEventSynchronize(stop), "waiting for an event");
        float t = 0;
        RAJIT_CU_CHECK(api.cuEventElapsedTime(&t, start, stop), "reading an event");
        ms.push_back(t);
      }
      std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
      return static_cast<double>(ms[ms.size() / 2]);
    };
    res.fwd_bwd_median_ms = time_it(true);
    res.bwd_median_ms = time_it(false);
    api.cuEventDestroy(start);
    api.cuEventDestroy(stop);
    res.fwd_bwd_tflops = 3.5 * forward_flops(s, sh) / (res.fwd_bwd_median_ms * 1e-3) / 1e12;
  }
  return res;
}

}  // namespace rajit::tune
