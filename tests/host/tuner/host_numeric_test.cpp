/// Host tests for the fp16/bf16 <-> float conversions used for inputs and references.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tuner/host_numeric.hpp"

using rajit::tune::bf16_to_float;
using rajit::tune::float_to_bf16;
using rajit::tune::float_to_fp16;
using rajit::tune::fp16_to_float;

namespace {

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Exact round-to-nearest-even of a finite non-negative double onto the sorted, finite,
// non-negative values of a 16-bit format (bits 0x0000..max_bits), or `inf_bits` past the top.
std::uint16_t round_to_nearest_even(double x, const std::vector<double>& values, double overflow_at,
                                    std::uint16_t inf_bits) {
  if (x >= overflow_at) return inf_bits;  // overflow_at: the midpoint above the largest finite
  const auto it = std::lower_bound(values.begin(), values.end(), x);
  if (it == values.begin()) return 0;
  if (it == values.end()) return static_cast<std::uint16_t>(values.size() - 1);
  const auto hi = static_cast<std::uint16_t>(it - values.begin());
  const auto lo = static_cast<std::uint16_t>(hi - 1);
  const double dlo = x - values[lo], dhi = values[hi] - x;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) == 0 ? lo : hi;
}

}  // namespace

TEST_CASE("host_numeric: representative bf16 values have their exact encodings") {
  CHECK(float_to_bf16(0.0f) == 0x0000);
  CHECK(float_to_bf16(-0.0f) == 0x8000);
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(float_to_bf16(-2.0f) == 0xc000);
  CHECK(float_to_bf16(0.5f) == 0x3f00);
  CHECK(float_to_bf16(3.140625f) == 0x4049);
  CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(bf16_to_float(float_to_bf16(bits_to_float(0x7fffffffu)))));  // no carry into inf
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(bf16_to_float(0xc000) == -2.0f);
  CHECK(std::signbit(bf16_to_float(0x8000)));
  // The largest float rounds up past the largest bf16 (0x7f7f) to infinity.
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);
  // Subnormal floats keep their bf16 bits.
  CHECK(float_to_bf16(bits_to_float(0x00010000u)) == 0x0001);
}

TEST_CASE("host_numeric: bf16 rounds to nearest, ties to even") {
  // 1 + 2^-8 is halfway between 1 (0x3f80) and 1 + 2^-7 (0x3f81): the even one wins.
  CHECK(float_to_bf16(1.0f + 0x1p-8f) == 0x3f80);
  CHECK(float_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);
  CHECK(float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);  // just above the tie
  CHECK(float_to_bf16(1.0f + 0x1p-8f - 0x1p-20f) == 0x3f80);  // just below
  CHECK(float_to_bf16(-(1.0f + 0x1p-8f)) == 0xbf80);
}

TEST_CASE("host_numeric: every non-NaN bf16 round-trips, and rounding is exact RNE") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = bf16_to_float(b);
    if (std::isnan(f)) continue;
    CAPTURE(h);
    CHECK(float_to_bf16(f) == b);
  }
  std::vector<double> values;  // finite non-negative bf16 values in bit order
  for (std::uint32_t h = 0; h <= 0x7f7f; ++h) values.push_back(bf16_to_float(static_cast<std::uint16_t>(h)));
  const double overflow_at = values.back() + (values.back() - values[values.size() - 2]) / 2;
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::uint32_t> any_bits(0, 0x7f7fffffu);
  for (int n = 0; n < 200000; ++n) {
    const float f = bits_to_float(any_bits(rng));
    const auto want = round_to_nearest_even(f, values, overflow_at, 0x7f80);
    CAPTURE(f);
    CHECK(float_to_bf16(f) == want);
    CHECK(float_to_bf16(-f) == (want | 0x8000));
  }
}

