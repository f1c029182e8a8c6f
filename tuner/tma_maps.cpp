/// TMA eligibility rules and tensor-map encoding for the TMA kernels (fwd_tma.cuh, the TMA dK/dV kernel).
#include "tuner/tma_maps.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "runtime/driver.hpp"
#include "templates/attention/limits.cuh"

namespace rajit::tune::detail {
namespace {

constexpr long long kElemBytes = 2;

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// A stride TMA can use: a positive multiple of 16 bytes below 2^40, or any value on a dimension
// of extent 1 (never stepped over).
bool tma_stride_ok(long long stride_elems, long long extent) {
  if (extent <= 1) return true;
  const long long bytes = stride_elems * kElemBytes;
  return stride_elems > 0 && bytes % 16 == 0 && bytes < (1LL << 40);
}

}  // namespace

bool tma_view_ok(const TensorView& t) {
  return t.ptr != nullptr && aligned16(t.ptr) && tma_stride_ok(t.stride[2], t.shape[2]) &&
         tma_stride_ok(t.stride[1], t.shape[1]) && tma_stride_ok(t.stride[0], t.shape[0]);
}

// `low` continues `std_part` column for column: the folded rows of ra-math.md.
bool tma_folded(const TensorView& std_part, const TensorView& low, int d_std) {
  return static_cast<const char*>(low.ptr) ==
             static_cast<const char*>(std_part.ptr) + d_std * kElemBytes &&
         low.stride == std_part.stride;
}

bool tma_disabled_by_env() {
  const char* v = std::getenv("RAJIT_TMA");
  return v != nullptr && std::strcmp(v, "0") == 0;
}

namespace {

// The bias as TMA sees it: one fp32 array of `extent` elements whose rows start at
// b * batch_stride + h * head_stride; each row start must be 16-byte aligned.
long long bias_extent(const ForwardArgs& a) {
  const long long B = a.q_std.shape[0], H = a.q_std.shape[1], Tk = a.k_std.shape[2];
  const long long batches = a.bias.batch_stride == 0 ? 1 : B;
  return (batches - 1) * a.bias.batch_stride + (H - 1) * a.bias.head_stride + Tk;
}

}  // namespace

bool bias_rows_aligned(const ForwardArgs& a) {
  return aligned16(a.bias.ptr) && a.bias.batch_stride % 4 == 0 && a.bias.head_stride % 4 == 0;
}

int bias_row_keys(const ForwardArgs& a, const gen::TileConfig& tile, bool folded,
                  int max_shared_bytes) {
  const gen::AttentionSpec& s = a.spec;
  if (s.bias != gen::BiasKind::kColumn) return 0;
  const int capacity = attn::tma_fwd_bias_row_capacity(s.d_std, s.r, s.head_dim, tile.block_m,
                                                       tile.block_n, tile.warps, tile.stages,
                                                       folded, max_shared_bytes);
  return attn::tma_fwd_bias_row_keys(static_cast<int>(a.k_std.shape[2]), tile.block_n, capacity);
}

attn::TmaMap encode_tma_map(gen::Dtype dtype, int cols, const TensorView& t,
                            int box_cols, int box_rows, const char* what) {
  const CUtensorMapDataType type = dtype == gen::Dtype::kBf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                              : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const bool swizzle = box_cols == 64;
  attn::TmaMap map{};
  const long long rows = t.shape[2], heads = t.shape[1], batches = t.shape[0];
  // A dimension of extent 1 is never stepped over; give it the dense stride so every stride is
  // a valid multiple of 16 bytes.
  const long long row_bytes = rows > 1 ? t.stride[2] * kElemBytes : (cols * kElemBytes + 15) / 16 * 16;
  const long long head_bytes = heads > 1 ? t.stride[1] * kElemBytes : row_bytes * rows;
  const long long batch_bytes = batches > 1 ? t.stride[0] * kElemBytes : head_bytes * heads;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batches)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(row_bytes),
                                 static_cast<cuuint64_t>(head_bytes),
                                 static_cast<cuuint64_t>(batch_bytes)};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows),
                             1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  RAJIT_CU_CHECK(rt::driver().cuTensorMapEncodeTiled(
                     reinterpret_cast<CUtensorMap*>(&map), type, 4, const_cast<void*>(t.ptr), dims,
                     strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     swizzle ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                     CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                 "encoding the TMA map of {} ({} columns, box {} x {})", what, cols, box_cols,
                 box_rows);
  return map;
}

