/// Host tests for check_forward_args(): every problem visible without a GPU, each naming its field.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tuner/forward.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::tune::ForwardArgs;
using rajit::tune::TensorView;

namespace {

constexpr long long B = 2, H = 4, Tq = 128, Tk = 96;

const void* fake(std::uintptr_t address) { return reinterpret_cast<const void*>(address); }

TensorView contiguous(const void* ptr, long long rows, long long width) {
  TensorView t;
  t.ptr = ptr;
  t.shape = {B, H, rows, width};
  t.stride = {H * rows * width, rows * width, width, 1};
  return t;
}

// A valid call for `spec` on fake, well-aligned device pointers (nothing is dereferenced).
ForwardArgs valid_args(const AttentionSpec& spec) {
  ForwardArgs a;
  a.spec = spec;
  a.q_std = contiguous(fake(0x100000), Tq, spec.d_std);
  a.k_std = contiguous(fake(0x200000), Tk, spec.d_std);
  if (spec.r > 0) {
    a.k_low = contiguous(fake(0x300000), Tq, spec.r);
    a.q_low = contiguous(fake(0x400000), Tk, spec.r);
  }
  a.v = contiguous(fake(0x500000), Tk, spec.head_dim);
  a.o = contiguous(fake(0x600000), Tq, spec.head_dim);
  if (spec.bias == BiasKind::kColumn) {
    a.bias.ptr = reinterpret_cast<const float*>(0x700000);
    a.bias.batch_stride = 0;
    a.bias.head_stride = Tk;
  }
  return a;
}

const AttentionSpec kSeeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};

std::string joined(const std::vector<std::string>& problems) {
  std::string out;
  for (const auto& p : problems) out += p + "\n";
  return out;
}

// The one problem reported for `a`, which must start with "<field>:" (or "<field>=") and
// contain `detail`.
void check_single(const ForwardArgs& a, const std::string& field, const std::string& detail) {
  const auto problems = rajit::tune::check_forward_args(a);
  CAPTURE(joined(problems));
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].rfind(field, 0) == 0);
  CHECK(problems[0].find(detail) != std::string::npos);
}

}  // namespace

TEST_CASE("check_forward_args: a valid call has no problems") {
  for (const AttentionSpec& s :
       {kSeeds, AttentionSpec{64, 0, 64, false, BiasKind::kNone, Dtype::kFp16},
        AttentionSpec{60, 4, 128, true, BiasKind::kColumn, Dtype::kFp16},
        AttentionSpec{128, 128, 256, false, BiasKind::kNone, Dtype::kBf16}}) {
    CAPTURE(s.key());
    const auto problems = rajit::tune::check_forward_args(valid_args(s));
    CAPTURE(joined(problems));
    CHECK(problems.empty());
  }
  // Per-batch bias, an explicit scale and gates are fine too.
  ForwardArgs a = valid_args(kSeeds);
  a.bias.batch_stride = H * Tk;
  a.scale = 0.1;
  a.w_std = a.w_rec = a.w_disc = reinterpret_cast<const float*>(0x800000);
  CHECK(rajit::tune::check_forward_args(a).empty());
  // With r == 0, k_low and q_low are ignored.
  ForwardArgs plain = valid_args(AttentionSpec{64, 0, 64, true, BiasKind::kNone, Dtype::kBf16});
  plain.k_low.ptr = nullptr;
  plain.q_low.shape = {9, 9, 9, 9};
  CHECK(rajit::tune::check_forward_args(plain).empty());
}

TEST_CASE("check_forward_args: a misaligned pointer is reported with its field") {
  ForwardArgs a = valid_args(kSeeds);
  a.q_std.ptr = fake(0x100008);  // 8-byte aligned; d_std=56, r=8 copies 16 bytes at a time
  check_single(a, "q_std:", "16-byte aligned");
  a = valid_args(kSeeds);
  a.v.ptr = fake(0x500002);
  check_single(a, "v:", "16-byte aligned");
  a = valid_args(kSeeds);
  a.o.ptr = fake(0x600004);
  check_single(a, "o:", "aligned");
  a = valid_args(kSeeds);
  a.q_low.ptr = fake(0x400001);
  check_single(a, "q_low:", "aligned");
  // d_std=60, r=4 copies 8 bytes at a time: 8-byte alignment is enough for Q/K, not for V.
  a = valid_args(AttentionSpec{60, 4, 64, false, BiasKind::kNone, Dtype::kBf16});
  a.q_std.ptr = fake(0x100008);
  CHECK(rajit::tune::check_forward_args(a).empty());
  a.v.ptr = fake(0x500008);
  check_single(a, "v:", "16-byte aligned");
}

