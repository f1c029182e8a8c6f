/// Host tests for tma_kind_for() (when a forward call may run the TMA kernels, and which layout)
/// and for the bias-row mode's shared-memory rule.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "templates/attention/limits.cuh"
#include "tuner/tma_maps.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::gen::MmaKind;
using rajit::gen::TileConfig;
using rajit::tune::ForwardArgs;
using rajit::tune::TensorView;
using rajit::tune::detail::tma_kind_for;

namespace {

constexpr long long B = 2, H = 4, T = 1000;
constexpr int kHopperSmem = 227 * 1024;
const TileConfig kWgmmaTile{128, 64, 8, 3, MmaKind::kWgmma};
const AttentionSpec kSeeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};

const void* at(std::uintptr_t address) { return reinterpret_cast<const void*>(address); }

// (B, H, T, width) rows `row_width` elements apart (row_width >= width); nothing is dereferenced.
TensorView rows(const void* ptr, long long width, long long row_width) {
  TensorView t;
  t.ptr = ptr;
  t.shape = {B, H, T, width};
  t.stride = {H * T * row_width, T * row_width, row_width, 1};
  return t;
}

// The seeds' spec on separate contiguous tensors (every row a multiple of 16 bytes).
ForwardArgs separate_args() {
  ForwardArgs a;
  a.spec = kSeeds;
  a.q_std = rows(at(0x1000000), 56, 56);
  a.k_low = rows(at(0x2000000), 8, 8);
  a.k_std = rows(at(0x3000000), 56, 56);
  a.q_low = rows(at(0x4000000), 8, 8);
  a.v = rows(at(0x5000000), 64, 64);
  a.o = rows(at(0x6000000), 64, 64);
  a.bias.ptr = reinterpret_cast<const float*>(0x7000000);
  a.bias.batch_stride = 0;
  a.bias.head_stride = T;
  return a;
}

// The same call on folded rows: Qf = [q_std | k_low], Kf = [k_std | q_low], 64 columns each.
ForwardArgs folded_args() {
  ForwardArgs a = separate_args();
  a.q_std = rows(at(0x1000000), 56, 64);
  a.k_low = rows(at(0x1000000 + 2 * 56), 8, 64);
  a.k_std = rows(at(0x3000000), 56, 64);
  a.q_low = rows(at(0x3000000 + 2 * 56), 8, 64);
  return a;
}

MmaKind kind(const ForwardArgs& a, std::string* why = nullptr) {
  return tma_kind_for(a, kWgmmaTile, kHopperSmem, why);
}

}  // namespace

TEST_CASE("tma_kind_for: folded rows get .tmafold, separate tensors .tma, plain attention .tmafold") {
  CHECK(kind(folded_args()) == MmaKind::kTmaFolded);
  CHECK(kind(separate_args()) == MmaKind::kTma);
  ForwardArgs plain = separate_args();
  plain.spec = {64, 0, 64, true, BiasKind::kNone, Dtype::kFp16};
  plain.q_std = rows(at(0x1000000), 64, 64);
  plain.k_std = rows(at(0x3000000), 64, 64);
  plain.bias = {};
  CHECK(kind(plain) == MmaKind::kTmaFolded);
  // Folded only when both sides continue their standard part with equal strides.
  ForwardArgs half = folded_args();
  half.q_low = rows(at(0x4000000), 8, 8);
  CHECK(kind(half) == MmaKind::kTma);
}