namespace {

// Everything encode_tma_maps reads, as plain bytes: equal keys give equal maps.
struct MapKey {
  int d_std, r, head_dim, bias, dtype, mma, block_m, block_n;
  struct View {
    const void* ptr;
    long long shape[4], stride[4];
  } views[5];
  const void* bias_ptr;
  long long bias_batch_stride, bias_head_stride;
};

MapKey key_of(const ForwardArgs& a, const gen::TileConfig& tile) {
  MapKey k;
  std::memset(&k, 0, sizeof k);  // padding too: keys are compared with memcmp
  const gen::AttentionSpec& s = a.spec;
  k.d_std = s.d_std;
  k.r = s.r;
  k.head_dim = s.head_dim;
  k.bias = static_cast<int>(s.bias);
  k.dtype = static_cast<int>(s.dtype);
  k.mma = static_cast<int>(tile.mma);
  k.block_m = tile.block_m;
  k.block_n = tile.block_n;
  const TensorView* views[5] = {&a.q_std, &a.k_std, &a.v, &a.k_low, &a.q_low};
  for (int i = 0; i < 5; ++i) {
    k.views[i].ptr = views[i]->ptr;
    for (int d = 0; d < 4; ++d) {
      k.views[i].shape[d] = views[i]->shape[d];
      k.views[i].stride[d] = views[i]->stride[d];
    }
  }
  k.bias_ptr = a.bias.ptr;
  k.bias_batch_stride = a.bias.batch_stride;
  k.bias_head_stride = a.bias.head_stride;
  return k;
}

attn::FwdTmaMaps encode_all(const ForwardArgs& a, const gen::TileConfig& tile);

}  // namespace

gen::MmaKind tma_kind_for(const ForwardArgs& a, const gen::TileConfig& wgmma_tile,
                          int max_shared_bytes, std::string* why) {
  const auto no = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return gen::MmaKind::kWgmma;
  };
  const gen::AttentionSpec& s = a.spec;
  if (wgmma_tile.mma != gen::MmaKind::kWgmma) return no("not a wgmma tile");
  if (tma_disabled_by_env()) return no("RAJIT_TMA=0");
  if (!tma_view_ok(a.q_std) || !tma_view_ok(a.k_std) || !tma_view_ok(a.v)) {
    return no("q_std, k_std or v: pointer or stride not a multiple of 16 bytes");
  }
  bool folded = s.r == 0;
  if (s.r > 0) {
    folded = tma_folded(a.q_std, a.k_low, s.d_std) && tma_folded(a.k_std, a.q_low, s.d_std);
    if (!folded && (!tma_view_ok(a.k_low) || !tma_view_ok(a.q_low))) {
      return no("k_low or q_low: pointer or stride not a multiple of 16 bytes");
    }
  }
  // The bit test, not gen::validate: this runs on every forward call and builds no messages.
  const gen::TileConfig& t = wgmma_tile;
  if (attn::check_tma_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps, t.stages,
                           s.bias == gen::BiasKind::kColumn, folded, max_shared_bytes) != 0) {
    return no("the TMA tile does not fit this device");
  }
  if (s.bias == gen::BiasKind::kColumn) {
    if (bias_extent(a) >= (1LL << 31)) return no("bias: more than 2^31 elements");
    // Bias rows that do not start on 16 bytes cannot be TMA boxes; the kernel reads its bias row
    // with plain loads, so they are fine when that row holds every key.
    if (!bias_rows_aligned(a)) {
      const int row_keys = bias_row_keys(a, t, folded, max_shared_bytes);
      if (row_keys < a.k_std.shape[2]) {
        return no(fmt::format("bias: rows do not start on 16-byte boundaries and seqlen_k={} is "
                              "longer than the {} keys the kernel's bias row holds",
                              a.k_std.shape[2], row_keys));
      }
    }
  }
  return folded ? gen::MmaKind::kTmaFolded : gen::MmaKind::kTma;
}

