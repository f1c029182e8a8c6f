/// The `rajit` command line: info, gen, run, bench, tune, cache. Thin wrappers over the library.
// Results go to stdout, logs to stderr. Exit codes: 0 ok, 1 failure, 2 usage, 77 no GPU.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "generator/spec.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/error.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/nvrtc.hpp"
#include "generator/backward_source.hpp"
#include "tuner/autotune.hpp"
#include "tuner/bench.hpp"
#include "tuner/bundle.hpp"
#include "tuner/forward.hpp"
#include "tuner/harness.hpp"
#include "tuner/heuristic.hpp"
#include "tuner/offline.hpp"
#include "tuner/tune_cache.hpp"

namespace {

using namespace rajit;

constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2, kExitNoGpu = 77;

// The spec and shape flags every subcommand shares.
struct SpecFlags {
  int d_std = 56, r = 8, head_dim = 64;
  bool causal = false;
  std::string bias = "none", dtype = "bf16";
  std::vector<std::string> spec_keys;  // alternative: --spec fwd.bf16.ds56.r8.d64.causal.colbias
  int batch = 4, heads = 16, seqlen = 4096, seqlen_k = 0;
  std::string tile;  // pin, e.g. bm128.bn64.w4.s2

  void add_to(CLI::App& app) {
    app.add_option("--d-std", d_std, "width of the standard query/key channels")->capture_default_str();
    app.add_option("--r", r, "width of the reciprocal channels (0 = plain attention)")->capture_default_str();
    app.add_option("--head-dim", head_dim, "width of V and O: 32, 64, 96, 128 or 256")->capture_default_str();
    app.add_flag("--causal", causal, "causal mask (bottom-right aligned when Tq != Tk)");
    app.add_option("--bias", bias, "none or column")->capture_default_str();
    app.add_option("--dtype", dtype, "bf16 or fp16")->capture_default_str();
    app.add_option("--spec", spec_keys, "spec key(s) instead of the flags above, comma-separated")
        ->delimiter(',');
    app.add_option("--batch", batch, "batch size B")->capture_default_str();
    app.add_option("--heads", heads, "heads H")->capture_default_str();
    app.add_option("--seqlen", seqlen, "query rows Tq (and Tk unless --seqlen-k)")->capture_default_str();
    app.add_option("--seqlen-k", seqlen_k, "key rows Tk (default: --seqlen)");
    app.add_option("--tile", tile, "pin a tile, e.g. bm128.bn64.w4.s2 (default: heuristic)");
  }
  std::vector<gen::AttentionSpec> specs() const {
    if (!spec_keys.empty()) {
      std::vector<gen::AttentionSpec> out;
      for (const auto& k : spec_keys) out.push_back(gen::parse_spec_key(k));
      for (const auto& s : out) gen::require_valid(s);
      return out;
    }
    gen::AttentionSpec s{d_std, r, head_dim, causal, gen::parse_bias(bias), gen::parse_dtype(dtype)};
    gen::require_valid(s);
    return {s};
  }
  tune::Shape shape() const {
    std::vector<std::string> bad;
    if (batch < 1) bad.push_back(fmt::format("batch={}: must be >= 1", batch));
    if (heads < 1) bad.push_back(fmt::format("heads={}: must be >= 1", heads));
    if (seqlen < 1) bad.push_back(fmt::format("seqlen={}: must be >= 1", seqlen));
    if (seqlen_k < 0) bad.push_back(fmt::format("seqlen-k={}: must be >= 1", seqlen_k));
    if (!bad.empty()) throw gen::SpecError(bad);
    return {batch, heads, seqlen, seqlen_k > 0 ? seqlen_k : seqlen};
  }
  std::optional<gen::TileConfig> pinned() const {
    if (tile.empty()) return std::nullopt;
    return gen::parse_tile_key(tile);
  }
};

int cmd_info() {
  fmt::print("rajit {}\n", RAJIT_VERSION);
  fmt::print("templates: {}\n", gen::template_set_hash());
  fmt::print("cache: {}\n", rt::DiskCache::default_root().string());
  const rt::NvrtcStatus nv = rt::probe_nvrtc();
  if (nv.ok) fmt::print("nvrtc: {}.{}\n", nv.major, nv.minor);
  else fmt::print("nvrtc: unavailable ({})\n", nv.reason);
  const rt::DriverStatus drv = rt::probe_driver();
  if (!drv.ok) {
    fmt::print("driver: unavailable ({})\n", drv.reason);
    fmt::print("gpus: none; rajit can generate and compile kernels here but cannot run them\n");
    return kExitOk;
  }
  fmt::print("driver: CUDA {}.{}\n", drv.version / 1000, (drv.version % 1000) / 10);
  const int n = rt::device_count();
  fmt::print("gpus: {}\n", n);
  for (int i = 0; i < n; ++i) {
    const rt::DeviceInfo d = rt::device_info(i);
    fmt::print("  [{}] {}  sm_{}{}  {} SMs  {:.1f} GiB  {} KiB smem/block  {} MiB L2\n", i, d.name,
               d.cc_major, d.cc_minor, d.sm_count, static_cast<double>(d.total_mem) / (1 << 30),
               d.max_smem_per_block_optin / 1024, d.l2_bytes >> 20);
  }
  return kExitOk;
}

struct GenFlags {
  std::vector<std::string> archs{"sm_80", "sm_90"};
  std::vector<std::string> emit{"cu", "cubin"};
  std::string out = "rajit-kernels";
  std::string bundle;                 // write a bundle (cubins + manifest with routes) here
  std::string tune_file;              // bundle the entries of this tune file
  std::vector<std::string> shapes;    // bundle these shapes with the heuristic tile
};

std::vector<tune::Shape> parse_shape_list(const std::vector<std::string>& texts);

int cmd_gen_bundle(const SpecFlags& sf, const GenFlags& gf) {
  std::vector<gen::Arch> archs;
  for (const auto& a : gf.archs) archs.push_back(gen::parse_arch(a));
  tune::BundlePlan plan;
  if (!gf.tune_file.empty()) {
    plan = tune::plan_bundle_from_tune_file(tune::read_tune_file(gf.tune_file), archs);
  } else {
    std::vector<tune::Shape> shapes = parse_shape_list(gf.shapes);
    if (shapes.empty()) shapes.push_back(sf.shape());
    plan = tune::plan_bundle_heuristic(sf.specs(), shapes, archs);
  }
  for (const auto& why : plan.skipped) std::fprintf(stderr, "rajit: skipped %s\n", why.c_str());
  if (plan.routes.empty()) {
    throw gen::SpecError({"bundle: nothing to bundle (no tune-file entry matches --arch)"});
  }
  tune::EmitOptions opt;
  opt.archs = archs;
  opt.cu = false;
  opt.cubin = true;
  opt.out_dir = gf.bundle;
  opt.routes = plan.routes;
  const auto kernels = tune::emit_kernels(plan.choices, opt);
  for (const auto& r : plan.routes) fmt::print("route {} {} {} -> {}\n", r.spec, r.bucket, r.arch, r.tile);
  fmt::print("bundle: {} kernels, {} routes, manifest {}\n", kernels.size(), plan.routes.size(),
             (opt.out_dir / "manifest.json").string());
  return kExitOk;
}

int cmd_gen(const SpecFlags& sf, const GenFlags& gf) {
  if (!gf.bundle.empty()) return cmd_gen_bundle(sf, gf);
  tune::EmitOptions opt;
  for (const auto& a : gf.archs) opt.archs.push_back(gen::parse_arch(a));
  opt.cu = opt.ptx = opt.cubin = false;
  for (const auto& e : gf.emit) {
    if (e == "cu") opt.cu = true;
    else if (e == "ptx") opt.ptx = true;
    else if (e == "cubin") opt.cubin = true;
    else throw gen::SpecError({fmt::format("emit={}: must be a list of cu, ptx, cubin", e)});
  }
  opt.out_dir = gf.out;
  std::vector<tune::KernelChoice> choices;
  const auto shape = sf.shape();
  for (const auto& s : sf.specs()) {
    if (auto t = sf.pinned()) {
      choices.push_back({s, *t, {}});
      continue;
    }
    for (const auto& a : opt.archs) {  // the heuristic may differ per arch
      const gen::TileConfig t =
          tune::heuristic_tile(s, shape, a.cc, a.max_shared_bytes(), a.arch_specific);
      bool seen = false;
      for (const auto& c : choices) seen = seen || (c.spec == s && c.tile == t);
      if (!seen) choices.push_back({s, t, {}});
    }
  }
  const auto kernels = tune::emit_kernels(choices, opt);
  fmt::print("{:<48} {:<18} {:<7} {:>5} {:>7} {:>6}  files\n", "spec", "tile", "arch", "regs",
             "smem", "spill");
  for (const auto& k : kernels) {
    std::string files;
    for (const auto& f : k.files) files += (files.empty() ? "" : " ") + f;
    const bool compiled = k.resources.registers >= 0;  // --emit cu alone compiles nothing
    const std::string regs = compiled ? std::to_string(k.resources.registers) : "-";
    const std::string spill =
        compiled ? std::to_string(std::max(0, k.resources.spill_store_bytes) +
                                  std::max(0, k.resources.spill_load_bytes))
                 : "-";
    fmt::print("{:<48} {:<18} {:<7} {:>5} {:>7} {:>6}  {}\n", k.spec_key, k.tile_key, k.arch, regs,
               k.shared_bytes, spill, files);
  }
  fmt::print("manifest: {}\n", (opt.out_dir / "manifest.json").string());
  return kExitOk;
}

int compile_only(const gen::AttentionSpec& s, const tune::Shape& shape,
                 std::optional<gen::TileConfig> pinned, const std::string& why) {
  const gen::Arch arch = gen::parse_arch("sm_90");
  const gen::TileConfig tile =
      pinned ? *pinned : tune::heuristic_tile(s, shape, arch.cc, arch.max_shared_bytes());
  const gen::GeneratedSource src = gen::generate_forward(s, tile);
  rt::KernelRequest req{src.readable_key, src.entry, src.text, src.options,
                        tune::arch_for(tile, arch.cc), src.template_set_hash};
  const auto cubin = rt::KernelCache::global().get_cubin(req);
  fmt::print("spec {} tile {}: generated {} bytes of CUDA, compiled a {}-byte cubin for {}\n",
             s.key(), tile.key(), src.text.size(), cubin.size(), req.arch);
  fmt::print("no GPU: cannot run the kernel here ({})\n", why);
  return kExitNoGpu;
}

struct RunFlags {
  std::string layout = "separate";
  std::uint64_t seed = 1;
  int iters = 20;
  bool per_batch_bias = false;
};

int cmd_run(const SpecFlags& sf, const RunFlags& rf) {
  const auto specs = sf.specs();
  const auto shape = sf.shape();
  const tune::Layout layout = tune::parse_layout(rf.layout);
  const rt::DriverStatus drv = rt::probe_driver();
  if (!drv.ok || rt::device_count() == 0) {
    int rc = kExitOk;
    for (const auto& s : specs) rc = compile_only(s, shape, sf.pinned(), drv.ok ? "no device" : drv.reason);
    return rc;
  }
  bool all_passed = true;
  fmt::print("device: {}\n", rt::device_info(0).name);
  for (const auto& s : specs) {
    tune::CheckOptions opt;
    opt.spec = s;
    opt.shape = shape;
    opt.layout = layout;
    opt.bias_per_batch = rf.per_batch_bias;
    opt.tile = sf.pinned();
    opt.seed = rf.seed;
    opt.timing_iters = rf.iters;
    const auto r = tune::run_forward_check(opt);
    fmt::print("{} B={} H={} Tq={} Tk={} tile {}: rel err {:.2e} (tol {:.0e}), LSE max err {:.1e}, "
               "unwritten {}, non-finite {} -> {}; {:.3f} ms, {:.1f} TFLOP/s\n",
               s.key(), shape.batch, shape.heads, shape.seqlen_q, shape.seqlen_k, r.tile.key(),
               r.rel_err_o, r.tolerance, r.max_abs_err_lse, r.unwritten, r.non_finite,
               r.passed ? "PASS" : "FAIL", r.median_ms, r.tflops);
    all_passed = all_passed && r.passed;
  }
  return all_passed ? kExitOk : kExitFailure;
}


struct BenchFlags {
  std::vector<std::string> shapes;  // "BxHxT" or "BxHxTqxTk"
  bool sweep = false, no_baseline = false, dispatch = false, backward = false, deterministic = false;
  std::string format = "table";
  std::string layout = "separate";
  std::string gates = "random";
  int iters = 100, warmup = 10, turn = 1;
};

tune::Shape parse_shape(const std::string& text) {
  std::vector<int> v;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t x = text.find('x', pos);
    const std::string part = text.substr(pos, x == std::string::npos ? std::string::npos : x - pos);
    try {
      std::size_t used = 0;
      v.push_back(std::stoi(part, &used));
      if (used != part.size() || v.back() < 1) throw std::invalid_argument(part);
    } catch (const std::exception&) {
      v.clear();
      break;
    }
    if (x == std::string::npos) break;
    pos = x + 1;
  }
  if (v.size() != 3 && v.size() != 4) {
    throw gen::SpecError({fmt::format("shapes={}: each shape must be BxHxT or BxHxTqxTk with "
                                      "positive integers, e.g. 4x16x4096", text)});
  }
  return {v[0], v[1], v[2], v.size() == 4 ? v[3] : v[2]};
}

