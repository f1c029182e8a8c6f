/// GPU tier for `rajit bench`'s inputs: the folded baseline is plain attention over the RA rows'
/// own buffers, computes plain attention, is timed in turn with RA, and separate operands refuse
/// to be read that way.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "runtime/driver.hpp"
#include "tuner/bench.hpp"
#include "tuner/forward.hpp"
#include "tuner/host_numeric.hpp"
#include "tuner/reference.hpp"

namespace {

using rajit::tune::TensorView;

// A contiguous (B,H,T,W) device view as float64 on the host.
std::vector<double> download(const TensorView& v, rajit::gen::Dtype dtype) {
  const long long n = v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3];
  REQUIRE(v.stride[3] == 1);
  REQUIRE(v.stride[2] == v.shape[3]);  // the whole row: the baseline's Q/K are full rows
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(n));
  const auto ptr = reinterpret_cast<CUdeviceptr>(v.ptr);
  REQUIRE(rajit::rt::driver().cuMemcpyDtoH(bits.data(), ptr, bits.size() * 2) == CUDA_SUCCESS);
  std::vector<double> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = rajit::tune::from_storage(dtype, bits[i]);
  return out;
}

}  // namespace

TEST_CASE("bench: the folded baseline reads the RA rows' own buffers as plain attention") {
  const auto spec = rajit::gen::parse_spec_key("fwd.bf16.ds56.r8.d64.causal.colbias");
  const rajit::tune::Shape shape{1, 2, 150, 150};  // not a tile multiple
  rajit::tune::BenchOptions opt;
  opt.folded = true;
  opt.l2_multiple = 0;  // one input set is enough here
  auto inputs = rajit::tune::bench_inputs(spec, shape, opt);
  REQUIRE(inputs.size() == 1);
  const rajit::tune::ForwardArgs ra = inputs.args(0);
  const rajit::tune::ForwardArgs a = inputs.plain_baseline(0);

  CHECK(a.spec.d_std == 64);
  CHECK(a.spec.r == 0);
  CHECK(a.spec.bias == rajit::gen::BiasKind::kNone);
  CHECK(a.spec.head_dim == ra.spec.head_dim);
  CHECK(a.spec.causal == ra.spec.causal);
  // The same allocations: that is the point (perf-notes v7e).
  CHECK(a.q_std.ptr == ra.q_std.ptr);
  CHECK(a.k_std.ptr == ra.k_std.ptr);
  CHECK(a.v.ptr == ra.v.ptr);
  CHECK(a.o.ptr == ra.o.ptr);
  CHECK(a.q_std.shape[3] == 64);
  CHECK(a.k_std.shape[3] == 64);
  CHECK(a.k_low.ptr == nullptr);
  CHECK(a.q_low.ptr == nullptr);
  CHECK(a.bias.ptr == nullptr);
  CHECK(a.w_std == nullptr);

  inputs.poison_output(0);
  rajit::tune::forward(a);
  const auto o_bits = inputs.output(0);

  rajit::tune::RefProblem p;
  p.spec = a.spec;
  p.batch = shape.batch;
  p.heads = shape.heads;
  p.seqlen_q = shape.seqlen_q;
  p.seqlen_k = shape.seqlen_k;
  p.q_std = download(a.q_std, a.spec.dtype);
  p.k_std = download(a.k_std, a.spec.dtype);
  p.v = download(a.v, a.spec.dtype);
  const auto ref = rajit::tune::reference_forward(p);
  REQUIRE(ref.o.size() == o_bits.size());
  double max_err = 0, max_ref = 0;
  int non_finite = 0;
  for (std::size_t i = 0; i < o_bits.size(); ++i) {
    const double got = rajit::tune::from_storage(a.spec.dtype, o_bits[i]);
    if (!std::isfinite(got)) ++non_finite;
    max_err = std::max(max_err, std::abs(got - ref.o[i]));
    max_ref = std::max(max_ref, std::abs(ref.o[i]));
  }
  MESSAGE("plain baseline over folded rows: rel err " << max_err / max_ref);
  CHECK(non_finite == 0);  // every element written (O was poisoned with NaN)
  CHECK(max_err / max_ref <= 8e-3);

  // Timed in turn: one result each.
  opt.warmup = 2;
  opt.iters = 5;
  const auto [ra_time, base_time] = rajit::tune::time_forward_with_baseline(inputs, std::nullopt, opt);
  CHECK(ra_time.median_ms > 0);
  CHECK(base_time.median_ms > 0);
  CHECK(inputs.args(0).spec.r == 8);  // the RA arguments are left as they were

  // Separate operand tensors have no full-width Q and K to read.
  opt.folded = false;
  auto separate = rajit::tune::bench_inputs(spec, shape, opt);
  CHECK_THROWS_AS(separate.plain_baseline(0), std::logic_error);
}
