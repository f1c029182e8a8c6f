/// Which tile forward() runs: pinned (API, RAJIT_TILE), bundle route, tune cache, tune on a miss,
/// or the heuristic; the order is a pure function so it is tested without a GPU, and the
/// per-call lookup is one map probe on the hot path.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "generator/spec.hpp"
#include "tuner/heuristic.hpp"

namespace rajit::tune {

/// RAJIT_TUNE / ForwardArgs::tune.
enum class TunePolicy {
  kOff,     ///< the heuristic only (pins still apply)
  kCached,  ///< default: a bundle route or tune-cache entry if present, else the heuristic
  kOnMiss,  ///< as cached, but a bucket with no entry is tuned first (blocking; logged on stderr)
};
std::string_view to_string(TunePolicy);
/// "off" | "cached" | "on_miss". `what` names the setting in the error (e.g. "RAJIT_TUNE").
/// Throws: gen::SpecError naming `what` and the allowed values.
TunePolicy parse_tune_policy(std::string_view text, std::string_view what);

/// RAJIT_TUNE, read once per process (default cached). Throws: gen::SpecError naming RAJIT_TUNE.
TunePolicy env_tune_policy();
/// RAJIT_TILE (e.g. bm64.bn64.w4.s2), read once per process; nullopt when unset.
/// Throws: gen::SpecError naming RAJIT_TILE.
std::optional<gen::TileConfig> env_pinned_tile();

enum class TileSource { kPinned, kEnvPinned, kBundle, kTuned, kTunedNow, kHeuristic };
std::string_view to_string(TileSource);

struct TileDecision {
  gen::TileConfig tile;
  TileSource source = TileSource::kHeuristic;
};

/// Everything decide_tile() weighs; each lookup is given as a value (or a callback that runs only
/// when it is needed), so the order can be tested with fakes.
struct PolicyInputs {
  std::optional<gen::TileConfig> api_pin;       ///< ForwardArgs::tile
  std::optional<gen::TileConfig> env_pin;       ///< RAJIT_TILE
  TunePolicy policy = TunePolicy::kCached;
  std::optional<gen::TileConfig> bundle_route;  ///< the active bundle's route for this bucket
  std::optional<gen::TileConfig> tuned;         ///< the tune cache's entry for this bucket
  gen::TileConfig heuristic;
  /// Tunes now (on_miss only); nullopt if tuning produced nothing usable.
  std::function<std::optional<gen::TileConfig>()> tune_now;
};

/// API pin, then RAJIT_TILE; with policy off the heuristic; else the bundle route, then the tune
/// cache, then (on_miss) tune_now(), then the heuristic. Throws: what tune_now throws.
TileDecision decide_tile(const PolicyInputs& inputs);

/// The decision for one forward() call on device `ordinal` (whose primary or the caller's context
/// is current), consulting RAJIT_TILE, the active bundle, TuneStore::global() and, for on_miss,
/// tune_shape(). Cached per (device, spec, bucket, policy) until the tune store changes.
/// `api_pin` must already be validated. Thread-safe.
/// Throws: gen::SpecError (RAJIT_TILE/RAJIT_TUNE invalid, or a pinned tile that does not fit),
/// BundleError (RAJIT_BUNDLE unusable), what tune_shape() throws.
TileDecision choose_forward_tile(const gen::AttentionSpec& spec, const Shape& shape, int ordinal,
                                 int cc, int max_shared_bytes,
                                 const std::optional<gen::TileConfig>& api_pin,
                                 std::optional<TunePolicy> policy);

}  // namespace rajit::tune
