/// rajit::forward(): the runtime library call: validate, pick a tile, compile or hit the cache,
/// launch on the caller's stream.
#pragma once
#include <cuda.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/policy.hpp"

namespace rajit::tune {

/// A strided 4-D device tensor (batch, head, row, column); strides in elements. rajit requires
/// stride[3] == 1 and never copies: every layout of ra-math.md is a choice of pointer and strides.
struct TensorView {
  const void* ptr = nullptr;
  std::array<long long, 4> shape{};
  std::array<long long, 4> stride{};
};

/// The per-key bias beta[b?, h, j] (fp32, unit stride along j). batch_stride == 0 shares one
/// vector per head over the batch.
struct BiasView {
  const float* ptr = nullptr;
  long long batch_stride = 0;
  long long head_stride = 0;
};

/// Everything one forward call needs. q_std (B,H,Tq,Ds), k_low (B,H,Tq,R), k_std (B,H,Tk,Ds),
/// q_low (B,H,Tk,R), v (B,H,Tk,Dv), o (B,H,Tq,Dv, written); k_low/q_low are ignored when r == 0.
struct ForwardArgs {
  gen::AttentionSpec spec;
  TensorView q_std, k_low, k_std, q_low, v;
  TensorView o;
  float* lse = nullptr;  ///< optional (B,H,Tq) fp32 contiguous output
  BiasView bias;         ///< required iff spec.bias == column
  const float* w_std = nullptr;  ///< (H) fp32 gates on the device; null = all ones
  const float* w_rec = nullptr;
  const float* w_disc = nullptr;
  double scale = 0;  ///< 0 = 1 / sqrt(d_std + r); otherwise at least kMinScale
  CUstream stream = nullptr;
  std::optional<gen::TileConfig> tile;  ///< pin a tile; default: RAJIT_TILE, else the policy
  std::optional<TunePolicy> tune;       ///< default: RAJIT_TUNE, else cached (docs/tuning.md)
};

/// Raised before anything launches when the arguments do not describe a valid call; what()
/// lists every problem, one per line, each naming the field. A SpecError, so callers that catch
/// "bad input" catch both.
class ArgumentError : public gen::SpecError {
 public:
  using gen::SpecError::SpecError;
};

/// The smallest scale a forward call takes: scale * log2(e) stays a normal fp32 number.
inline constexpr double kMinScale = 1e-37;

/// Every problem with `args` that can be seen without touching the GPU (shapes, strides,
/// alignment, missing or unexpected pointers, grid limits); empty when none.
std::vector<std::string> check_forward_args(const ForwardArgs& args);

struct LaunchRecord {
  gen::TileConfig tile;
  std::string kernel;  ///< entry name
  TileSource source = TileSource::kHeuristic;  ///< why this tile
  bool from_bundle = false;                    ///< the cubin came from the active bundle
  int bias_row_keys = 0;  ///< keys whose scaled bias each CTA kept in shared memory (TMA)
};

/// Computes O (and LSE) for `args` on args.stream, on the device that owns args.q_std.ptr, in
/// that device's primary context. The tile is chosen by tuner/policy.hpp (pin, RAJIT_TILE, bundle
/// route, tune cache, on_miss tuning, heuristic). The first call for a (spec, tile, device) loads
/// the active bundle's cubin if it has one (verified by SHA-256), else compiles through NVRTC
/// (logged on stderr) or loads from the disk cache; later calls only launch.
/// Thread-safe. Asynchronous: returns once the kernel is enqueued.
/// Throws: gen::SpecError (bad spec or pinned tile), ArgumentError (bad tensors), rt::CompileError,
/// rt::DriverError, rt::NoDriverError, BundleError (RAJIT_BUNDLE unusable, cubin hash mismatch);
/// rt::Error when the kernel is not loaded yet and args.stream is capturing a CUDA graph (warm up
/// before capture: docs/reliability.md).
LaunchRecord forward(const ForwardArgs& args);

}  // namespace rajit::tune

namespace rajit {
using tune::forward;
using tune::ForwardArgs;
}  // namespace rajit
