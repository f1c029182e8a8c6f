/// Shared-memory tile layouts and the cp.async copy loops every attention kernel uses to stage them.
// One copy of each loop (folded RA gather, plain rows, fp32 vectors, pad zeroing, gate scaling),
// written against a Tile that maps (row, col) to a byte offset, so the padded layout of the
// mma.sync kernels and the 128-byte-swizzled layout of the wgmma kernels share them.
#pragma once
#include "attention/params.cuh"
#include "common/ptx.cuh"

namespace rajit::attn {

/// Row-major (kRows, kCols) 16-bit tile in shared memory whose rows are padded by one 16-byte
/// chunk. For kCols a multiple of 16 the row stride is an odd number of 16-byte bank groups, so the
/// eight row addresses of an ldmatrix (and eight rows of cp.async writes) hit eight different
/// groups: no bank conflicts, and every address is a per-lane base plus a compile-time constant,
/// which an XOR swizzle would not give us for the odd widths RA uses (48, 96, ...).
template <int kRows, int kCols>
struct PaddedTile {
  static_assert(kCols % 16 == 0, "row stride must be an odd number of 16-byte groups");
  static constexpr int kStride = kCols + 8;  // elements
  static constexpr int kBytes = kRows * kStride * 2;
  static constexpr int kRowBytes = kStride * 2;  // row r + d starts d * kRowBytes after row r
  static constexpr int kRowPeriod = 1;
  __device__ __forceinline__ static constexpr int offset(int row, int col) {  // elements
    return row * kStride + col;
  }
  __device__ __forceinline__ static constexpr int byte_offset(int row, int col) {
    return 2 * offset(row, col);
  }
};

/// A (kRows, 64 * slices) 16-bit tile stored as 64-column slices of 128-byte rows with the
/// 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8)): the layout wgmma's
/// descriptors describe. col % 4 == 0 keeps 8-byte pieces whole.
template <int kRows>
struct Sw128Tile {
  static constexpr int kSliceBytes = kRows * 128;
  // The swizzle repeats every 8 rows: row r + d starts d * kRowBytes after row r when d % 8 == 0.
  static constexpr int kRowBytes = 128;
  static constexpr int kRowPeriod = 8;
  __device__ __forceinline__ static constexpr int byte_offset(int row, int col) {
    return (col / 64) * kSliceBytes + row * 128 + ((((col % 64) / 8) ^ (row % 8)) * 16) +
           (col % 8) * 2;
  }
};

/// Gathers rows [row0, row0 + kRows) of [a | b] (widths kDStd | kR) into a tile; rows past
/// `rows_valid` are zero-filled by cp.async so that masked rows never meet garbage.
template <class Tile, int kRows, int kDStd, int kR, int kCopyElems, int kThreads>
__device__ __forceinline__ void load_folded(char* dst, const Operand2d& a, index_t a_off,
                                            const Operand2d& b, index_t b_off, int row0,
                                            int rows_valid, int tid) {
  constexpr int kUnits = (kDStd + kR) / kCopyElems;
  const dev::u32 base = dev::smem_addr(dst);
  if constexpr (kThreads % kUnits == 0) {
    // Each thread copies one fixed column unit, so its source operand (a or b), column and row
    // stride are chosen once; the loop only advances the row. This keeps RA's two-source gather
    // as cheap as a plain one-source load.
    constexpr int kRowStep = kThreads / kUnits;
    const int col = (tid % kUnits) * kCopyElems;
    const bool from_a = col < kDStd;
    const Operand2d& op = from_a ? a : b;
    const char* src0 = static_cast<const char*>(op.ptr) +
                       2 * ((from_a ? a_off : b_off) + (from_a ? col : col - kDStd));
    const index_t stride_bytes = 2 * op.row_stride;
#pragma unroll
    for (int row = tid / kUnits; row < kRows; row += kRowStep) {
      const bool valid = row0 + row < rows_valid;
      const char* src = src0 + (valid ? row0 + row : 0) * stride_bytes;
      dev::cp_async<kCopyElems * 2>(base + Tile::byte_offset(row, col), src, valid);
    }
  } else {
    for (int idx = tid; idx < kRows * kUnits; idx += kThreads) {
      const int row = idx / kUnits;
      const int col = (idx % kUnits) * kCopyElems;
      const bool valid = row0 + row < rows_valid;
      const index_t grow = valid ? row0 + row : 0;
      const char* src =
          col < kDStd ? static_cast<const char*>(a.ptr) + 2 * (a_off + grow * a.row_stride + col)
                      : static_cast<const char*>(b.ptr) +
                            2 * (b_off + grow * b.row_stride + col - kDStd);
      dev::cp_async<kCopyElems * 2>(base + Tile::byte_offset(row, col), src, valid);
    }
  }
}

/// Rows [row0, row0 + kRows) of [a | b] (column widths kDStd | kR; kR may be 0 and b unused)
/// into a tile, for kernels that stream many such tiles. Each thread copies one fixed column unit
/// of fixed rows, so its source operand, column and row stride are chosen once per call; whole
/// tiles take a branch-free path, and only a tile that crosses `rows_valid` checks rows (and
/// zero-fills those past the end from row 0, which always exists). Nothing is kept between calls:
/// the kernels that use this run at their register limit, and recomputing these few integers
/// costs less than holding them.
template <class Tile, int kRows, int kDStd, int kR, int kCopyElems, int kThreads>
__device__ __forceinline__ void load_rows(dev::u32 tile, const Operand2d& a, index_t a_off,
                                          const Operand2d& b, index_t b_off, int row0,
                                          int rows_valid, int tid) {
  constexpr int kUnits = (kDStd + kR) / kCopyElems;
  if constexpr (kThreads % kUnits != 0) {
    // Odd unit counts (e.g. 36 columns in 4-element units) have no fixed unit per thread.
    load_folded<Tile, kRows, kDStd, kR, kCopyElems, kThreads>(
        dev::shared_to_generic(tile), a, a_off, b, b_off, row0, rows_valid, tid);
  } else {
    constexpr int kRowStep = kThreads / kUnits;
    constexpr int kCopies = (kRows + kRowStep - 1) / kRowStep;
    const int first_row = tid / kUnits;
    const int col = (tid % kUnits) * kCopyElems;
    const bool from_a = kR == 0 || col < kDStd;
    const Operand2d& op = from_a ? a : b;
    const index_t stride = 2 * op.row_stride;  // bytes
    const char* row_zero = static_cast<const char*>(op.ptr) +
                           2 * ((from_a ? a_off : b_off) + (from_a ? col : col - kDStd));
    const char* src = row_zero + (row0 + first_row) * stride;
    const dev::u32 first = tile + Tile::byte_offset(first_row, col);
    const bool full = row0 + kRows <= rows_valid;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int r = first_row + i * kRowStep;
      if (kRows % kRowStep != 0 && r >= kRows) break;
      // Rows kRowStep apart sit a fixed distance apart when the layout repeats every kRowStep
      // rows; otherwise the offset is recomputed.
      const dev::u32 d = kRowStep % Tile::kRowPeriod == 0
                             ? first + i * kRowStep * Tile::kRowBytes
                             : tile + Tile::byte_offset(r, col);
      const bool valid = full || row0 + r < rows_valid;
      dev::cp_async<kCopyElems * 2>(d, valid ? src + i * kRowStep * stride : row_zero, valid);
    }
  }
}