// One dimension of a shape: "N", or a range "start:end[:step]" where step is "+k" / "k" (add)
// or "*k" (multiply; default *2), e.g. 1024:8192 = 1024, 2048, 4096, 8192 (S48).
std::vector<int> parse_dim(const std::string& text, const std::string& whole) {
  const auto bad = [&] {
    return gen::SpecError({fmt::format("shapes={}: each dimension must be N or start:end[:step] "
                                       "(step +k or *k) with positive integers, e.g. "
                                       "4x16x1024:8192:*2", whole)});
  };
  const auto num = [&](const std::string& t) {
    try {
      std::size_t used = 0;
      const int v = std::stoi(t, &used);
      if (used != t.size() || v < 1) throw bad();
      return v;
    } catch (const gen::SpecError&) {
      throw;
    } catch (const std::exception&) {
      throw bad();
    }
  };
  std::vector<std::string> parts;
  std::size_t pos = 0;
  for (;;) {
    const auto c = text.find(':', pos);
    parts.push_back(text.substr(pos, c == std::string::npos ? c : c - pos));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  if (parts.size() == 1) return {num(parts[0])};
  if (parts.size() > 3) throw bad();
  const int start = num(parts[0]), end = num(parts[1]);
  bool multiply = true;
  int step = 2;
  if (parts.size() == 3) {
    std::string st = parts[2];
    multiply = !st.empty() && st[0] == '*';
    if (!st.empty() && (st[0] == '*' || st[0] == '+')) st = st.substr(1);
    step = num(st);
    if (multiply && step < 2) throw bad();
  }
  if (end < start) throw bad();
  std::vector<int> out;
  for (long long v = start; v <= end && out.size() < 4096; v = multiply ? v * step : v + step) {
    out.push_back(static_cast<int>(v));
  }
  return out;
}

std::vector<tune::Shape> parse_shape_list(const std::vector<std::string>& texts) {
  std::vector<tune::Shape> out;
  for (const auto& text : texts) {
    std::vector<std::vector<int>> dims;
    std::size_t pos = 0;
    for (;;) {
      const auto x = text.find('x', pos);
      dims.push_back(parse_dim(text.substr(pos, x == std::string::npos ? x : x - pos), text));
      if (x == std::string::npos) break;
      pos = x + 1;
    }
    if (dims.size() != 3 && dims.size() != 4) {
      throw gen::SpecError({fmt::format("shapes={}: each shape must be BxHxT or BxHxTqxTk, e.g. "
                                        "4x16x4096 or 4x16x1024:8192", text)});
    }
    for (int b : dims[0])
      for (int h : dims[1])
        for (int tq : dims[2]) {
          if (dims.size() == 3) {
            out.push_back({b, h, tq, tq});
          } else {
            for (int tk : dims[3]) out.push_back({b, h, tq, tk});
          }
        }
  }
  return out;
}

struct TuneFlags {
  std::vector<std::string> shapes;
  std::string format = "table", output, export_to, arch;
  bool dry_run = false, force = false, no_save = false;
  int iters = 30, warmup = 5, threads = 0;
};

int cmd_tune(const SpecFlags& sf, const TuneFlags& tf) {
  if (tf.format != "table" && tf.format != "csv" && tf.format != "json") {
    throw gen::SpecError({fmt::format("format={}: must be table, csv or json", tf.format)});
  }
  if (!tf.export_to.empty()) {  // export only: every usable entry, for all ranks to load
    tune::TuneFile file;
    file.meta = tune::current_meta();
    file.entries = tune::TuneStore::global().entries();
    tune::write_file_atomic(tf.export_to, tune::serialize_tune_file(file));
    std::fprintf(stderr, "rajit: exported %zu entries from %s to %s\n", file.entries.size(),
                 tune::TuneStore::global().path().c_str(), tf.export_to.c_str());
    return kExitOk;
  }
  std::vector<tune::Shape> shapes = parse_shape_list(tf.shapes);
  if (shapes.empty()) shapes.push_back(sf.shape());
  const auto specs = sf.specs();
  nlohmann::json rows = nlohmann::json::array();
  const auto add_row = [&](const gen::AttentionSpec& s, const tune::Shape& sh,
                           const tune::Candidate& c, const std::string& status, bool winner) {
    rows.push_back({{"spec", s.key()},
                    {"shape", fmt::format("{}x{}x{}x{}", sh.batch, sh.heads, sh.seqlen_q, sh.seqlen_k)},
                    {"bucket", tune::bucket_of(sh).key()},
                    {"tile", c.tile.key()},
                    {"default", c.is_default},
                    {"winner", winner},
                    {"status", status},
                    {"ms", c.median_ms},
                    {"tflops", c.tflops},
                    {"max_err", c.max_abs_err},
                    {"reason", c.reason}});
  };
  std::string device = "dry-run";
  if (tf.dry_run) {
    int cc = 90, max_shared = gen::parse_arch("sm_90").max_shared_bytes();
    if (!tf.arch.empty()) {
      const gen::Arch a = gen::parse_arch(tf.arch);
      cc = a.cc;
      max_shared = a.max_shared_bytes();
    }
    for (const auto& s : specs)
      for (const auto& sh : shapes)
        for (const auto& c : tune::search_space(s, sh, cc, max_shared)) {
          add_row(s, sh, c, std::string(tune::to_string(c.status)), false);
        }
    device = fmt::format("dry-run sm_{}", cc);
  } else {
    const rt::DriverStatus drv = rt::probe_driver();
    if (!drv.ok || rt::device_count() == 0) {
      std::fprintf(stderr, "rajit: tune needs a GPU (use --dry-run to list candidates): %s\n",
                   drv.ok ? "no device" : drv.reason.c_str());
      return kExitNoGpu;
    }
    device = tune::device_identity_of(0);
    tune::TuneStore& store = tune::TuneStore::global();
    tune::TuneOptions opt;
    opt.bench.iters = tf.iters;
    opt.bench.warmup = tf.warmup;
    opt.compile_threads = tf.threads;
    int done = 0, cached = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& s : specs)
      for (const auto& sh : shapes) {
        const std::string bucket = tune::bucket_of(sh).key();
        if (!tf.force) {
          if (auto e = store.lookup(device, s.key(), bucket)) {
            std::fprintf(stderr, "rajit: %s %s: cached %s (%.3f ms, heuristic %s %.3f ms); "
                                 "nothing timed (--force re-tunes)\n",
                         s.key().c_str(), bucket.c_str(), e->tile.key().c_str(), e->ms,
                         e->default_tile.key().c_str(), e->default_ms);
            tune::Candidate c;
            c.tile = e->tile;
            c.is_default = e->tile == e->default_tile;
            c.median_ms = e->ms;
            add_row(s, sh, c, "cached", true);
            ++cached;
            continue;
          }
        }
        std::fprintf(stderr, "rajit: tuning %s %dx%dx%dx%d (%s)...\n", s.key().c_str(), sh.batch,
                     sh.heads, sh.seqlen_q, sh.seqlen_k, bucket.c_str());
        opt.on_candidate = [&](const tune::Candidate& c, int, int) {
          if (c.status == tune::CandidateStatus::kInvalid) return;
          std::fprintf(stderr, "  %-18s %-14s %9.4f ms %7.1f TFLOP/s  max err %.2e%s%s\n",
                       c.tile.key().c_str(), std::string(tune::to_string(c.status)).c_str(),
                       c.median_ms, c.tflops, c.max_abs_err, c.is_default ? "  (heuristic)" : "",
                       c.reason.empty() ? "" : ("  " + c.reason).c_str());
        };
        const tune::TuneResult r = tune::tune_shape(s, sh, 0, opt);
        for (int i = 0; i < static_cast<int>(r.candidates.size()); ++i) {
          add_row(s, sh, r.candidates[i], std::string(tune::to_string(r.candidates[i].status)),
                  i == r.choice.winner);
        }
        const tune::TuneEntry e = r.entry();
        std::fprintf(stderr, "rajit: %s %s: %s; winner %s %.4f ms, heuristic %s %.4f ms "
                             "(%.1f%% faster), runner-up margin %.1f%%, %.1f s\n",
                     s.key().c_str(), bucket.c_str(), r.summary().c_str(), e.tile.key().c_str(),
                     e.ms, e.default_tile.key().c_str(), e.default_ms,
                     100.0 * (e.default_ms - e.ms) / e.default_ms, 100.0 * e.runner_up_margin,
                     r.seconds);
        if (!tf.no_save) store.record({e}, tune::current_meta());
        ++done;
      }
    std::fprintf(stderr, "rajit: tuned %d buckets, %d from the cache, in %.1f s; tune file %s\n",
                 done, cached,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 store.path().c_str());
  }
  std::string text;
  if (tf.format == "json") {
    text = nlohmann::json{{"device", device}, {"rows", rows}}.dump(2) + "\n";
  } else if (tf.format == "csv") {
    text = "device,spec,shape,bucket,tile,default,winner,status,ms,tflops,max_err,reason\n";
    for (const auto& r : rows) {
      std::string reason = r["reason"].get<std::string>();
      for (auto& ch : reason) if (ch == ',' || ch == '"' || ch == '\n') ch = ';';
      text += fmt::format("{},{},{},{},{},{},{},{},{:.4f},{:.1f},{:.3e},{}\n", device,
                          r["spec"].get<std::string>(), r["shape"].get<std::string>(),
                          r["bucket"].get<std::string>(), r["tile"].get<std::string>(),
                          r["default"].get<bool>() ? 1 : 0, r["winner"].get<bool>() ? 1 : 0,
                          r["status"].get<std::string>(), r["ms"].get<double>(),
                          r["tflops"].get<double>(), r["max_err"].get<double>(), reason);
    }
  } else {
    text = fmt::format("device: {}\n{:<40} {:<18} {:<18} {:<15} {:>9} {:>8} {:>9}  {}\n", device,
                       "spec", "shape", "tile", "status", "ms", "TFLOP/s", "max err", "note");
    for (const auto& r : rows) {
      std::string note = r["winner"].get<bool>() ? "winner" : "";
      if (r["default"].get<bool>()) note += note.empty() ? "heuristic" : ", heuristic";
      if (!r["reason"].get<std::string>().empty()) note += (note.empty() ? "" : "; ") + r["reason"].get<std::string>();
      text += fmt::format("{:<40} {:<18} {:<18} {:<15} {:>9.4f} {:>8.1f} {:>9.2e}  {}\n",
                          r["spec"].get<std::string>(), r["shape"].get<std::string>(),
                          r["tile"].get<std::string>(), r["status"].get<std::string>(),
                          r["ms"].get<double>(), r["tflops"].get<double>(),
                          r["max_err"].get<double>(), note);
    }
  }
  if (tf.output.empty()) {
    fmt::print("{}", text);
  } else {
    tune::write_file_atomic(tf.output, text);
  }
  return kExitOk;
}

