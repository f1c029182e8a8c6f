/// emit_kernels(): the library side of `rajit gen`, so the CLI stays a thin wrapper.
#include "tuner/offline.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/error.hpp"
#include "runtime/hash.hpp"
#include "runtime/kernel_cache.hpp"
#include "runtime/log.hpp"

namespace rajit::tune {

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  if (const std::error_code ec =
          rt::replace_file_atomically(path, std::span<const char>(bytes.data(), bytes.size()))) {
    throw std::filesystem::filesystem_error("cannot write", path, ec);
  }
}

std::vector<EmittedKernel> emit_kernels(const std::vector<KernelChoice>& choices,
                                        const EmitOptions& opt) {
  // Validate everything before writing anything.
  std::vector<std::string> problems;
  for (const auto& c : choices)
    for (const auto& a : c.archs.empty() ? opt.archs : c.archs) {
      for (auto& p : gen::validate(c.spec, c.tile, a.max_shared_bytes())) {
        problems.push_back(fmt::format("{} {} on {}: {}", c.spec.key(), c.tile.key(), a.name(), p));
      }
      if (gen::is_hopper(c.tile.mma) && !(a.cc == 90 && a.arch_specific)) {
        problems.push_back(fmt::format("{} {} on {}: wgmma tiles compile only for sm_90a",
                                       c.spec.key(), c.tile.key(), a.name()));
      }
    }
  if (!problems.empty()) throw gen::SpecError(std::move(problems));
  std::filesystem::create_directories(opt.out_dir);

  std::vector<std::filesystem::path> written;
  std::vector<EmittedKernel> out;
  try {
    for (const auto& c : choices) {
      const gen::GeneratedSource src = gen::generate_forward(c.spec, c.tile);
      for (const auto& arch : c.archs.empty() ? opt.archs : c.archs) {
        EmittedKernel k;
        k.spec_key = c.spec.key();
        k.tile_key = c.tile.key();
        k.entry = src.entry;
        k.arch = arch.name();
        k.shared_bytes = src.shared_bytes;
        k.threads = src.threads;
        const std::string stem = fmt::format("{}.{}", src.readable_key, arch.name());
        rt::KernelRequest req{src.readable_key, src.entry, src.text, src.options, arch.name(),
                              src.template_set_hash};
        k.full_key = rt::cache_file_name(req);  // names the runtime cache entry it matches
        if (opt.cu) {
          // The .cu carries its own header comment; nvcc -cubin compiles it with no -I.
          const auto path = opt.out_dir / (stem + ".cu");
          write_file_atomic(path, src.text);
          written.push_back(path);
          k.files.push_back(path.filename().string());
        }
        if (opt.ptx || opt.cubin) {
          rt::log_info("compiling {} for {}", src.readable_key, arch.name());
          rt::CompileRequest creq{src.readable_key + ".cu", src.text, src.options, arch.name(),
                                  opt.ptx, opt.cubin, src.entry};
          rt::CompileResult res = rt::compile(creq);
          if (!res.ok) {
            const auto dump = opt.out_dir / (stem + ".failed.cu");
            write_file_atomic(dump, src.text);
            throw rt::CompileError(src.readable_key + ".cu", arch.name(), res.log, res.options_used,
                                   dump);
          }
          k.resources = res.resources;
          if (opt.ptx) {
            const auto path = opt.out_dir / (stem + ".ptx");
            write_file_atomic(path, res.ptx);
            written.push_back(path);
            k.files.push_back(path.filename().string());
          }
          if (opt.cubin) {
            const auto path = opt.out_dir / (stem + ".cubin");
            const std::string_view bytes(res.cubin.data(), res.cubin.size());
            write_file_atomic(path, bytes);
            written.push_back(path);
            k.files.push_back(path.filename().string());
            k.cubin_file = path.filename().string();
            k.cubin_sha256 = rt::sha256_hex(bytes);
          }
        }
        out.push_back(std::move(k));
      }
    }
    nlohmann::json manifest;
    manifest["rajit_version"] = RAJIT_VERSION;
    manifest["template_set_hash"] = gen::template_set_hash();
    const rt::NvrtcStatus nv = rt::probe_nvrtc();
    manifest["nvrtc_version"] = nv.ok ? fmt::format("{}.{}", nv.major, nv.minor) : "unavailable";
    manifest["kernels"] = nlohmann::json::array();
    for (const auto& k : out) {
      nlohmann::json j = {{"spec", k.spec_key},       {"tile", k.tile_key},
                          {"entry", k.entry},         {"arch", k.arch},
                          {"files", k.files},         {"threads", k.threads},
                          {"dynamic_shared_bytes", k.shared_bytes},
                          {"cache_key", k.full_key}};
      if (!k.cubin_file.empty()) {
        j["cubin"] = k.cubin_file;
        j["sha256"] = k.cubin_sha256;
      }
      if (k.resources.registers >= 0) {
        j["resources"] = {{"registers", k.resources.registers},
                          {"static_shared_bytes", k.resources.shared_bytes},
                          {"spill_store_bytes", k.resources.spill_store_bytes},
                          {"spill_load_bytes", k.resources.spill_load_bytes},
                          {"stack_bytes", k.resources.stack_bytes}};
      }
      manifest["kernels"].push_back(std::move(j));
    }
    manifest["routes"] = nlohmann::json::array();
    for (const auto& r : opt.routes) {
      bool emitted = false;
      for (const auto& k : out) {
        emitted = emitted || (k.spec_key == r.spec && k.tile_key == r.tile && k.arch == r.arch &&
                              !k.cubin_file.empty());
      }
      if (!emitted) {
        throw gen::SpecError({fmt::format("route {} {} {} -> {}: no cubin emitted for it (add the "
                                          "arch and emit cubin)",
                                          r.spec, r.bucket, r.arch, r.tile)});
      }
      manifest["routes"].push_back(
          {{"spec", r.spec}, {"bucket", r.bucket}, {"arch", r.arch}, {"tile", r.tile}});
    }
    write_file_atomic(opt.out_dir / "manifest.json", manifest.dump(2) + "\n");
  } catch (...) {
    for (const auto& p : written) {
      std::error_code ignored;
      std::filesystem::remove(p, ignored);
    }
    throw;
  }
  return out;
}

