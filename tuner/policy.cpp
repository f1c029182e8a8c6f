/// Tile policy: env parsing, the pure decision order, and the cached per-call decision.
#include "tuner/policy.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "tuner/autotune.hpp"
#include "tuner/bundle.hpp"
#include "tuner/tune_cache.hpp"

namespace rajit::tune {
namespace {

// A value read from the environment once: either the parsed value or the error to rethrow, so a
// bad setting fails every call the same way instead of only the first.
template <typename T>
struct EnvSetting {
  std::optional<T> value;
  std::optional<gen::SpecError> error;
  const std::optional<T>& get() const {
    if (error) throw *error;
    return value;
  }
};

struct DeviceIdentityCache {
  std::mutex mu;
  std::unordered_map<int, std::string> ids;
  std::string get(int ordinal) {
    std::lock_guard lock(mu);
    if (auto it = ids.find(ordinal); it != ids.end()) return it->second;
    std::string id = device_identity_of(ordinal);
    ids.emplace(ordinal, id);
    return id;
  }
};

}  // namespace

std::string_view to_string(TunePolicy p) {
  switch (p) {
    case TunePolicy::kOff: return "off";
    case TunePolicy::kCached: return "cached";
    case TunePolicy::kOnMiss: return "on_miss";
  }
  return "unknown";
}

TunePolicy parse_tune_policy(std::string_view text, std::string_view what) {
  if (text == "off") return TunePolicy::kOff;
  if (text == "cached") return TunePolicy::kCached;
  if (text == "on_miss") return TunePolicy::kOnMiss;
  throw gen::SpecError({fmt::format("{}={}: must be off, cached or on_miss", what, text)});
}

TunePolicy env_tune_policy() {
  static const EnvSetting<TunePolicy> setting = [] {
    EnvSetting<TunePolicy> s;
    const char* v = std::getenv("RAJIT_TUNE");
    if (v == nullptr || *v == '\0') {
      s.value = TunePolicy::kCached;
      return s;
    }
    try {
      s.value = parse_tune_policy(v, "RAJIT_TUNE");
    } catch (const gen::SpecError& e) {
      s.error = e;
    }
    return s;
  }();
  return *setting.get();
}

std::optional<gen::TileConfig> env_pinned_tile() {
  static const EnvSetting<gen::TileConfig> setting = [] {
    EnvSetting<gen::TileConfig> s;
    const char* v = std::getenv("RAJIT_TILE");
    if (v == nullptr || *v == '\0') return s;
    try {
      s.value = gen::parse_tile_key(v);
    } catch (const gen::SpecError& e) {
      std::vector<std::string> problems;
      for (const auto& p : e.problems()) problems.push_back(fmt::format("RAJIT_TILE={}: {}", v, p));
      s.error = gen::SpecError(std::move(problems));
    }
    return s;
  }();
  return setting.get();
}

std::string_view to_string(TileSource s) {
  switch (s) {
    case TileSource::kPinned: return "pinned";
    case TileSource::kEnvPinned: return "RAJIT_TILE";
    case TileSource::kBundle: return "bundle";
    case TileSource::kTuned: return "tuned";
    case TileSource::kTunedNow: return "tuned now";
    case TileSource::kHeuristic: return "heuristic";
  }
  return "unknown";
}

TileDecision decide_tile(const PolicyInputs& in) {
  if (in.api_pin) return {*in.api_pin, TileSource::kPinned};
  if (in.env_pin) return {*in.env_pin, TileSource::kEnvPinned};
  if (in.policy == TunePolicy::kOff) return {in.heuristic, TileSource::kHeuristic};
  if (in.bundle_route) return {*in.bundle_route, TileSource::kBundle};
  if (in.tuned) return {*in.tuned, TileSource::kTuned};
  if (in.policy == TunePolicy::kOnMiss && in.tune_now) {
    if (auto t = in.tune_now()) return {*t, TileSource::kTunedNow};
  }
  return {in.heuristic, TileSource::kHeuristic};
}

TileDecision choose_forward_tile(const gen::AttentionSpec& spec, const Shape& shape, int ordinal,
                                 int cc, int max_shared_bytes,
                                 const std::optional<gen::TileConfig>& api_pin,
                                 std::optional<TunePolicy> policy_arg) {
  if (api_pin) return {*api_pin, TileSource::kPinned};
  if (auto env = env_pinned_tile()) {
    gen::require_valid(spec, *env, max_shared_bytes);  // an error here names the tile's fields
    return {*env, TileSource::kEnvPinned};
  }
  const TunePolicy policy = policy_arg ? *policy_arg : env_tune_policy();
  const ShapeBucket bucket = bucket_of(shape);

  // Decisions are cached per (device, spec, bucket, policy) and dropped whenever the tune store
  // changes, so the steady state is a single probe of this map.
  static std::mutex mu;
  static std::unordered_map<std::string, TileDecision> decisions;
  static std::size_t generation = 0;
  // The common case: this thread asked the same question last time and nothing was recorded
  // since. Compared field by field, no formatting, no lock.
  TuneStore& store = TuneStore::global();
  struct LastDecision {
    bool valid = false;
    int ordinal = -1;
    gen::AttentionSpec spec;
    ShapeBucket bucket;
    TunePolicy policy = TunePolicy::kCached;
    std::size_t generation = 0;
    TileDecision decision;
  };
  thread_local LastDecision last;
  // Both counters only grow, so their sum changes whenever either does.
  const auto epoch = [&] { return store.generation() + bundle_generation(); };
  const std::size_t generation_now = epoch();
  if (last.valid && last.ordinal == ordinal && last.spec == spec && last.bucket == bucket &&
      last.policy == policy && last.generation == generation_now) {
    return last.decision;
  }
  const auto remember = [&](const TileDecision& d) {
    last = LastDecision{true, ordinal, spec, bucket, policy, generation_now, d};
    return d;
  };
  // Integers only: the spec and bucket keys are formatted on a miss, not on every call.
  const std::string key = fmt::format(
      "{}|{}|{}|{}|{:d}|{}|{}|{}|{}|{}|{}", ordinal, spec.d_std, spec.r, spec.head_dim, spec.causal,
      static_cast<int>(spec.bias), static_cast<int>(spec.dtype), bucket.seqlen_q, bucket.seqlen_k,
      bucket.batch_heads, static_cast<int>(policy));
  {
    std::lock_guard lock(mu);
    const std::size_t g = epoch();
    if (g != generation) {
      decisions.clear();
      generation = g;
    }
    if (auto it = decisions.find(key); it != decisions.end()) return remember(it->second);
  }

  const std::string spec_key = spec.key();
  const std::string bucket_key = bucket.key();
  static DeviceIdentityCache identities;
  PolicyInputs in;
  in.policy = policy;
  in.heuristic = heuristic_tile(spec, shape, cc, max_shared_bytes);
  const std::string arch = fmt::format("sm_{}", cc);
  if (policy != TunePolicy::kOff) {
    if (auto bundle = active_bundle()) {
      // On sm_90 a bundle's sm_90a routes (the wgmma kernels) come first, then its sm_90 ones.
      if (cc == 90) in.bundle_route = bundle->route(spec_key, bucket_key, "sm_90a");
      if (!in.bundle_route) in.bundle_route = bundle->route(spec_key, bucket_key, arch);
      if (!in.bundle_route) {
        rt::log_info("bundle {} has no route for {} {} on {}: using the tune cache or heuristic "
                     "and NVRTC",
                     bundle->dir().string(), spec_key, bucket_key, arch);
      }
    }
    const std::string device = identities.get(ordinal);
    if (auto e = store.lookup(device, spec_key, bucket_key)) {
      if (gen::validate(spec, e->tile, max_shared_bytes).empty()) in.tuned = e->tile;
    }
    if (policy == TunePolicy::kOnMiss) {
      in.tune_now = [&]() -> std::optional<gen::TileConfig> {
        static std::mutex tune_mu;  // one tune at a time per process; re-check after waiting
        std::lock_guard tl(tune_mu);
        if (auto e = store.lookup(device, spec_key, bucket_key)) return e->tile;
        rt::log_info("tuning {} for {} (shape {}x{}x{}x{}) on {}: this call blocks until done",
                     spec_key, bucket_key, shape.batch, shape.heads, shape.seqlen_q,
                     shape.seqlen_k, device);
        const rt::DriverApi& api = rt::driver();
        CUcontext caller = nullptr;
        (void)api.cuCtxGetCurrent(&caller);
        TuneResult r;
        try {
          r = tune_shape(spec, shape, ordinal);
        } catch (...) {
          if (caller != nullptr) (void)api.cuCtxSetCurrent(caller);
          throw;
        }
        if (caller != nullptr) (void)api.cuCtxSetCurrent(caller);
        if (r.choice.winner < 0) {
          rt::log_warn("tuning {} {} timed nothing ({}); using the heuristic", spec_key,
                       bucket_key, r.summary());
          return std::nullopt;
        }
        const TuneEntry entry = r.entry();
        rt::log_info("tuned {} {} in {:.1f} s: {} at {:.3f} ms (heuristic {} at {:.3f} ms); {}",
                     spec_key, bucket_key, r.seconds, entry.tile.key(), entry.ms,
                     entry.default_tile.key(), entry.default_ms, r.summary());
        store.record({entry}, current_meta());
        return entry.tile;
      };
    }
  }
  const TileDecision d = decide_tile(in);
  std::lock_guard lock(mu);
  if (epoch() != generation) {
    decisions.clear();
    generation = epoch();
  }
  decisions[key] = d;
  return remember(d);
}

}  // namespace rajit::tune