int cmd_bench(const SpecFlags& sf, const BenchFlags& bf) {
  if (bf.format != "table" && bf.format != "csv" && bf.format != "json") {
    throw gen::SpecError({fmt::format("format={}: must be table, csv or json", bf.format)});
  }
  if (bf.layout != "separate" && bf.layout != "folded") {  // checked before looking for a GPU
    throw gen::SpecError({fmt::format("layout={}: must be separate or folded", bf.layout)});
  }
  if (bf.gates != "random" && bf.gates != "none") {
    throw gen::SpecError({fmt::format("gates={}: must be random or none", bf.gates)});
  }
  if (bf.gates == "none" && bf.backward) {
    throw gen::SpecError({"gates=none: forward timing only (--backward learns the gates)"});
  }
  if (bf.turn != 1 && (bf.layout != "folded" || bf.no_baseline || bf.backward || bf.sweep)) {
    throw gen::SpecError({fmt::format(
        "turn={}: only where RA and its baseline are timed in turn (--layout folded, without "
        "--no-baseline, --backward or --sweep)", bf.turn)});
  }
  std::vector<tune::Shape> shapes;
  for (const auto& t : bf.shapes) shapes.push_back(parse_shape(t));
  if (shapes.empty()) shapes.push_back(sf.shape());
  const auto specs = sf.specs();
  const rt::DriverStatus drv = rt::probe_driver();
  if (!drv.ok || rt::device_count() == 0) {
    std::fprintf(stderr, "rajit: bench needs a GPU: %s\n", drv.ok ? "no device" : drv.reason.c_str());
    return kExitNoGpu;
  }
  const rt::DeviceInfo dev = rt::device_info(0);
  const std::string device = dev.name;
  const bool sm90 = dev.cc_major == 9 && dev.cc_minor == 0;  // --sweep lists wgmma tiles there
  if (bf.dispatch) {
    const double us = tune::bench_dispatch_us();
    std::fprintf(stderr, "host dispatch (cache hit to launch), median: %.2f us\n", us);
    if (bf.format == "json") fmt::print("{}\n", nlohmann::json{{"device", device}, {"dispatch_us", us}}.dump());
    else fmt::print("dispatch_us,{:.3f}\n", us);
  }
  struct Row {
    std::string spec, tile, shape, role;
    double ms, tflops;
  };
  std::vector<Row> rows;
  tune::BenchOptions opt;
  opt.iters = bf.iters;
  opt.warmup = bf.warmup;
  opt.folded = bf.layout == "folded";
  opt.gates = bf.gates == "random";
  opt.turn = bf.turn;
  for (const auto& shape : shapes) {
    const std::string shape_text =
        fmt::format("{}x{}x{}x{}", shape.batch, shape.heads, shape.seqlen_q, shape.seqlen_k);
    for (const auto& s : specs) {
      const auto add_forward_row = [&](const gen::AttentionSpec& spec, const std::string& role,
                                       const tune::BenchResult& r) {
        rows.push_back({spec.key(), r.tile.key(), shape_text, role, r.median_ms, r.tflops});
        std::fprintf(stderr, "%s %s %s: %.3f ms %.1f TFLOP/s\n", spec.key().c_str(),
                     r.tile.key().c_str(), shape_text.c_str(), r.median_ms, r.tflops);
      };
      std::vector<std::pair<gen::AttentionSpec, std::string>> variants = {{s, "ra"}};
      if (!bf.no_baseline && (s.r > 0 || s.bias != gen::BiasKind::kNone)) {
        gen::AttentionSpec base = s;  // same contraction width and FLOPs, plain attention
        base.d_std = s.d_std + s.r;
        base.r = 0;
        base.bias = gen::BiasKind::kNone;
        variants.push_back({base, "baseline"});
      }
      // Folded rows: the baseline reads Qf and Kf whole as Q and K, and the two are launched in
      // turn on the same buffers (tune::time_forward_with_baseline says why).
      if (opt.folded && variants.size() == 2 && !bf.backward && !bf.sweep) {
        auto inputs = tune::bench_inputs(s, shape, opt);
        const auto [ra, base] = tune::time_forward_with_baseline(inputs, sf.pinned(), opt);
        add_forward_row(variants[0].first, "ra", ra);
        add_forward_row(variants[1].first, "baseline", base);
        continue;
      }
      for (const auto& [spec, role] : variants) {
        std::vector<std::optional<gen::TileConfig>> tiles;
        if (bf.sweep) {
          for (const auto& t : gen::valid_tiles(spec, dev.max_smem_per_block_optin, sm90)) {
            tiles.push_back(t);
          }
        } else {
          tiles.push_back(sf.pinned());
        }
        if (bf.backward) {  // forward + backward rows (FLOPs: 3.5 x forward)
          std::vector<std::optional<gen::TileConfig>> bwd_tiles = {std::nullopt};
          if (bf.sweep) {  // every valid dK/dV tile (atomic dQ); the dQ kernel keeps its default
            bwd_tiles.clear();
            for (const auto& t : gen::valid_backward_tiles(spec, gen::BackwardKernel::kDkvAtomicDq,
                                                           dev.max_smem_per_block_optin, sm90)) {
              bwd_tiles.push_back(t);
            }
          }
          for (const auto& bt : bwd_tiles)
            for (bool det : bf.deterministic ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
              const auto r = tune::bench_backward(spec, shape, det, opt, bt);
              const std::string what = fmt::format("fwd+bwd{} {}", det ? " det" : "", r.dkv_tile.key());
              rows.push_back({spec.key(), what, shape_text, role, r.fwd_bwd_ms, r.fwd_bwd_tflops});
              std::fprintf(stderr, "%s %s %s: %.3f ms (backward alone %.3f ms) %.1f TFLOP/s\n",
                           spec.key().c_str(), what.c_str(), shape_text.c_str(), r.fwd_bwd_ms,
                           r.bwd_ms, r.fwd_bwd_tflops);
            }
          continue;
        }
        for (const auto& t : tiles) add_forward_row(spec, role, tune::bench_forward(spec, shape, t, opt));
      }
    }
  }
  if (bf.format == "json") {
    nlohmann::json j = {{"device", device}, {"rows", nlohmann::json::array()}};
    for (const auto& r : rows) {
      j["rows"].push_back({{"spec", r.spec}, {"tile", r.tile}, {"shape", r.shape}, {"role", r.role},
                           {"ms", r.ms}, {"tflops", r.tflops}});
    }
    fmt::print("{}\n", j.dump(2));
  } else if (bf.format == "csv") {
    fmt::print("device,spec,role,shape,tile,ms,tflops\n");
    for (const auto& r : rows) {
      fmt::print("{},{},{},{},{},{:.4f},{:.1f}\n", device, r.spec, r.role, r.shape, r.tile, r.ms, r.tflops);
    }
  } else {
    fmt::print("device: {}\n{:<42} {:<9} {:<18} {:<18} {:>9} {:>8}\n", device, "spec", "role",
               "shape", "tile", "ms", "TFLOP/s");
    for (const auto& r : rows) {
      fmt::print("{:<42} {:<9} {:<18} {:<18} {:>9.3f} {:>8.1f}\n", r.spec, r.role, r.shape, r.tile,
                 r.ms, r.tflops);
    }
  }
  return kExitOk;
}

