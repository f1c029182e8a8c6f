/// Host tests for check_backward_args(), the backward workspace size and the backward generator.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "generator/backward_source.hpp"
#include "templates/attention/bwd_limits.cuh"
#include "tuner/backward.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BackwardKernel;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::tune::BackwardArgs;
using rajit::tune::MutableTensorView;
using rajit::tune::TensorView;

namespace {

constexpr long long B = 2, H = 4, Tq = 128, Tk = 96;

MutableTensorView contiguous(std::uintptr_t address, long long rows, long long width) {
  MutableTensorView t;
  t.ptr = reinterpret_cast<void*>(address);
  t.shape = {B, H, rows, width};
  t.stride = {H * rows * width, rows * width, width, 1};
  return t;
}

// A valid call on fake, well-aligned device pointers (nothing is dereferenced).
BackwardArgs valid_args(const AttentionSpec& s) {
  BackwardArgs a;
  a.spec = s;
  a.q_std = contiguous(0x100000, Tq, s.d_std).as_const();
  a.k_std = contiguous(0x200000, Tk, s.d_std).as_const();
  a.v = contiguous(0x500000, Tk, s.head_dim).as_const();
  a.o = contiguous(0x600000, Tq, s.head_dim).as_const();
  a.d_o = contiguous(0x680000, Tq, s.head_dim).as_const();
  a.lse = reinterpret_cast<const float*>(0x6c0000);
  a.dq_std = contiguous(0x800000, Tq, s.d_std);
  a.dk_std = contiguous(0x900000, Tk, s.d_std);
  a.dv = contiguous(0xc00000, Tk, s.head_dim);
  if (s.r > 0) {
    a.k_low = contiguous(0x300000, Tq, s.r).as_const();
    a.q_low = contiguous(0x400000, Tk, s.r).as_const();
    a.dk_low = contiguous(0xa00000, Tq, s.r);
    a.dq_low = contiguous(0xb00000, Tk, s.r);
    a.dw_rec = reinterpret_cast<float*>(0xd00100);
  }
  a.dw_std = reinterpret_cast<float*>(0xd00000);
  if (s.bias == BiasKind::kColumn) {
    a.bias.ptr = reinterpret_cast<const float*>(0x700000);
    a.bias.head_stride = Tk;
    a.d_bias = reinterpret_cast<float*>(0xe00000);
    a.d_bias_head_stride = Tk;
    a.dw_disc = reinterpret_cast<float*>(0xd00200);
  }
  return a;
}

const AttentionSpec kSeeds{56, 8, 64, true, BiasKind::kColumn, Dtype::kBf16};

std::string joined(const std::vector<std::string>& problems) {
  std::string out;
  for (const auto& p : problems) out += p + "\n";
  return out;
}

}  // namespace

TEST_CASE("check_backward_args: a valid call has no problems, with and without r and bias") {
  CHECK(rajit::tune::check_backward_args(valid_args(kSeeds)).empty());
  CHECK(rajit::tune::check_backward_args(valid_args({64, 0, 64, false, BiasKind::kNone, Dtype::kFp16})).empty());
  CHECK(rajit::tune::check_backward_args(valid_args({120, 8, 128, true, BiasKind::kColumn, Dtype::kBf16})).empty());
}

TEST_CASE("check_backward_args: specs the backward does not support name the field") {
  const auto wide = rajit::tune::check_backward_args(valid_args({248, 8, 256, true, BiasKind::kNone, Dtype::kBf16}));
  CHECK(joined(wide).find("head_dim=256") != std::string::npos);
  CHECK(joined(wide).find("d_std+r=256") != std::string::npos);
  const auto bad = rajit::tune::check_backward_args(valid_args({50, 8, 64, true, BiasKind::kNone, Dtype::kBf16}));
  CHECK(joined(bad).find("d_std=50") != std::string::npos);
}

TEST_CASE("check_backward_args: every missing, misshapen or misaligned tensor is reported by name") {
  BackwardArgs a = valid_args(kSeeds);
  a.d_o.ptr = nullptr;
  a.lse = nullptr;
  a.dq_low.shape[3] = 9;
  a.dv.stride[3] = 2;
  a.dk_std.ptr = reinterpret_cast<void*>(0x900001);
  const std::string text = joined(rajit::tune::check_backward_args(a));
  CHECK(text.find("d_o: null pointer") != std::string::npos);
  CHECK(text.find("lse: null pointer") != std::string::npos);
  CHECK(text.find("dq_low: shape") != std::string::npos);
  CHECK(text.find("dv: last stride") != std::string::npos);
  CHECK(text.find("dk_std: pointer") != std::string::npos);
}