/// Rows [row0, row0 + kRows) of `b` (kR columns) into columns [kDStd, kDStd + kR) of a tile whose
/// other columns arrive otherwise (the TMA dK/dV kernel's separate k_low); rows past `rows_valid`
/// are zero-filled.
template <class Tile, int kRows, int kDStd, int kR, int kCopyElems, int kThreads>
__device__ __forceinline__ void load_low_columns(dev::u32 tile, const Operand2d& b, index_t b_off,
                                                 int row0, int rows_valid, int tid) {
  constexpr int kUnits = kR / kCopyElems;
  const char* base = static_cast<const char*>(b.ptr) + 2 * b_off;
  for (int idx = tid; idx < kRows * kUnits; idx += kThreads) {
    const int row = idx / kUnits;
    const int col = (idx % kUnits) * kCopyElems;
    const bool valid = row0 + row < rows_valid;
    const char* src = valid ? base + 2 * ((row0 + row) * b.row_stride + col) : base;
    dev::cp_async<kCopyElems * 2>(tile + Tile::byte_offset(row, kDStd + col), src, valid);
  }
}

/// Rows [row0, row0 + kRows) of a (rows, kCols) operand, 16-byte copies (kCols % 8 == 0).
template <class Tile, int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_plain(char* dst, const Operand2d& op, index_t off, int row0,
                                           int rows_valid, int tid) {
  constexpr int kUnits = kCols / 8;
  const dev::u32 base = dev::smem_addr(dst);
  for (int idx = tid; idx < kRows * kUnits; idx += kThreads) {
    const int row = idx / kUnits;
    const int col = (idx % kUnits) * 8;
    const bool valid = row0 + row < rows_valid;
    const index_t grow = valid ? row0 + row : 0;
    const char* src = static_cast<const char*>(op.ptr) + 2 * (off + grow * op.row_stride + col);
    dev::cp_async<16>(base + Tile::byte_offset(row, col), src, valid);
  }
}