int cmd_cache(bool list, const std::vector<std::string>& names, bool all) {
  rt::DiskCache cache(rt::DiskCache::default_root());
  if (list) {
    const auto entries = cache.list();
    for (const auto& e : entries) fmt::print("{:>10}  {}\n", e.size, e.name);
    fmt::print("{} entries in {}\n", entries.size(), rt::DiskCache::default_root().string());
    return kExitOk;
  }
  if (all) {
    fmt::print("removed {} entries\n", cache.remove_all());
    return kExitOk;
  }
  int rc = kExitOk;
  for (const auto& n : names) {
    if (cache.remove(n)) {
      fmt::print("removed {}\n", n);
    } else {
      std::fprintf(stderr, "rajit: no cache entry named %s\n", n.c_str());
      rc = kExitFailure;
    }
  }
  return rc;
}

// The command line's grammar, separate from main() so the fuzz target (tests/fuzz) can parse argv
// without running anything.
struct Cli {
  CLI::App app{"rajit: JIT kernels for Reciprocal Attention (RA)"};
  SpecFlags sf;
  GenFlags gf;
  RunFlags rf;
  BenchFlags bf;
  TuneFlags tf;
  std::vector<std::string> rm_names;
  bool rm_all = false;
  CLI::App *info, *genc, *run, *bench, *tunec, *cache, *ls, *rm;