TEST_CASE("check_backward_args: gradients that do not exist for the spec are rejected") {
  BackwardArgs plain = valid_args({64, 0, 64, true, BiasKind::kNone, Dtype::kBf16});
  plain.dw_rec = reinterpret_cast<float*>(0xd00100);
  plain.d_bias = reinterpret_cast<float*>(0xe00000);
  plain.dw_disc = reinterpret_cast<float*>(0xd00200);
  const std::string text = joined(rajit::tune::check_backward_args(plain));
  CHECK(text.find("dw_rec: must be null when r=0") != std::string::npos);
  CHECK(text.find("d_bias: must be null when spec.bias=none") != std::string::npos);
  CHECK(text.find("dw_disc: must be null when spec.bias=none") != std::string::npos);

  BackwardArgs biased = valid_args(kSeeds);
  biased.bias.ptr = nullptr;
  biased.d_bias_batch_stride = -1;
  const std::string text2 = joined(rajit::tune::check_backward_args(biased));
  CHECK(text2.find("bias: spec.bias=column needs a bias pointer") != std::string::npos);
  CHECK(text2.find("d_bias: strides must be non-negative") != std::string::npos);
}

TEST_CASE("check_backward_args: scale and a caller's workspace are checked") {
  BackwardArgs a = valid_args(kSeeds);
  a.scale = -1;
  a.workspace = reinterpret_cast<void*>(0xf00010);
  a.workspace_bytes = 16;
  const std::string text = joined(rajit::tune::check_backward_args(a));
  CHECK(text.find("scale=-1") != std::string::npos);
  CHECK(text.find("workspace_bytes=16") != std::string::npos);
  CHECK(text.find("256-byte aligned") != std::string::npos);
}

TEST_CASE("backward_workspace_bytes: grows with the atomic dQ accumulator and the bias sums") {
  BackwardArgs a = valid_args(kSeeds);
  const std::size_t atomic = rajit::tune::backward_workspace_bytes(a);
  a.deterministic = true;
  const std::size_t det = rajit::tune::backward_workspace_bytes(a);
  // The fp32 Gq accumulator (B, H, Tq, d_std + r) is only needed without determinism.
  CHECK(atomic - det >= static_cast<std::size_t>(B * H * Tq * (56 + 8) * 4));
  CHECK(det % 256 == 0);
  BackwardArgs nobias = valid_args({56, 8, 64, true, BiasKind::kNone, Dtype::kBf16});
  nobias.deterministic = true;
  CHECK(rajit::tune::backward_workspace_bytes(nobias) < det);
}

TEST_CASE("backward_workspace_bytes: room for packed query rows only where separate q_std and "
          "k_low can be packed") {
  const auto packed_bytes = static_cast<std::size_t>(B * H * Tq * (56 + 8) * 2);
  BackwardArgs separate = valid_args(kSeeds);
  separate.deterministic = true;
  // Folded rows: k_low stored right after q_std (row stride 64) need no packing.
  BackwardArgs folded = separate;
  folded.q_std = contiguous(0x100000, Tq, 64).as_const();
  folded.q_std.shape[3] = 56;
  folded.k_low = folded.q_std;
  folded.k_low.ptr = reinterpret_cast<const void*>(0x100000 + 2 * 56);
  folded.k_low.shape[3] = 8;
  CHECK(rajit::tune::check_backward_args(folded).empty());
  CHECK(rajit::tune::backward_workspace_bytes(separate) -
            rajit::tune::backward_workspace_bytes(folded) ==
        packed_bytes);
  // r = 4 is not whole 16-byte chunks: not packable, so no room either.
  BackwardArgs r4 = valid_args({60, 4, 64, true, BiasKind::kColumn, Dtype::kBf16});
  r4.deterministic = true;
  BackwardArgs r4_folded = r4;
  r4_folded.q_std = contiguous(0x100000, Tq, 64).as_const();
  r4_folded.q_std.shape[3] = 60;
  r4_folded.k_low = r4_folded.q_std;
  r4_folded.k_low.ptr = reinterpret_cast<const void*>(0x100000 + 2 * 60);
  r4_folded.k_low.shape[3] = 4;
  CHECK(rajit::tune::backward_workspace_bytes(r4) == rajit::tune::backward_workspace_bytes(r4_folded));
}