/// Value t of kVectors fp32 vectors of kRows values each (vector t / kRows, row row0 + t % kRows)
/// to dst + 4 t; a row past `rows_valid` is zero-filled.
template <int kRows, int kVectors>
__device__ __forceinline__ void copy_float_value(dev::u32 dst, const float* const (&src)[kVectors],
                                                 int row0, int rows_valid, int t) {
  const int i = t % kRows;
  const bool valid = row0 + i < rows_valid;
  const float* vector = src[0];
#pragma unroll
  for (int v = 1; v < kVectors; ++v) vector = t >= v * kRows ? src[v] : vector;
  dev::cp_async<4>(dst + 4 * t, vector + (valid ? row0 + i : 0), valid);
}

/// kVectors fp32 vectors of kRows values, vector v = src[v][row0 + i], into shared memory one after
/// another by 4-byte cp.async (thread t copies value t, and t + kThreads, ... where there are more
/// values than threads), values past `rows_valid` zero-filled. Unlike load_floats_wide there is no
/// alignment test and no choice of path, and with kThreads == kVectors * kRows no branch at all.
/// That matters in the streaming loops: a branch just after a burst of cp.async stalls (long
/// scoreboard) until the burst has read its address registers, and the wide copy's path test was
/// such a branch (docs/perf-notes.md, "Backward v3c").
template <int kRows, int kVectors, int kThreads>
__device__ __forceinline__ void load_float_vectors(dev::u32 dst,
                                                   const float* const (&src)[kVectors], int row0,
                                                   int rows_valid, int tid) {
  constexpr int kValues = kVectors * kRows;
  if constexpr (kValues > kThreads) {
    for (int t = tid; t < kValues; t += kThreads) {
      copy_float_value<kRows, kVectors>(dst, src, row0, rows_valid, t);
    }
  } else if (kThreads == kValues || tid < kValues) {
    copy_float_value<kRows, kVectors>(dst, src, row0, rows_valid, tid);
  }
}

/// One fp32 vector src[row0 + i], i < kRows (load_float_vectors of one vector).
template <int kRows, int kThreads>
__device__ __forceinline__ void load_floats(dev::u32 dst, const float* src, int row0,
                                            int rows_valid, int tid) {
  const float* const vectors[1] = {src};
  load_float_vectors<kRows, 1, kThreads>(dst, vectors, row0, rows_valid, tid);
}

/// kRows fp32 values src[row0 + i] into shared memory; 16-byte copies when the source is 16-byte
/// aligned and the whole vector is in range, else 4-byte copies with past `rows_valid` zero-filled.
template <int kRows, int kThreads>
__device__ __forceinline__ void load_floats_wide(dev::u32 dst, const float* src, int row0,
                                                 int rows_valid, int tid) {
  static_assert(kRows % 4 == 0 && kRows / 4 <= kThreads, "one 16-byte copy per thread at most");
  // row0 is a multiple of kRows (a multiple of 4), so the source row's alignment decides.
  const bool aligned = (reinterpret_cast<unsigned long long>(src) & 15u) == 0 && row0 % 4 == 0;
  if (aligned && row0 + kRows <= rows_valid) {
    dev::cp_async16_if(tid < kRows / 4, dst + 16 * tid, src + row0 + 4 * tid);
  } else {
    load_floats<kRows, kThreads>(dst, src, row0, rows_valid, tid);
  }
}

/// Zeroes the pad columns [kDqk, kDqkPad) of a folded tile: the MMA reads them, cp.async never
/// writes them.
template <class Tile, int kRows, int kDqk, int kDqkPad, int kThreads>
__device__ __forceinline__ void zero_pad(char* dst, int tid) {
  constexpr int kPadUnits = (kDqkPad - kDqk) / 4;
  if constexpr (kPadUnits > 0) {
    for (int idx = tid; idx < kRows * kPadUnits; idx += kThreads) {
      const int row = idx / kPadUnits;
      const int col = kDqk + (idx % kPadUnits) * 4;
      *reinterpret_cast<uint2*>(dst + Tile::byte_offset(row, col)) = make_uint2(0u, 0u);
    }
  }
}