TEST_CASE("tma_kind_for: the cp.async kernel where TMA cannot read the tensors, with the reason") {
  std::string why;
  // Bias rows that do not start on 16-byte boundaries (a TMA box must): fine while the kernel's
  // bias row (plain loads) holds every key, the cp.async kernel where seqlen_k is longer.
  ForwardArgs a = separate_args();
  a.bias.head_stride = 17;
  CHECK(kind(a) == MmaKind::kTma);  // T = 1000
  a = separate_args();
  a.bias.ptr = reinterpret_cast<const float*>(0x7000004);
  CHECK(kind(a) == MmaKind::kTma);
  const int capacity = rajit::attn::tma_fwd_bias_row_capacity(56, 8, 64, 128, 64, 8, 3, false,
                                                              kHopperSmem);
  for (long long tk : {static_cast<long long>(capacity), static_cast<long long>(capacity) + 1}) {
    CAPTURE(tk);
    a.k_std.shape[2] = a.q_low.shape[2] = a.v.shape[2] = tk;
    if (tk <= capacity) {
      CHECK(kind(a) == MmaKind::kTma);
    } else {
      CHECK(kind(a, &why) == MmaKind::kWgmma);
      CHECK(why.find("bias: rows do not start on 16-byte boundaries") != std::string::npos);
      CHECK(why.find(std::to_string(capacity)) != std::string::npos);
    }
  }
  a = folded_args();  // aligned rows: TMA at any length, the rest of the row by boxes
  a.k_std.shape[2] = a.q_low.shape[2] = a.v.shape[2] = 100000;
  CHECK(kind(a) == MmaKind::kTmaFolded);
  // d_std = 60 as separate tensors: 120-byte rows.
  a = separate_args();
  a.spec = {60, 4, 64, true, BiasKind::kColumn, Dtype::kBf16};
  a.q_std = rows(at(0x1000000), 60, 60);
  a.k_std = rows(at(0x3000000), 60, 60);
  a.k_low = rows(at(0x2000000), 4, 4);
  a.q_low = rows(at(0x4000000), 4, 4);
  CHECK(kind(a, &why) == MmaKind::kWgmma);
  CHECK(why.find("stride") != std::string::npos);
  // ... but the same widths as folded 64-column rows are fine.
  a.q_std = rows(at(0x1000000), 60, 64);
  a.k_low = rows(at(0x1000000 + 2 * 60), 4, 64);
  a.k_std = rows(at(0x3000000), 60, 64);
  a.q_low = rows(at(0x3000000 + 2 * 60), 4, 64);
  CHECK(kind(a) == MmaKind::kTmaFolded);
  // A pointer off a 16-byte boundary, a zero stride over several heads.
  a = separate_args();
  a.v.ptr = at(0x5000008);
  CHECK(kind(a, &why) == MmaKind::kWgmma);
  a = separate_args();
  a.k_std.stride[1] = 0;
  CHECK(kind(a) == MmaKind::kWgmma);
  // Not a wgmma tile: nothing to upgrade.
  CHECK(tma_kind_for(folded_args(), {128, 64, 8, 2}, kHopperSmem) == MmaKind::kWgmma);
}

TEST_CASE("tma_kind_for: RAJIT_TMA=0 keeps the cp.async kernel") {
  ::setenv("RAJIT_TMA", "0", 1);
  std::string why;
  const MmaKind k = kind(folded_args(), &why);
  ::unsetenv("RAJIT_TMA");
  CHECK(k == MmaKind::kWgmma);
  CHECK(why == "RAJIT_TMA=0");
  CHECK(kind(folded_args()) == MmaKind::kTmaFolded);
}

TEST_CASE("TMA tile keys round-trip and validate like their wgmma shapes") {
  for (MmaKind k : {MmaKind::kTma, MmaKind::kTmaFolded}) {
    TileConfig t = kWgmmaTile;
    t.mma = k;
    CAPTURE(t.key());
    CHECK(rajit::gen::parse_tile_key(t.key()) == t);
    CHECK(rajit::gen::validate(kSeeds, t, kHopperSmem).empty());
    CHECK(rajit::gen::runs_on(t, 90));
    CHECK_FALSE(rajit::gen::runs_on(t, 80));
  }
  CHECK(kWgmmaTile.key() == "bm128.bn64.w8.s3.wgmma");
  CHECK(rajit::gen::parse_tile_key("bm128.bn64.w8.s3.tmafold").mma == MmaKind::kTmaFolded);
  CHECK_THROWS_AS(rajit::gen::parse_tile_key("bm128.bn64.w8.s3.tmax"), rajit::gen::SpecError);
}