TEST_CASE("plan_dkv_reads: which TMA kind the dK/dV kernel gets, and when the query rows are packed") {
  using rajit::gen::MmaKind;
  using rajit::gen::TileConfig;
  using rajit::tune::plan_dkv_reads;
  ::unsetenv("RAJIT_TMA");
  const TileConfig wgmma{64, 64, 4, 2, MmaKind::kWgmma};
  const BackwardArgs separate = valid_args(kSeeds);
  BackwardArgs folded = separate;
  folded.q_std = contiguous(0x100000, Tq, 64).as_const();
  folded.q_std.shape[3] = 56;
  folded.k_low = folded.q_std;
  folded.k_low.ptr = reinterpret_cast<const void*>(0x100000 + 2 * 56);
  folded.k_low.shape[3] = 8;

  // Separate tensors are packed into folded rows; folded rows need no packing.
  auto plan = plan_dkv_reads(separate, wgmma, 90);
  CHECK(plan.tile.mma == MmaKind::kTmaFolded);
  CHECK(plan.pack);
  plan = plan_dkv_reads(folded, wgmma, 90);
  CHECK(plan.tile.mma == MmaKind::kTmaFolded);
  CHECK_FALSE(plan.pack);
  // mma.sync tiles, other devices and RAJIT_TMA=0 keep the tile as it is.
  const TileConfig sync{64, 128, 8, 2, MmaKind::kSync};
  CHECK(plan_dkv_reads(separate, sync, 90).tile.mma == MmaKind::kSync);
  CHECK_FALSE(plan_dkv_reads(separate, sync, 90).pack);
  CHECK(plan_dkv_reads(separate, wgmma, 80).tile.mma == MmaKind::kWgmma);
  ::setenv("RAJIT_TMA", "0", 1);
  plan = plan_dkv_reads(separate, wgmma, 90);
  ::unsetenv("RAJIT_TMA");
  CHECK(plan.tile.mma == MmaKind::kWgmma);
  CHECK_FALSE(plan.pack);
  // Pinned kinds: .tma on separate tensors stays unpacked, .tmafold packs; a kind the tensors do
  // not allow names the tile and what to use.
  plan = plan_dkv_reads(separate, {64, 64, 4, 2, MmaKind::kTma}, 90);
  CHECK(plan.tile.mma == MmaKind::kTma);
  CHECK_FALSE(plan.pack);
  CHECK(plan_dkv_reads(separate, {64, 64, 4, 2, MmaKind::kTmaFolded}, 90).pack);
  try {
    plan_dkv_reads(folded, {64, 64, 4, 2, MmaKind::kTma}, 90);
    FAIL("a pinned .tma tile on folded rows must be refused");
  } catch (const rajit::tune::ArgumentError& e) {
    CHECK(std::string(e.what()).find("use the .tmafold tile") != std::string::npos);
  }
  BackwardArgs unaligned = separate;
  unaligned.d_o.stride[2] = 68;  // rows of 136 bytes: not a multiple of 16
  CHECK(plan_dkv_reads(unaligned, wgmma, 90).tile.mma == MmaKind::kWgmma);
  CHECK_THROWS_AS(plan_dkv_reads(unaligned, {64, 64, 4, 2, MmaKind::kTmaFolded}, 90),
                  rajit::tune::ArgumentError);
  // r = 4 cannot be packed: at width 64 the cp.async kernel stays (.tma's mid-step wait does not
  // hide there), and a pinned .tmafold is refused.
  BackwardArgs r4 = valid_args({60, 4, 64, true, BiasKind::kColumn, Dtype::kBf16});
  r4.q_std = contiguous(0x100000, Tq, 64).as_const();  // rows padded to 128 bytes: TMA-readable
  r4.q_std.shape[3] = 60;
  CHECK(plan_dkv_reads(r4, wgmma, 90).tile.mma == MmaKind::kWgmma);
  CHECK_THROWS_AS(plan_dkv_reads(r4, {64, 64, 4, 2, MmaKind::kTmaFolded}, 90),
                  rajit::tune::ArgumentError);
}

TEST_CASE("generate_backward: every kernel family renders deterministically with procedural names") {
  for (BackwardKernel k : {BackwardKernel::kDkv, BackwardKernel::kDkvAtomicDq, BackwardKernel::kDq,
                           BackwardKernel::kAux}) {
    CAPTURE(rajit::gen::to_string(k));
    const auto tiles = rajit::gen::valid_backward_tiles(kSeeds, k, 227 * 1024);
    CHECK((k == BackwardKernel::kAux) == tiles.empty());
    const rajit::gen::TileConfig tile = tiles.empty() ? rajit::gen::TileConfig{} : tiles.front();
    const auto a = rajit::gen::generate_backward(kSeeds, k, tile);
    const auto b = rajit::gen::generate_backward(kSeeds, k, tile);
    CHECK(a.text == b.text);
    CHECK(a.entry.rfind("rajit_bwd", 0) == 0);
    CHECK(a.text.find("#include") == std::string::npos);  // flattened for NVRTC
    CHECK(a.text.find("${") == std::string::npos);
  }
}