// Encoding the five to eight maps costs the driver about 5 us; a loop that calls forward() on the
// same tensors (inference, benchmarks) reuses them from a small per-thread cache instead.
attn::FwdTmaMaps encode_tma_maps(const ForwardArgs& a, const gen::TileConfig& tile) {
  struct Entry {
    MapKey key;
    attn::FwdTmaMaps maps;
    bool used = false;
  };
  thread_local Entry recent[4];
  thread_local int next_slot = 0;
  const MapKey key = key_of(a, tile);
  for (const Entry& e : recent) {
    if (e.used && std::memcmp(&e.key, &key, sizeof key) == 0) return e.maps;
  }
  Entry& e = recent[next_slot];
  next_slot = (next_slot + 1) % 4;
  e.maps = encode_all(a, tile);  // may throw: the slot then stays as it was
  e.key = key;
  e.used = true;
  return e.maps;
}

namespace {

attn::FwdTmaMaps encode_all(const ForwardArgs& a, const gen::TileConfig& tile) {
  const gen::AttentionSpec& s = a.spec;
  const bool folded = tile.mma == gen::MmaKind::kTmaFolded;
  const int swizzled_cols = attn::tma_swizzled_cols(s.d_std, s.r, folded);
  attn::FwdTmaMaps maps{};
  maps.q_std = encode_tma_map(s.dtype, swizzled_cols, a.q_std, 64, tile.block_m, "q_std");
  maps.k_std = encode_tma_map(s.dtype, swizzled_cols, a.k_std, 64, tile.block_n, "k_std");
  maps.v = encode_tma_map(s.dtype, s.head_dim, a.v, 64, tile.block_n, "v");
  if (!folded && s.r > 0) {
    maps.k_low = encode_tma_map(s.dtype, s.r, a.k_low, 8, tile.block_m, "k_low");
    maps.q_low = encode_tma_map(s.dtype, s.r, a.q_low, 8, tile.block_n, "q_low");
  }
  if (attn::tma_std_tail_groups(s.d_std, s.r, folded) > 0) {  // 8-column boxes of the std tail
    maps.q_std_tail = encode_tma_map(s.dtype, s.d_std, a.q_std, 8, tile.block_m, "q_std (tail)");
    maps.k_std_tail = encode_tma_map(s.dtype, s.d_std, a.k_std, 8, tile.block_n, "k_std (tail)");
  }
  // Unaligned bias rows have no map: tma_kind_for allowed them only where the bias row holds
  // every key, so no tile brings a bias box.
  if (s.bias == gen::BiasKind::kColumn && bias_rows_aligned(a)) {
    const long long extent = bias_extent(a);
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(extent), 1};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>((extent * 4 + 15) / 16 * 16)};
    const cuuint32_t box[2] = {static_cast<cuuint32_t>(tile.block_n), 1};
    const cuuint32_t element_strides[2] = {1, 1};
    RAJIT_CU_CHECK(rt::driver().cuTensorMapEncodeTiled(
                       reinterpret_cast<CUtensorMap*>(&maps.bias), CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                       2, const_cast<float*>(a.bias.ptr), dims, strides, box, element_strides,
                       CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                       CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                   "encoding the TMA map of the bias ({} elements)", extent);
  }
  return maps;
}

}  // namespace
}  // namespace rajit::tune::detail