// The bias row keeps a CTA's scaled bias in shared memory after the per-stage vectors, as many
// key tiles as fit without lowering the tile's CTAs per SM (228 KiB per SM, 1 KiB reserved per
// CTA, 227 KiB per CTA).
TEST_CASE("bias row: its capacity is the most whole key tiles that keep the CTAs per SM") {
  namespace attn = rajit::attn;
  struct Tile {
    int d_std, r, head_dim, block_m, block_n, warps, stages;
    bool folded;
  };
  const Tile tiles[] = {
      {56, 8, 64, 128, 64, 8, 4, true},   {56, 8, 64, 128, 64, 8, 4, false},
      {56, 8, 64, 128, 64, 8, 3, true},   {64, 0, 64, 128, 128, 8, 2, true},
      {120, 8, 128, 192, 64, 12, 4, true}, {120, 8, 128, 128, 64, 8, 3, false},
      {248, 8, 256, 64, 64, 4, 2, true},
  };
  for (const Tile& t : tiles) {
    CAPTURE(t.head_dim);
    CAPTURE(t.block_m);
    CAPTURE(t.stages);
    CAPTURE(t.folded);
    const int compiled = attn::tma_fwd_shared_bytes(t.d_std, t.r, t.head_dim, t.block_m,
                                                    t.block_n, t.stages, true, t.folded);
    const int blocks = attn::tma_fwd_min_blocks(t.head_dim, t.block_n, t.warps, compiled);
    const int cap = attn::tma_fwd_bias_row_capacity(t.d_std, t.r, t.head_dim, t.block_m,
                                                    t.block_n, t.warps, t.stages, t.folded,
                                                    kHopperSmem);
    CAPTURE(cap);
    CHECK(cap > 0);
    CHECK(cap % t.block_n == 0);
    const auto fits = [&](int keys) {
      const int bytes = compiled + 4 * keys;
      return bytes <= kHopperSmem && blocks * (bytes + 1024) <= 228 * 1024;
    };
    CHECK(fits(cap));
    CHECK_FALSE(fits(cap + t.block_n));
    // A call keeps all of seqlen_k (whole key tiles) up to the capacity, then the capacity.
    CHECK(attn::tma_fwd_bias_row_keys(1, t.block_n, cap) == t.block_n);
    CHECK(attn::tma_fwd_bias_row_keys(cap - 1, t.block_n, cap) == cap);
    CHECK(attn::tma_fwd_bias_row_keys(cap + 1, t.block_n, cap) == cap);
  }
  // The seeds' tile keeps rows up to 7872 keys (T = 4096 whole; T = 8192 all but its last 5 key
  // tiles), the d128 benchmark tile (one CTA per SM) up to 12480.
  CHECK(attn::tma_fwd_bias_row_capacity(56, 8, 64, 128, 64, 8, 4, true, kHopperSmem) == 7872);
  CHECK(attn::tma_fwd_bias_row_capacity(120, 8, 128, 192, 64, 12, 4, true, kHopperSmem) == 12480);
}

// Separate operands: where d_std ends 8 columns into a k16 step and r fills an odd number of
// 8-column groups, d_std's last 8 columns join the low part and Q K^T takes one k16 step fewer.
TEST_CASE("separate operands: the std tail joins the low groups exactly where it saves a k16 "
          "step") {
  namespace attn = rajit::attn;
  CHECK(attn::tma_std_tail_groups(56, 8, false) == 1);
  CHECK(attn::tma_std_steps(56, 8, false) == 3);
  CHECK(attn::tma_low_groups(56, 8, false) == 2);
  CHECK(attn::tma_std_tail_groups(120, 8, false) == 1);
  CHECK(attn::tma_std_steps(120, 8, false) == 7);
  CHECK(attn::tma_std_tail_groups(56, 8, true) == 0);    // folded: one swizzled row, no groups
  CHECK(attn::tma_std_steps(56, 8, true) == 4);
  CHECK(attn::tma_std_tail_groups(60, 4, false) == 0);   // 12 columns into the step
  CHECK(attn::tma_std_tail_groups(56, 16, false) == 0);  // r fills two groups: no saving
  CHECK(attn::tma_std_tail_groups(8, 8, false) == 1);    // no swizzled step at all
  CHECK(attn::tma_std_steps(8, 8, false) == 0);
  for (int d_std = 8; d_std <= 256; d_std += 4) {
    for (int r = 1; r <= 128; ++r) {
      CAPTURE(d_std);
      CAPTURE(r);
      const int before = (d_std + 15) / 16 + ((r + 7) / 8 + 1) / 2;
      const int steps =
          attn::tma_std_steps(d_std, r, false) + attn::tma_low_groups(d_std, r, false) / 2;
      if (attn::tma_std_tail_groups(d_std, r, false) > 0) {
        CHECK(steps == before - 1);
      } else {
        CHECK(steps == before);
      }
    }
  }
}
