/// Timing of the forward kernel: CUDA events, warm-up, median of many runs, inputs rotated so the
/// working set is several times the L2 (S45); also the host dispatch microbenchmark.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/forward.hpp"
#include "tuner/heuristic.hpp"

namespace rajit::tune {

struct BenchOptions {
  int warmup = 10;
  int iters = 100;
  double l2_multiple = 4;  ///< rotate input sets until they cover this many times the L2
  /// Operand layout of the input sets: false = separate (B,H,T,width) tensors; true = folded
  /// rows (ra-math.md): Qf = [q_std | k_low] and Kf = [k_std | q_low], one (B,H,T,Ds+R) tensor
  /// each, which the TMA forward reads with one box per 64 columns.
  bool folded = false;
  /// true: per-head gates in [0.5, 1.5]; false: w_std, w_rec and w_disc null, ra-math's default
  /// (all ones), so the kernels skip the query tile's gate pass (bench_forward only).
  bool gates = true;
  /// Where kernels are timed in turn (time_forward_with_baseline): launches per kernel per turn,
  /// the first of each turn untimed. 1 (strict alternation, each launch timed right after the
  /// other kernel) is the default: longer turns let the d128 kernels' slow and fast modes fall
  /// on different kernels, while timing each kernel after itself moved the price by under 1%
  /// (perf-notes v8).
  int turn = 1;
};

struct BenchResult {
  gen::TileConfig tile;
  double median_ms = 0, min_ms = 0;
  double tflops = 0;  ///< FlashAttention convention, from the median
  int input_sets = 0;
};

/// Random input sets for one (spec, shape) on the current context's device: separate
/// (B,H,T,width) tensors (or folded rows, `folded`), gates and bias set, never zeros. Enough sets
/// are made that rotating through them touches `l2_multiple` times the L2, so timings never run
/// out of a warm cache.
/// Shared by `rajit bench` and the autotuner. Not thread-safe; move-only.
/// Throws (constructor): rt::DriverError (allocation), rt::NoDriverError.
class ForwardInputs {
 public:
  ForwardInputs(const gen::AttentionSpec& spec, const Shape& shape, double l2_multiple,
                int device_ordinal = 0, std::uint64_t seed = 12345, bool folded = false);
  ~ForwardInputs();
  ForwardInputs(ForwardInputs&&) noexcept;
  ForwardInputs& operator=(ForwardInputs&&) noexcept;

  int size() const noexcept;
  ForwardArgs& args(int set);
  /// Fills set `set`'s O with NaN bit patterns, so unwritten elements are detected.
  void poison_output(int set);
  /// O of set `set` as raw fp16/bf16 bits, (B,H,Tq,Dv) contiguous; synchronises the context.
  std::vector<std::uint16_t> output(int set) const;
  /// Set `set`'s arguments as the r = 0, no-bias attention of the same contraction width over
  /// the same buffers: the folded rows Qf and Kf read whole as Q and K, the same V, O and LSE,
  /// no gates. Needs folded rows or r = 0.
  /// Throws: std::logic_error for separate operand tensors with r > 0.
  ForwardArgs plain_baseline(int set) const;

 private:
  struct Set;
  std::vector<std::unique_ptr<Set>> sets_;
  bool folded_ = false;
};

/// The launch order of kernels timed in turn: `variants` kernels in turns of `turn` launches each
/// (kernel 0 `turn` times, kernel 1 `turn` times, ..., kernel 0, ...), over `sets` input sets.
/// Only a launch that follows a launch of the same kernel is timed (with one kernel, or turns of
/// one, every launch is), and there are enough turns for `timed_per_variant` timed launches of
/// each kernel. Launch k reads set k % cycle(): the set touched longest ago, as when one kernel
/// is timed alone; cycle() is the largest count up to `sets` over which every kernel still reads
/// every set (strict alternation over an even count would pair each kernel with half of them).
struct TurnSchedule {
  TurnSchedule(int variants, int turn, int sets, int timed_per_variant);
  std::size_t launches() const noexcept { return launches_; }
  std::size_t variant(std::size_t launch) const noexcept { return (launch / turn_) % variants_; }
  std::size_t set(std::size_t launch) const noexcept { return launch % cycle_; }
  bool timed(std::size_t launch) const noexcept { return turn_ == 1 || launch % turn_ != 0; }
  std::size_t cycle() const noexcept { return cycle_; }

 private:
  std::size_t variants_, turn_, cycle_, launches_;
};

/// Times forward() over `inputs` (rotating sets) with `tile` pinned, or the default choice.
/// Throws: what forward() throws, rt::DriverError (events).
BenchResult time_forward(ForwardInputs& inputs, std::optional<gen::TileConfig> tile,
                         const BenchOptions& options = {});

/// Times RA over `inputs` and its plain baseline (ForwardInputs::plain_baseline) on the same
/// buffers, launched in turns of options.turn launches each, so both run under the same clocks
/// and power state: the price of RA without the run-to-run swing of a kernel timed alone (about
/// 10% at (2,16,8192) head_dim 128, perf-notes v7f); with turns longer than one, only launches
/// that follow a launch of the same kernel are timed. `tile` is pinned for both, or the default
/// choice. Needs folded rows or r = 0.
/// Throws: what forward() throws, std::logic_error (separate operands).
std::pair<BenchResult, BenchResult> time_forward_with_baseline(
    ForwardInputs& inputs, std::optional<gen::TileConfig> tile, const BenchOptions& options = {});

/// Times forward() for (spec, shape) with the pinned tile or the heuristic one, on device 0.
/// Inputs are random (never zeros), separate (B,H,T,width) tensors, bias set, and gates set unless
/// `options.gates` is false.
/// Throws: what forward() throws.
BenchResult bench_forward(const gen::AttentionSpec&, const Shape&, std::optional<gen::TileConfig>,
                          const BenchOptions& = {});

/// The inputs bench_forward() times: random, in options.folded's layout, gates nulled when
/// options.gates is false (device 0). For callers that time several things on one allocation.
ForwardInputs bench_inputs(const gen::AttentionSpec&, const Shape&, const BenchOptions& = {});

struct BackwardBenchResult {
  double fwd_bwd_ms = 0;  ///< median of forward() + backward()
  double bwd_ms = 0;      ///< median of backward() alone
  double fwd_bwd_tflops = 0;  ///< FlashAttention convention: 3.5 x the forward's FLOPs
  std::vector<std::string> kernels;
  gen::TileConfig dkv_tile;
  int input_sets = 0;
};

/// Times forward() + backward() (and backward() alone) for (spec, shape) on device 0 with the
/// heuristic tiles, learnable gates and bias (every gradient requested), inputs rotated as in
/// bench_forward. Throws: what forward() and backward() throw.
BackwardBenchResult bench_backward(const gen::AttentionSpec&, const Shape&, bool deterministic,
                                   const BenchOptions& = {},
                                   std::optional<gen::TileConfig> dkv_tile = std::nullopt);

/// Median host time of one forward() call on a warm cache (enqueue only; tiny problem), in
/// microseconds. Throws: what forward() throws.
double bench_dispatch_us(int calls = 20000);

}  // namespace rajit::tune