/// The two 16-bit elements packed in `x`, times `w`.
template <class E>
__device__ __forceinline__ dev::u32 scale_pair(dev::u32 x, float w) {
  return E::pack(E::lo(x) * w, E::hi(x) * w);
}
/// Where a unit of a scaling pass lies (bytes from the tile's base) and what it is multiplied by.
struct ScaledUnit {
  int offset;
  float w;
};
/// Multiplies kTotal units of kWords 32-bit words (two 16-bit elements each, shared memory) in
/// place, unit `idx` (unsigned, so that divisions by powers of two are shifts with no sign fix-up)
/// where `unit_at(idx)` says. These passes delay each CTA's first product, so a thread loads a
/// batch of up to kBatch units before it scales and stores any: one shared-memory round trip per
/// batch, where a loop of load-scale-store waited for each unit's load in turn (perf-notes v10).
template <class E, int kWords, int kTotal, int kThreads, class UnitAt>
__device__ __forceinline__ void scale_units(char* base, int tid, UnitAt&& unit_at) {
  static_assert(kWords == 2 || kWords == 4, "8- or 16-byte units");
  constexpr int kPerThread = (kTotal + kThreads - 1) / kThreads;
  constexpr int kBatch = 4;  // up to 16 words in flight per thread
  const auto in_tile = [](unsigned idx) {
    return kTotal % kThreads == 0 || idx < static_cast<unsigned>(kTotal);
  };
  const unsigned first = static_cast<unsigned>(tid);
#pragma unroll
  for (int i0 = 0; i0 < kPerThread; i0 += kBatch) {
    dev::u32 words[kBatch][kWords];
    ScaledUnit at[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch && i0 + u < kPerThread; ++u) {
      const unsigned idx = first + static_cast<unsigned>((i0 + u) * kThreads);
      if (in_tile(idx)) {
        at[u] = unit_at(idx);
        if constexpr (kWords == 4) {
          const uint4 v = *reinterpret_cast<const uint4*>(base + at[u].offset);
          words[u][0] = v.x, words[u][1] = v.y, words[u][2] = v.z, words[u][3] = v.w;
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(base + at[u].offset);
          words[u][0] = v.x, words[u][1] = v.y;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch && i0 + u < kPerThread; ++u) {
      if (in_tile(first + static_cast<unsigned>((i0 + u) * kThreads))) {
#pragma unroll
        for (int k = 0; k < kWords; ++k) words[u][k] = scale_pair<E>(words[u][k], at[u].w);
        if constexpr (kWords == 4) {
          *reinterpret_cast<uint4*>(base + at[u].offset) =
              make_uint4(words[u][0], words[u][1], words[u][2], words[u][3]);
        } else {
          *reinterpret_cast<uint2*>(base + at[u].offset) = make_uint2(words[u][0], words[u][1]);
        }
      }
    }
  }
}
/// The kChunks consecutive 16-byte chunks from `base` (shared memory) times `w`, in place.
template <class E, int kChunks, int kThreads>
__device__ __forceinline__ void scale_chunks(char* base, float w, int tid) {
  scale_units<E, 4, kChunks, kThreads>(
      base, tid, [&](unsigned idx) { return ScaledUnit{static_cast<int>(idx) * 16, w}; });
}

/// Multiplies a staged folded tile by its gates once (columns < kDStd by w_std, the rest by
/// w_rec), so the MMA sees the gated operand directly and no inner loop does gate work.
/// 16-byte units where both widths are multiples of 8 (half the loads, stores and index math of
/// 8-byte units), else 8-byte ones.
template <class E, class Tile, int kRows, int kDStd, int kR, int kThreads>
__device__ __forceinline__ void scale_by_gates(char* dst, float w_std, float w_rec, int tid) {
  if (w_std == 1.f && (kR == 0 || w_rec == 1.f)) return;  // uniform across the CTA
  constexpr int kUnitElems = kDStd % 8 == 0 && kR % 8 == 0 ? 8 : 4;
  constexpr int kUnits = (kDStd + kR) / kUnitElems;  // per row
  scale_units<E, kUnitElems / 2, kRows * kUnits, kThreads>(dst, tid, [&](unsigned idx) {
    const int col = static_cast<int>(idx % kUnits) * kUnitElems;
    return ScaledUnit{Tile::byte_offset(static_cast<int>(idx / kUnits), col),
                      col < kDStd ? w_std : w_rec};
  });
}

}  // namespace rajit::attn
