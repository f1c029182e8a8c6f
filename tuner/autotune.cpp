/// search_space(), choose_winner(), compile_candidates() and tune_shape(): the autotuner proper.
#include "tuner/autotune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/log.hpp"
#include "templates/attention/limits.cuh"
#include "tuner/harness.hpp"
#include "tuner/host_numeric.hpp"

namespace rajit::tune {
namespace {

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

auto tile_order(const gen::TileConfig& t) {
  return std::make_tuple(t.block_m, t.block_n, t.warps, t.stages);
}

// ra-math.md's per-dtype bound on |O - O_ref|_F / |O_ref|_F; two tilings of the same math differ
// by accumulation order only, so they must agree within the same bound.
double output_tolerance(gen::Dtype dt) { return dt == gen::Dtype::kFp16 ? 2e-3 : 8e-3; }

}  // namespace

std::string_view to_string(CandidateStatus s) {
  switch (s) {
    case CandidateStatus::kPending: return "pending";
    case CandidateStatus::kTimed: return "timed";
    case CandidateStatus::kInvalid: return "invalid";
    case CandidateStatus::kCompileFailed: return "compile_failed";
    case CandidateStatus::kLaunchFailed: return "launch_failed";
    case CandidateStatus::kWrongOutput: return "wrong_output";
  }
  return "unknown";
}

std::vector<Candidate> search_space(const gen::AttentionSpec& spec, const Shape& shape, int cc,
                                    int max_shared_bytes) {
  gen::require_valid(spec);
  const gen::TileConfig def = heuristic_tile(spec, shape, cc, max_shared_bytes);
  std::vector<Candidate> out;
  for (const gen::TileConfig& t : gen::tile_grid(/*with_wgmma=*/cc == 90)) {
    Candidate c;
    c.tile = t;
    c.is_default = t == def;
    for (const auto& p : gen::validate(spec, t, max_shared_bytes)) {
      c.status = CandidateStatus::kInvalid;
      c.reason += (c.reason.empty() ? "" : "; ") + p;
    }
    out.push_back(std::move(c));
  }
  return out;
}

Choice choose_winner(const std::vector<Candidate>& cs, double tie_tolerance) noexcept {
  Choice ch;
  int fastest = -1;
  for (int i = 0; i < static_cast<int>(cs.size()); ++i) {
    if (cs[i].status != CandidateStatus::kTimed) continue;
    if (fastest < 0 || cs[i].median_ms < cs[fastest].median_ms) fastest = i;
  }
  if (fastest < 0) return ch;
  const double limit = cs[fastest].median_ms * (1.0 + tie_tolerance);
  int best = -1;
  for (int i = 0; i < static_cast<int>(cs.size()); ++i) {
    const Candidate& c = cs[i];
    if (c.status != CandidateStatus::kTimed || c.median_ms > limit) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const Candidate& b = cs[best];
    if (c.is_default != b.is_default) {
      if (c.is_default) best = i;
    } else if (tile_order(c.tile) < tile_order(b.tile)) {
      best = i;
    }
  }
  ch.winner = best;
  for (int i = 0; i < static_cast<int>(cs.size()); ++i) {
    if (i == best || cs[i].status != CandidateStatus::kTimed) continue;
    if (ch.runner_up < 0 || cs[i].median_ms < cs[ch.runner_up].median_ms) ch.runner_up = i;
  }
  if (ch.runner_up >= 0 && cs[best].median_ms > 0) {
    ch.runner_up_margin = (cs[ch.runner_up].median_ms - cs[best].median_ms) / cs[best].median_ms;
  }
  return ch;
}

Choice run_candidates(std::vector<Candidate>& cs, const MeasureFn& measure,
                      const TuneOptions& opt) {
  const int n = static_cast<int>(cs.size());
  std::vector<int> order;
  for (int i = 0; i < n; ++i)
    if (cs[i].is_default) order.push_back(i);
  for (int i = 0; i < n; ++i)
    if (!cs[i].is_default) order.push_back(i);
  for (int i : order) {
    if (cs[i].status == CandidateStatus::kPending) measure(cs[i]);
    if (opt.on_candidate) opt.on_candidate(cs[i], i, n);
  }
  return choose_winner(cs, opt.tie_tolerance);
}

void compile_candidates(const gen::AttentionSpec& spec, std::vector<Candidate>& cs, int cc,
                        int threads) {
  std::vector<Candidate*> work;
  for (auto& c : cs)
    if (c.status == CandidateStatus::kPending) work.push_back(&c);
  if (threads <= 0) {
    threads = static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  }
  threads = std::min<int>(threads, static_cast<int>(work.size()));
  std::atomic<std::size_t> next{0};
  const auto worker = [&] {
    for (;;) {
      const std::size_t i = next.fetch_add(1);
      if (i >= work.size()) return;
      Candidate& c = *work[i];
      try {
        const gen::GeneratedSource src = gen::generate_forward(spec, c.tile);
        const rt::KernelRequest req{src.readable_key, src.entry, src.text, src.options,
                                    arch_for(c.tile, cc), src.template_set_hash};
        (void)rt::KernelCache::global().get_cubin(req);
      } catch (const std::exception& e) {
        c.status = CandidateStatus::kCompileFailed;
        c.reason = first_line(e.what());
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

std::string TuneResult::summary() const {
  int timed = 0, invalid = 0, failed = 0, launch = 0, wrong = 0;
  for (const auto& c : candidates) {
    switch (c.status) {
      case CandidateStatus::kTimed: ++timed; break;
      case CandidateStatus::kInvalid: ++invalid; break;
      case CandidateStatus::kCompileFailed: ++failed; break;
      case CandidateStatus::kLaunchFailed: ++launch; break;
      case CandidateStatus::kWrongOutput: ++wrong; break;
      case CandidateStatus::kPending: break;
    }
  }
  return fmt::format("{} candidates: {} timed, {} invalid, {} failed to compile, {} failed to "
                     "launch, {} wrong output",
                     candidates.size(), timed, invalid, failed, launch, wrong);
}

TuneEntry TuneResult::entry() const {
  if (choice.winner < 0) throw std::logic_error("TuneResult::entry: no candidate was timed");
  TuneEntry e;
  e.device = device;
  e.spec = spec.key();
  e.bucket = bucket.key();
  e.template_set_hash = gen::template_set_hash();
  const Candidate& w = candidates[static_cast<std::size_t>(choice.winner)];
  e.tile = w.tile;
  e.ms = w.median_ms;
  for (const auto& c : candidates) {
    if (c.is_default) {
      e.default_tile = c.tile;
      e.default_ms = c.median_ms;
    }
  }
  e.runner_up_margin = choice.runner_up_margin;
  e.candidates = static_cast<int>(candidates.size());
  e.shape = fmt::format("{}x{}x{}x{}", shape.batch, shape.heads, shape.seqlen_q, shape.seqlen_k);
  return e;
}

std::string device_identity_of(int ordinal) {
  const rt::DeviceInfo d = rt::device_info(ordinal);
  return device_identity(d.name, d.cc_major * 10 + d.cc_minor, d.sm_count);
}

TuneResult tune_shape(const gen::AttentionSpec& spec, const Shape& shape, int ordinal,
                      const TuneOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  rt::make_primary_context_current(ordinal);
  const rt::DeviceInfo dev = rt::device_info(ordinal);
  const int cc = dev.cc_major * 10 + dev.cc_minor;
  const int max_shared = std::min(dev.max_smem_per_block_optin, attn::max_shared_bytes_for_cc(cc));
  TuneResult res;
  res.spec = spec;
  res.shape = shape;
  res.device = device_identity(dev.name, cc, dev.sm_count);
  res.bucket = bucket_of(shape);
  res.candidates = search_space(spec, shape, cc, max_shared);
  compile_candidates(spec, res.candidates, cc, opt.compile_threads);

  ForwardInputs inputs(spec, shape, opt.bench.l2_multiple, ordinal);
  std::vector<std::uint16_t> reference;  // the default's O on set 0
  double ref_norm = 0;
  const MeasureFn measure = [&](Candidate& c) {
    try {
      inputs.poison_output(0);
      ForwardArgs& a = inputs.args(0);
      a.tile = c.tile;
      forward(a);
      const std::vector<std::uint16_t> out = inputs.output(0);
      if (c.is_default) {
        reference = out;
        ref_norm = 0;
        for (auto v : reference) {
          const double x = from_storage(spec.dtype, v);
          ref_norm += x * x;
        }
        ref_norm = std::sqrt(ref_norm);
      }
      if (reference.size() != out.size()) {
        c.status = CandidateStatus::kWrongOutput;
        c.reason = "no reference output (the heuristic default did not run)";
        return;
      }
      double diff2 = 0, max_abs = 0;
      long long bad = 0;
      for (std::size_t i = 0; i < out.size(); ++i) {
        const double x = from_storage(spec.dtype, out[i]);
        const double r = from_storage(spec.dtype, reference[i]);
        if (!std::isfinite(x)) {
          ++bad;
          continue;
        }
        diff2 += (x - r) * (x - r);
        max_abs = std::max(max_abs, std::abs(x - r));
      }
      c.max_abs_err = max_abs;
      c.rel_err = ref_norm > 0 ? std::sqrt(diff2) / ref_norm : std::sqrt(diff2);
      if (bad > 0 || c.rel_err > output_tolerance(spec.dtype)) {
        c.status = CandidateStatus::kWrongOutput;
        c.reason = fmt::format("{} non-finite or unwritten outputs, rel err {:.2e} vs the default "
                               "(tolerance {:.0e})",
                               bad, c.rel_err, output_tolerance(spec.dtype));
        return;
      }
      const BenchResult b = time_forward(inputs, c.tile, opt.bench);
      c.median_ms = b.median_ms;
      c.min_ms = b.min_ms;
      c.tflops = b.tflops;
      c.status = CandidateStatus::kTimed;
    } catch (const rt::NoDriverError&) {
      throw;
    } catch (const std::exception& e) {
      c.status = CandidateStatus::kLaunchFailed;
      c.reason = first_line(e.what());
    }
  };
  res.choice = run_candidates(res.candidates, measure, opt);
  for (const auto& c : res.candidates) {
    if (c.is_default && c.status != CandidateStatus::kTimed) {
      throw std::runtime_error(fmt::format("tuning {} {}: the heuristic default {} did not run: {} ({})",
                                           spec.key(), res.bucket.key(), c.tile.key(),
                                           to_string(c.status), c.reason));
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace rajit::tune