namespace {

void add_choice(BundlePlan& plan, const gen::AttentionSpec& spec, const gen::TileConfig& tile,
                const gen::Arch& arch) {
  for (auto& c : plan.choices) {
    if (c.spec == spec && c.tile == tile) {
      if (std::find(c.archs.begin(), c.archs.end(), arch) == c.archs.end()) c.archs.push_back(arch);
      return;
    }
  }
  plan.choices.push_back({spec, tile, {arch}});
}

bool has_route(const BundlePlan& plan, const BundleRoute& r) {
  for (const auto& x : plan.routes)
    if (x.spec == r.spec && x.bucket == r.bucket && x.arch == r.arch) return true;
  return false;
}

// "nvidia_h200.sm90.132sm" -> 90; -1 when the identity has no ".sm<cc>." part.
int cc_of_identity(const std::string& id) {
  const auto dot1 = id.find('.');
  const auto dot2 = dot1 == std::string::npos ? dot1 : id.find('.', dot1 + 1);
  if (dot2 == std::string::npos || id.compare(dot1 + 1, 2, "sm") != 0) return -1;
  int cc = 0;
  for (std::size_t i = dot1 + 3; i < dot2; ++i) {
    if (id[i] < '0' || id[i] > '9' || cc > 1000) return -1;
    cc = cc * 10 + (id[i] - '0');
  }
  return dot2 > dot1 + 3 ? cc : -1;
}

}  // namespace

BundlePlan plan_bundle_from_tune_file(const TuneFile& file, const std::vector<gen::Arch>& archs) {
  BundlePlan plan;
  const std::string templates = gen::template_set_hash();
  for (const auto& e : file.entries) {
    if (e.template_set_hash != templates) {
      plan.skipped.push_back(fmt::format("{} {} {}: tuned with template set {}, this rajit has {}",
                                         e.device, e.spec, e.bucket, e.template_set_hash, templates));
      continue;
    }
    const int cc = cc_of_identity(e.device);
    bool matched = false;
    for (const auto& arch : archs) {
      if (arch.cc != cc) continue;
      matched = true;
      const gen::AttentionSpec spec = gen::parse_spec_key(e.spec);
      const BundleRoute r{e.spec, e.bucket, arch.name(), e.tile.key()};
      if (has_route(plan, r)) {
        plan.skipped.push_back(fmt::format("{} {} {}: {} already routed by an earlier entry",
                                           e.device, e.spec, e.bucket, arch.name()));
        continue;
      }
      if (!gen::validate(spec, e.tile, arch.max_shared_bytes()).empty()) {
        plan.skipped.push_back(fmt::format("{} {} {}: {} does not fit {}", e.device, e.spec,
                                           e.bucket, e.tile.key(), arch.name()));
        continue;
      }
      add_choice(plan, spec, e.tile, arch);
      plan.routes.push_back(r);
    }
    if (!matched) {
      plan.skipped.push_back(fmt::format("{} {} {}: no --arch matches this device", e.device,
                                         e.spec, e.bucket));
    }
  }
  return plan;
}

BundlePlan plan_bundle_heuristic(const std::vector<gen::AttentionSpec>& specs,
                                 const std::vector<Shape>& shapes,
                                 const std::vector<gen::Arch>& archs) {
  BundlePlan plan;
  for (const auto& spec : specs)
    for (const auto& shape : shapes)
      for (const auto& arch : archs) {
        const gen::TileConfig t =
            heuristic_tile(spec, shape, arch.cc, arch.max_shared_bytes(), arch.arch_specific);
        const BundleRoute r{spec.key(), bucket_of(shape).key(), arch.name(), t.key()};
        if (has_route(plan, r)) continue;
        add_choice(plan, spec, t, arch);
        plan.routes.push_back(r);
      }
  return plan;
}

}  // namespace rajit::tune
