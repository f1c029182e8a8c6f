/// emit_kernels(): the library side of `rajit gen`, so the CLI stays a thin wrapper.
#include "tuner/offline.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "generator/kernel_source.hpp"
#include "generator/render.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/error.hpp"
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
    for (const auto& a : opt.archs)
    {
      for (auto& p : gen::validate(c.spec, c.tile, a.max_shared_bytes())) {
        problems.push_back(fmt::format("{} {} on {}: {}", c.spec.key(), c.tile.key(), a.name(), p));
      }
      if (c.tile.mma == gen::MmaKind::kWgmma && !(a.cc == 90 && a.arch_specific)) {
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
      for (const auto& arch : opt.archs) {
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
            write_file_atomic(path, std::string_view(res.cubin.data(), res.cubin.size()));
            written.push_back(path);
            k.files.push_back(path.filename().string());
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
      if (k.resources.registers >= 0) {
        j["resources"] = {{"registers", k.resources.registers},
                          {"static_shared_bytes", k.resources.shared_bytes},
                          {"spill_store_bytes", k.resources.spill_store_bytes},
                          {"spill_load_bytes", k.resources.spill_load_bytes},
                          {"stack_bytes", k.resources.stack_bytes}};
      }
      manifest["kernels"].push_back(std::move(j));
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

}  // namespace rajit::tune
