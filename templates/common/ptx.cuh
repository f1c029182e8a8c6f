/// Inline-PTX wrappers (mma.sync, ldmatrix, cp.async, conversions) so kernels need no toolkit header.
// NVRTC on the user's machine may have no include path at all; everything here is plain PTX over
// 32-bit registers. Requires sm_80 or newer (bf16 mma, cp.async).
#pragma once

namespace rajit::dev {

using u32 = unsigned int;
using u16 = unsigned short;

/// A compile-time bool as a value (std::bool_constant without <type_traits>): lets one generic
/// lambda be instantiated once per case, e.g. a loop body per source of the bias.
template <bool B>
struct BoolConstant {
  static constexpr bool value = B;
};

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

/// This thread's lane, read afresh: kernels at their register limit use it instead of holding a
/// lane value (or values derived from it) across a long loop.
__device__ __forceinline__ int lane_id() {
  int lane;
  asm volatile("mov.u32 %0, %%laneid;\n" : "=r"(lane));
  return lane;
}
/// blockIdx.x and threadIdx.x read afresh: volatile, so never merged with an earlier read. Values
/// derived from them are then recomputed where needed instead of being held in registers across
/// a loop that runs at the register limit.
__device__ __forceinline__ int block_x_again() {
  int x;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(x));
  return x;
}
__device__ __forceinline__ int thread_x_again() {
  int x;
  asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(x));
  return x;
}
/// The generic address of shared-window address `a` (the inverse of smem_addr).
__device__ __forceinline__ char* shared_to_generic(u32 a) {
  unsigned long long g;
  asm("cvta.shared.u64 %0, %1;" : "=l"(g) : "l"(static_cast<unsigned long long>(a)));
  return reinterpret_cast<char*>(g);
}
/// Two floats from shared memory at a 32-bit shared address (a generic pointer would hold two
/// registers). Volatile, so it stays below the barrier that publishes the data.
__device__ __forceinline__ void lds_f32x2(u32 a, float& x, float& y) {
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(x), "=f"(y) : "r"(a));
}

// ---- cp.async: global -> shared without registers; src_bytes < size zero-fills the rest -------
template <int kBytes>
__device__ __forceinline__ void cp_async(u32 dst, const void* src, bool valid) {
  const int src_bytes = valid ? kBytes : 0;
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src),
                 "n"(kBytes), "r"(src_bytes));
  }
}
/// A 16-byte cp.async issued only where `pred` holds, as a predicated instruction: no branch, so
/// a warp whose lanes disagree does not diverge around it.
__device__ __forceinline__ void cp_async16_if(bool pred, u32 dst, const void* src) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n@p cp.async.cg.shared.global [%1], [%2], 16;\n}\n" ::"r"(
          static_cast<int>(pred)),
      "r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// ---- ldmatrix: four 8x8 b16 matrices; thread t supplies the row address of matrix t / 8 -------
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// ---- element types: 16-bit storage, fp32 math ------------------------------------------------
struct Bf16 {
  static constexpr bool kIsBf16 = true;
  __device__ __forceinline__ static u32 pack(float lo, float hi) {
    u32 d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
  }
  __device__ __forceinline__ static float lo(u32 x) { return __uint_as_float(x << 16); }
  __device__ __forceinline__ static float hi(u32 x) { return __uint_as_float(x & 0xffff0000u); }
  // D += A * B, m16n8k16, fp32 accumulators.
  __device__ __forceinline__ static void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

struct Fp16 {
  static constexpr bool kIsBf16 = false;
  __device__ __forceinline__ static u32 pack(float lo, float hi) {
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
  }
  __device__ __forceinline__ static float lo(u32 x) {
    float f;
    asm("{ .reg .f16 l, h; mov.b32 {l, h}, %1; cvt.f32.f16 %0, l; }\n" : "=f"(f) : "r"(x));
    return f;
  }
  __device__ __forceinline__ static float hi(u32 x) {
    float f;
    asm("{ .reg .f16 l, h; mov.b32 {l, h}, %1; cvt.f32.f16 %0, h; }\n" : "=f"(f) : "r"(x));
    return f;
  }
  __device__ __forceinline__ static void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ float exp2_approx(float x) {  // ex2(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float log2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace rajit::dev