TEST_CASE("check_forward_args: a last stride other than 1 is reported with its field") {
  ForwardArgs a = valid_args(kSeeds);
  a.v.stride[3] = 2;
  check_single(a, "v:", "last stride is 2");
  a = valid_args(kSeeds);
  a.k_low.stride[3] = 0;
  check_single(a, "k_low:", "last stride is 0");
}

TEST_CASE("check_forward_args: a stride that breaks vector alignment is reported") {
  ForwardArgs a = valid_args(kSeeds);
  a.k_std.stride[2] = 60;  // rows 120 bytes apart: not a multiple of the 16-byte copy
  check_single(a, "k_std:", "stride[2] = 60");
  a = valid_args(kSeeds);
  a.o.stride[0] = -a.o.stride[0];
  check_single(a, "o:", "stride[0]");
}

TEST_CASE("check_forward_args: a mismatched shape is reported with its field") {
  ForwardArgs a = valid_args(kSeeds);
  a.o.shape[2] = Tq + 1;
  check_single(a, "o:", "shape");
  a = valid_args(kSeeds);
  a.v.shape[2] = Tk - 1;  // V must have as many rows as K
  check_single(a, "v:", "shape");
  a = valid_args(kSeeds);
  a.k_std.shape[3] = 64;  // width must be d_std
  check_single(a, "k_std:", "(2, 4, 96, 56)");
  a = valid_args(kSeeds);
  a.q_low.shape[1] = H + 1;
  check_single(a, "q_low:", "shape");
  a = valid_args(kSeeds);
  a.q_std.shape[0] = 0;
  check_single(a, "shape:", "batch=0");
}

TEST_CASE("check_forward_args: an unsupported head_dim is reported as a spec problem") {
  ForwardArgs a = valid_args(kSeeds);
  a.spec.head_dim = 48;
  const auto problems = rajit::tune::check_forward_args(a);
  CAPTURE(joined(problems));
  REQUIRE_FALSE(problems.empty());
  CHECK(problems[0].rfind("head_dim=48", 0) == 0);
  a.spec.d_std = 3;
  CHECK(rajit::tune::check_forward_args(a).size() == 2);
}

TEST_CASE("check_forward_args: bias pointer and spec.bias must agree") {
  ForwardArgs a = valid_args(AttentionSpec{56, 8, 64, true, BiasKind::kNone, Dtype::kBf16});
  a.bias.ptr = reinterpret_cast<const float*>(0x700000);
  check_single(a, "bias:", "spec.bias=none");
  a = valid_args(kSeeds);
  a.bias.ptr = nullptr;
  check_single(a, "bias:", "needs a bias pointer");
  a = valid_args(kSeeds);
  a.bias.head_stride = -1;
  check_single(a, "bias:", "non-negative");
}

TEST_CASE("check_forward_args: missing operands, bad scales and every problem at once") {
  ForwardArgs a = valid_args(kSeeds);
  a.k_low.ptr = nullptr;
  check_single(a, "k_low:", "null pointer");
  for (double scale : {-1.0, std::numeric_limits<double>::infinity(),
                       std::numeric_limits<double>::quiet_NaN()}) {
    a = valid_args(kSeeds);
    a.scale = scale;
    CAPTURE(scale);
    check_single(a, "scale=", "finite");
  }
  // A set scale whose fp32 scale * log2(e) would be 0 or subnormal (the kernels' raw-maximum
  // softmax needs a normal positive one); kMinScale itself is accepted.
  for (double scale : {1e-300, 1e-40, rajit::tune::kMinScale / 2}) {
    a = valid_args(kSeeds);
    a.scale = scale;
    CAPTURE(scale);
    check_single(a, "scale=", "at least 1e-37");
  }
  a = valid_args(kSeeds);
  a.scale = rajit::tune::kMinScale;
  CHECK(rajit::tune::check_forward_args(a).empty());
  a = valid_args(kSeeds);
  a.q_std.ptr = fake(0x100002);
  a.v.stride[3] = 3;
  a.o.shape[3] = 32;
  a.bias.ptr = nullptr;
  const auto problems = rajit::tune::check_forward_args(a);
  CAPTURE(joined(problems));
  CHECK(problems.size() == 4);
  for (const char* field : {"q_std:", "v:", "o:", "bias:"}) {
    CHECK(std::any_of(problems.begin(), problems.end(),
                      [&](const std::string& p) { return p.rfind(field, 0) == 0; }));
  }
}
