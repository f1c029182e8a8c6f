/// The autotuner: search space, parallel compilation, verified timing of every candidate and a
/// deterministic choice of winner (S45, S46). The choice logic is a pure function over
/// measurements, so it is tested with fake timings on machines without a GPU.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/bench.hpp"
#include "tuner/heuristic.hpp"
#include "tuner/tune_cache.hpp"

namespace rajit::tune {

/// S46: what happened to one candidate.
enum class CandidateStatus {
  kPending,        ///< valid, not measured yet (dry run)
  kTimed,          ///< compiled, output matched the default's, timed
  kInvalid,        ///< rejected by the shared validity rule or the device's limits
  kCompileFailed,  ///< NVRTC rejected it
  kLaunchFailed,   ///< the driver refused to load or launch it
  kWrongOutput,    ///< its output differs from the heuristic default's beyond the tolerance
};
std::string_view to_string(CandidateStatus);

struct Candidate {
  gen::TileConfig tile;
  bool is_default = false;  ///< the heuristic's choice (always a candidate)
  CandidateStatus status = CandidateStatus::kPending;
  std::string reason;       ///< why not timed (first line of the error or the validity rule)
  double median_ms = 0, min_ms = 0, tflops = 0;
  double max_abs_err = 0;   ///< largest |O - O_default| (bf16/fp16 values)
  double rel_err = 0;       ///< |O - O_default|_F / |O_default|_F
};

/// Every tile shape of the shared grid for `spec`: valid ones (kPending) and invalid ones
/// (kInvalid, with the rule's reasons) for a device with `max_shared_bytes` per block, in numeric
/// order; the heuristic choice for `shape` is marked is_default. Pure. Throws: gen::SpecError
/// (invalid spec).
std::vector<Candidate> search_space(const gen::AttentionSpec& spec, const Shape& shape, int cc,
                                    int max_shared_bytes);

struct Choice {
  int winner = -1;               ///< index into the candidates; -1 when nothing was timed
  int runner_up = -1;            ///< best other timed candidate; -1 when none
  double runner_up_margin = 0;   ///< (runner-up ms - winner ms) / winner ms; < 0 after a tie
};

/// The winner among kTimed candidates: the fastest median, except that anything within
/// `tie_tolerance` (relative) of the fastest ties, and ties go to the heuristic default, then to
/// the smallest (block_m, block_n, warps, stages). Hence never slower than the default when the
/// default was timed. Deterministic for equal inputs. Pure. Throws: nothing.
Choice choose_winner(const std::vector<Candidate>& candidates, double tie_tolerance = 0.01) noexcept;

struct TuneOptions {
  BenchOptions bench{5, 30, 4};  ///< warm-up, timed iterations, L2 multiple per candidate
  int compile_threads = 0;       ///< 0: min(hardware threads, 8)
  double tie_tolerance = 0.01;
  /// Called after each candidate is settled (progress); may be empty.
  std::function<void(const Candidate&, int index, int count)> on_candidate;
};

struct TuneResult {
  gen::AttentionSpec spec;
  Shape shape;
  std::string device;  ///< device_identity()
  ShapeBucket bucket;
  std::vector<Candidate> candidates;
  Choice choice;
  double seconds = 0;  ///< wall time of the whole tune, compiles included
  /// "24 candidates: 18 timed, 6 invalid, 0 failed to compile, 0 failed to launch, 0 wrong output"
  std::string summary() const;
  /// The entry to store; requires choice.winner >= 0. Throws: std::logic_error otherwise.
  TuneEntry entry() const;
};

/// The measurement of one candidate, supplied by the caller (the GPU or a fake): fills status,
/// timing and error fields. Must never throw for a candidate-specific failure.
using MeasureFn = std::function<void(Candidate&)>;

/// Runs the tuning protocol over `candidates` (from search_space): the default first (it is the
/// reference the others are checked against), then the rest; then chooses. Pure apart from
/// `measure`. Throws: whatever `measure` throws.
Choice run_candidates(std::vector<Candidate>& candidates, const MeasureFn& measure,
                      const TuneOptions& options);

/// Compiles every pending candidate's cubin for a device of compute capability `cc` (wgmma tiles
/// for sm_90a, the others for sm_<cc>: arch_for()) on a bounded pool of threads through
/// rt::KernelCache::global().get_cubin (thread-safe, fills the disk cache). Failures become
/// kCompileFailed results. Throws: nothing but std::bad_alloc.
void compile_candidates(const gen::AttentionSpec& spec, std::vector<Candidate>& candidates, int cc,
                        int threads);

/// Tunes (spec, shape) on device `ordinal`: search space, parallel compile, then for every
/// candidate: run on fresh random inputs, compare O with the default's O (relative Frobenius error
/// within the dtype's tolerance, no NaN, every element written), time with CUDA events (warm-up,
/// median, inputs rotated over several times the L2). Makes the device's primary context current.
/// Throws: rt::NoDriverError, rt::DriverError (outside a candidate, e.g. allocation),
/// gen::SpecError, std::runtime_error when the heuristic default itself cannot run.
TuneResult tune_shape(const gen::AttentionSpec& spec, const Shape& shape, int ordinal,
                      const TuneOptions& options = {});

/// device_identity() of device `ordinal`. Throws: rt::NoDriverError, rt::DriverError.
std::string device_identity_of(int ordinal);

}  // namespace rajit::tune