TEST_CASE("validate_backward: bad tiles name the field and the allowed values") {
  const auto p = rajit::gen::validate_backward(kSeeds, BackwardKernel::kDkv, {48, 96, 3, 3}, 227 * 1024);
  const std::string text = joined(p);
  CHECK(text.find("block_m=48") != std::string::npos);
  CHECK(text.find("block_n=96") != std::string::npos);
  CHECK(text.find("warps=3") != std::string::npos);
  CHECK(text.find("stages=3") != std::string::npos);
  const auto smem = rajit::gen::validate_backward({120, 8, 128, true, BiasKind::kNone, Dtype::kBf16},
                                                  BackwardKernel::kDkvAtomicDq, {16, 128, 8, 2}, 48 * 1024);
  CHECK(joined(smem).find("bytes of shared memory") != std::string::npos);
  // 16-row query blocks only where 32 would not fit the registers.
  CHECK(!rajit::gen::validate_backward(kSeeds, BackwardKernel::kDkv, {16, 64, 4, 2}, 227 * 1024).empty());
  CHECK(rajit::gen::validate_backward({120, 8, 128, true, BiasKind::kNone, Dtype::kBf16},
                                      BackwardKernel::kDkv, {16, 64, 4, 2}, 227 * 1024).empty());
}

TEST_CASE("validate_backward: wgmma dK/dV tiles (sm_90a) have their own rules and messages") {
  using rajit::gen::MmaKind;
  const MmaKind wg = MmaKind::kWgmma;
  // Listed only when asked for, and only for the dK/dV kernels.
  const auto with = rajit::gen::valid_backward_tiles(kSeeds, BackwardKernel::kDkvAtomicDq, 227 * 1024, true);
  const auto without = rajit::gen::valid_backward_tiles(kSeeds, BackwardKernel::kDkvAtomicDq, 227 * 1024);
  CHECK(with.size() == without.size() + 2);  // bn64.w4 and bn128.w8, two stages
  CHECK(with.back().mma == wg);
  for (const auto& t : rajit::gen::valid_backward_tiles(kSeeds, BackwardKernel::kDq, 227 * 1024, true)) {
    CHECK(t.mma == MmaKind::kSync);
  }
  CHECK(rajit::gen::validate_backward(kSeeds, BackwardKernel::kDkv, {64, 64, 4, 2, wg}, 227 * 1024).empty());
  const std::string fields =
      joined(rajit::gen::validate_backward(kSeeds, BackwardKernel::kDkv, {32, 96, 3, 3, wg}, 227 * 1024));
  CHECK(fields.find("block_m=32: wgmma bwddkv tiles take 64") != std::string::npos);
  CHECK(fields.find("block_n=96") != std::string::npos);
  CHECK(fields.find("warps=3") != std::string::npos);
  CHECK(fields.find("stages=3: wgmma bwddkv tiles use 2 or 2") == std::string::npos);  // no "x or x"
  CHECK(fields.find("stages=3") != std::string::npos);
  // Widths other than 64 and 128 (here d_std + r = 96) stay on mma.sync tiles.
  const std::string width = joined(rajit::gen::validate_backward(
      {88, 8, 96, true, BiasKind::kColumn, Dtype::kBf16}, BackwardKernel::kDkvAtomicDq,
      {64, 64, 4, 2, wg}, 227 * 1024));
  CHECK(width.find("head_dim and d_std + r (padded to 16) both 64 or 128") != std::string::npos);
  const std::string dq =
      joined(rajit::gen::validate_backward(kSeeds, BackwardKernel::kDq, {64, 64, 4, 2, wg}, 227 * 1024));
  CHECK(dq.find("has no wgmma tiles") != std::string::npos);
  // The generated source is the wgmma family's.
  const auto src = rajit::gen::generate_backward(kSeeds, BackwardKernel::kDkvAtomicDq, {64, 64, 4, 2, wg});
  CHECK(src.text.find("bwd_dkv_wgmma<Config>") != std::string::npos);
  CHECK(src.readable_key.find(".wgmma") != std::string::npos);
}