TEST_CASE("host_numeric: representative fp16 values have their exact encodings") {
  CHECK(float_to_fp16(0.0f) == 0x0000);
  CHECK(float_to_fp16(-0.0f) == 0x8000);
  CHECK(float_to_fp16(1.0f) == 0x3c00);
  CHECK(float_to_fp16(-2.0f) == 0xc000);
  CHECK(float_to_fp16(0.333251953125f) == 0x3555);
  CHECK(float_to_fp16(65504.0f) == 0x7bff);  // largest finite
  CHECK(float_to_fp16(0x1p-14f) == 0x0400);  // smallest normal
  CHECK(fp16_to_float(0x3c00) == 1.0f);
  CHECK(fp16_to_float(0x7bff) == 65504.0f);
  CHECK(fp16_to_float(0x0400) == 0x1p-14f);
  CHECK(std::signbit(fp16_to_float(0x8000)));
  CHECK(fp16_to_float(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(fp16_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(fp16_to_float(0x7e00)));
  const std::uint16_t nan = float_to_fp16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
}

TEST_CASE("host_numeric: fp16 rounds to nearest, ties to even") {
  CHECK(float_to_fp16(1.0f + 0x1p-11f) == 0x3c00);      // tie between 0x3c00 and 0x3c01
  CHECK(float_to_fp16(1.0f + 3 * 0x1p-11f) == 0x3c02);  // tie between 0x3c01 and 0x3c02
  CHECK(float_to_fp16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
  CHECK(float_to_fp16(-(1.0f + 3 * 0x1p-11f)) == 0xbc02);
  CHECK(float_to_fp16(2049.0f) == 0x6800);  // 2048 and 2050 are neighbours: tie to 2048
  CHECK(float_to_fp16(2051.0f) == 0x6802);  // tie between 2050 and 2052: to 2052
}

TEST_CASE("host_numeric: fp16 subnormals round correctly") {
  CHECK(float_to_fp16(0x1p-24f) == 0x0001);         // smallest subnormal
  CHECK(float_to_fp16(1023 * 0x1p-24f) == 0x03ff);  // largest subnormal
  CHECK(float_to_fp16(0x1p-25f) == 0x0000);         // tie between 0 and 2^-24: even is 0
  CHECK(float_to_fp16(3 * 0x1p-25f) == 0x0002);     // tie between 1 and 2 units: 2
  CHECK(float_to_fp16(0x1p-25f + 0x1p-40f) == 0x0001);
  CHECK(float_to_fp16(0x1p-26f) == 0x0000);             // underflows to zero
  CHECK(float_to_fp16(-0x1p-26f) == 0x8000);            // ... keeping its sign
  CHECK(float_to_fp16(1023.5f * 0x1p-24f) == 0x0400);   // rounds up into the normals
  CHECK(float_to_fp16(-5 * 0x1p-24f) == 0x8005);
  CHECK(fp16_to_float(0x0001) == 0x1p-24f);
  CHECK(fp16_to_float(0x03ff) == 1023 * 0x1p-24f);
  CHECK(fp16_to_float(0x8003) == -3 * 0x1p-24f);
}

TEST_CASE("host_numeric: fp16 overflow goes to infinity") {
  CHECK(float_to_fp16(65519.0f) == 0x7bff);  // below the midpoint to 65536
  CHECK(float_to_fp16(65520.0f) == 0x7c00);  // the midpoint ties to the even neighbour: inf
  CHECK(float_to_fp16(1e6f) == 0x7c00);
  CHECK(float_to_fp16(-1e6f) == 0xfc00);
  CHECK(float_to_fp16(std::numeric_limits<float>::max()) == 0x7c00);
  CHECK(float_to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(float_to_fp16(-std::numeric_limits<float>::infinity()) == 0xfc00);
}

TEST_CASE("host_numeric: every non-NaN fp16 round-trips, and rounding is exact RNE") {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = fp16_to_float(b);
    if (std::isnan(f)) continue;
    CAPTURE(h);
    CHECK(float_to_fp16(f) == b);
  }
  std::vector<double> values;  // finite non-negative fp16 values in bit order
  for (std::uint32_t h = 0; h <= 0x7bff; ++h) values.push_back(fp16_to_float(static_cast<std::uint16_t>(h)));
  const double overflow_at = 65520.0;
  std::mt19937 rng(2);
  // Floats from 2^-30 to 2^17 (every fp16 regime: underflow, subnormal, normal, overflow).
  std::uniform_int_distribution<std::uint32_t> bits(0x30800000u, 0x48000000u);
  for (int n = 0; n < 200000; ++n) {
    const float f = bits_to_float(bits(rng));
    const auto want = round_to_nearest_even(f, values, overflow_at, 0x7c00);
    CAPTURE(f);
    CHECK(float_to_fp16(f) == want);
    CHECK(float_to_fp16(-f) == (want | 0x8000));
  }
}

TEST_CASE("host_numeric: to_storage and from_storage dispatch on the dtype") {
  using rajit::gen::Dtype;
  CHECK(rajit::tune::to_storage(Dtype::kBf16, 1.0f) == 0x3f80);
  CHECK(rajit::tune::to_storage(Dtype::kFp16, 1.0f) == 0x3c00);
  CHECK(rajit::tune::from_storage(Dtype::kBf16, 0x4000) == 2.0f);
  CHECK(rajit::tune::from_storage(Dtype::kFp16, 0x4000) == 2.0f);
  CHECK(rajit::tune::from_storage(Dtype::kFp16, 0x3555) == 0.333251953125f);
}