  Cli() {
    app.require_subcommand(1);
    info = app.add_subcommand("info", "driver, NVRTC, GPUs and the cache directory");
    genc = app.add_subcommand("gen", "generate .cu/.ptx/.cubin files and a manifest offline");
    sf.add_to(*genc);
    genc->add_option("--arch", gf.archs, "target archs: sm_80, sm_86, sm_89, sm_90, sm_90a")
        ->delimiter(',')->capture_default_str();
    genc->add_option("--emit", gf.emit, "what to write: cu, ptx, cubin")->delimiter(',')->capture_default_str();
    genc->add_option("--out", gf.out, "output folder")->capture_default_str();
    genc->add_option("--bundle", gf.bundle, "write a deployable bundle (cubins + manifest.json with "
                                            "routes; load it with RAJIT_BUNDLE=DIR) into this folder");
    genc->add_option("--tune-file", gf.tune_file, "with --bundle: bundle every entry of this tune "
                                                  "file (e.g. $RAJIT_CACHE_DIR/tune.json)");
    genc->add_option("--shapes", gf.shapes, "with --bundle: BxHxT[xTk] shapes (ranges start:end[:*k]) "
                                            "routed to the heuristic tile")->delimiter(',');
    run = app.add_subcommand("run", "run one spec and shape on the GPU and check it against the "
                                          "float64 reference (compile only without a GPU)");
    sf.add_to(*run);
    run->add_option("--layout", rf.layout, "separate, strided, paired or folded")->capture_default_str();
    run->add_option("--seed", rf.seed, "random seed of the inputs")->capture_default_str();
    run->add_option("--iters", rf.iters, "timed launches (median reported)")->capture_default_str();
    run->add_flag("--per-batch-bias", rf.per_batch_bias, "one bias vector per batch entry");
    bench = app.add_subcommand("bench", "time specs over shapes (CUDA events, median; FlashAttention "
                                              "TFLOP/s) beside the r = 0, no-bias baseline");
    sf.add_to(*bench);
    bench->add_option("--shapes", bf.shapes, "BxHxT[xTk] list, e.g. 4x16x4096,2x16x8192")->delimiter(',');
    bench->add_flag("--sweep", bf.sweep, "time every valid tile shape");
    bench->add_flag("--no-baseline", bf.no_baseline, "skip the r = 0, no-bias rows");
    bench->add_flag("--dispatch", bf.dispatch, "also measure host dispatch time per call");
    bench->add_flag("--backward", bf.backward,
                    "time forward + backward (all gradients; TFLOP/s from 3.5 x forward FLOPs)");
    bench->add_flag("--deterministic", bf.deterministic,
                    "with --backward: also time the deterministic backward");
    bench->add_option("--format", bf.format, "table, csv or json")->capture_default_str();
    bench->add_option("--layout", bf.layout,
                      "operand layout of the inputs: separate tensors, or folded rows "
                      "Qf=[q_std|k_low], Kf=[k_std|q_low] (ra-math.md; the forward baseline "
                      "then reads Qf and Kf as Q and K, launched in turns with RA on the same "
                      "buffers, --turn)")
        ->capture_default_str();
    bench->add_option("--gates", bf.gates,
                      "random: per-head w_std, w_rec, w_disc in [0.5, 1.5]; none: null gates "
                      "(ra-math's default, all ones); forward timing only")
        ->capture_default_str();
    bench->add_option("--iters", bf.iters, "timed launches per row")->capture_default_str();
    bench->add_option("--warmup", bf.warmup, "untimed launches first")->capture_default_str();
    bench->add_option("--turn", bf.turn,
                      "with --layout folded: launches of RA, then of the baseline, per turn; the "
                      "first of each turn is not timed (1 = strict alternation)")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    tunec = app.add_subcommand("tune", "time every valid tile shape per spec and shape, verify "
                                             "each against the heuristic default, keep the fastest in "
                                             "the tune cache ($RAJIT_TUNE_FILE or <cache>/tune.json)");
    sf.add_to(*tunec);
    tunec->add_option("--shapes", tf.shapes, "BxHxT[xTk] list; any dimension may be a range "
                                             "start:end[:step] (step +k or *k, default *2)")->delimiter(',');
    tunec->add_option("--format", tf.format, "table, csv or json")->capture_default_str();
    tunec->add_option("-o,--output", tf.output, "write the results here instead of stdout");
    tunec->add_flag("--dry-run", tf.dry_run, "list the candidates (valid and invalid) without a GPU");
    tunec->add_option("--arch", tf.arch, "with --dry-run: the arch whose limits apply (default sm_90)");
    tunec->add_flag("--force", tf.force, "re-tune buckets already in the tune cache");
    tunec->add_flag("--no-save", tf.no_save, "do not write the tune cache");
    tunec->add_option("--export", tf.export_to, "write every usable tune-cache entry to this file "
                                                "(load it on every rank with RAJIT_TUNE_FILE) and exit");
    tunec->add_option("--iters", tf.iters, "timed launches per candidate")->capture_default_str();
    tunec->add_option("--warmup", tf.warmup, "untimed launches per candidate")->capture_default_str();
    tunec->add_option("--threads", tf.threads, "compile threads (0 = min(cores, 8))")->capture_default_str();
    cache = app.add_subcommand("cache", "the on-disk kernel cache ($RAJIT_CACHE_DIR)");
    cache->require_subcommand(1);
    ls = cache->add_subcommand("ls", "list cached kernels");
    rm = cache->add_subcommand("rm", "remove cached kernels");
    rm->add_option("names", rm_names, "entry names (see `rajit cache ls`)");
    rm->add_flag("--all", rm_all, "remove every entry");
  }
};

}  // namespace

