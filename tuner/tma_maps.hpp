/// TMA for the forward: whether a call's tensors allow the TMA kernels, and their tensor maps.
#pragma once

#include <string>

#include "generator/spec.hpp"
#include "templates/attention/params.cuh"
#include "tuner/forward.hpp"

namespace rajit::tune::detail {

/// The TMA kind (gen::MmaKind::kTmaFolded or kTma) that a forward call can run with the shape of
/// `wgmma_tile`, or kWgmma with `why` set when it cannot: RAJIT_TMA=0, a pointer not 16-byte
/// aligned, a stride that is not a multiple of 16 bytes, bias rows that do not start on 16 bytes
/// (TMA boxes start on 16-byte boundaries) where seqlen_k is longer than the kernel's bias row
/// (limits.cuh: shorter rows are read by plain loads, never by boxes), or a TMA tile that does
/// not fit `max_shared_bytes`.
/// Folded when q_low lies right after k_std and k_low right after q_std, with equal strides (the
/// "folded" layout of ra-math.md), or when r == 0.
gen::MmaKind tma_kind_for(const ForwardArgs& a, const gen::TileConfig& wgmma_tile,
                          int max_shared_bytes, std::string* why = nullptr);

/// The building blocks, shared with the backward: a view TMA can read (16-byte aligned pointer,
/// strides multiples of 16 bytes), `low` stored right after `std_part` (folded rows), RAJIT_TMA=0,
/// and one 4-D map (columns, rows, heads, batches) of a 16-bit view with a box of `box_cols` x
/// `box_rows` (128-byte swizzle for 64-column boxes). Throws (encode): rt::DriverError.
bool tma_view_ok(const TensorView& t);
bool tma_folded(const TensorView& std_part, const TensorView& low, int d_std);
bool tma_disabled_by_env();
/// Every bias row starts on 16 bytes (pointer, batch and head strides): TMA boxes can read it.
bool bias_rows_aligned(const ForwardArgs& a);
/// Keys of the TMA kernel's bias row for this call with the shape of `tile` (limits.cuh: all of
/// seqlen_k in whole key tiles when they fit beside the tile, else the capacity); 0 without a bias.
int bias_row_keys(const ForwardArgs& a, const gen::TileConfig& tile, bool folded,
                  int max_shared_bytes);
attn::TmaMap encode_tma_map(gen::Dtype dtype, int cols, const TensorView& t,
                            int box_cols, int box_rows, const char* what);

/// The tensor maps of `tile` (a TMA kind from tma_kind_for) for this call: 4-D (columns, rows,
/// heads, batches) boxes of 64 swizzled columns or 8 plain ones, and the bias as 2-D
/// (elements, 1). Throws: rt::DriverError if the driver refuses an encoding.
attn::FwdTmaMaps encode_tma_maps(const ForwardArgs& a, const gen::TileConfig& tile);

}  // namespace rajit::tune::detail