#ifdef RAJIT_CLI_FUZZING
/// Parses argv as main() does and validates the spec, shape and tile flags, running nothing.
/// Returns 0 (valid), 2 (usage error). Anything else escaping is a bug the fuzzer reports.
int rajit_cli_parse_only(int argc, char** argv) {
  Cli cli;
  try {
    cli.app.parse(argc, argv);
  } catch (const CLI::ParseError&) {
    return kExitUsage;
  }
  try {
    if (*cli.genc || *cli.run || *cli.bench || *cli.tunec) {
      (void)cli.sf.specs();
      (void)cli.sf.shape();
      (void)cli.sf.pinned();
    }
    if (*cli.bench) {
      for (const auto& t : cli.bf.shapes) (void)parse_shape(t);
    }
    if (*cli.genc) {
      for (const auto& a : cli.gf.archs) (void)gen::parse_arch(a);
    }
  } catch (const gen::SpecError&) {
    return kExitUsage;
  }
  return kExitOk;
}
#else
int main(int argc, char** argv) {
  Cli cli;
  CLI::App& app = cli.app;
  const SpecFlags& sf = cli.sf;
  const GenFlags& gf = cli.gf;
  const RunFlags& rf = cli.rf;
  const BenchFlags& bf = cli.bf;
  const TuneFlags& tf = cli.tf;
  const auto& rm_names = cli.rm_names;
  const bool& rm_all = cli.rm_all;
  CLI::App *info = cli.info, *genc = cli.genc, *run = cli.run, *bench = cli.bench,
           *tunec = cli.tunec, *cache = cli.cache, *ls = cli.ls, *rm = cli.rm;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  try {
    if (*info) return cmd_info();
    if (*genc) return cmd_gen(sf, gf);
    if (*run) return cmd_run(sf, rf);
    if (*bench) return cmd_bench(sf, bf);
    if (*tunec) return cmd_tune(sf, tf);
    if (*cache) {
      if (*rm && !rm_all && rm_names.empty()) {
        std::fprintf(stderr, "rajit: cache rm: give entry names or --all\n");
        return kExitUsage;
      }
      return cmd_cache(static_cast<bool>(*ls), rm_names, rm_all);
    }
  } catch (const gen::SpecError& e) {  // also tune::ArgumentError
    std::fprintf(stderr, "rajit: invalid input:\n%s\n", e.what());
    return kExitUsage;
  } catch (const tune::TuneFileError& e) {
    std::fprintf(stderr, "rajit: tune file: %s\n", e.what());
    return kExitUsage;
  } catch (const tune::BundleError& e) {
    std::fprintf(stderr, "rajit: %s\n", e.what());
    return kExitFailure;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "rajit: %s\n", e.what());
    return kExitUsage;
  } catch (const rt::NoDriverError& e) {
    std::fprintf(stderr, "rajit: no GPU: %s\n", e.what());
    return kExitNoGpu;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rajit: error: %s\n", e.what());
    return kExitFailure;
  }
  return kExitUsage;
}
#endif  // RAJIT_CLI_FUZZING
