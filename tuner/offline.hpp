/// Offline generation (`rajit gen`): write .cu/.ptx/.cubin files for specs x archs plus a manifest.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "runtime/nvrtc.hpp"

namespace rajit::tune {

struct KernelChoice {
  gen::AttentionSpec spec;
  gen::TileConfig tile;
};

struct EmitOptions {
  std::vector<gen::Arch> archs;
  bool cu = true, ptx = false, cubin = true;
  std::filesystem::path out_dir;
};

struct EmittedKernel {
  std::string spec_key, tile_key, entry, arch;
  std::vector<std::string> files;  ///< names relative to out_dir
  rt::ResourceUsage resources;     ///< from NVRTC's ptxas report (cubin only)
  int shared_bytes = 0;            ///< dynamic shared memory per block
  int threads = 0;
  std::string full_key;            ///< kernel-cache file name (readable prefix + key hash)
};

/// Generates, compiles (when ptx or cubin is asked for) and writes every (choice, arch) under
/// out_dir, then writes out_dir/manifest.json. Files are written to a temporary name and renamed;
/// if any kernel fails, the files this call wrote are removed and nothing is left half-written.
/// Throws: gen::SpecError (invalid choice, or a tile that does not fit an arch's shared memory),
/// rt::CompileError (NVRTC rejected a source), std::filesystem::filesystem_error (out_dir).
std::vector<EmittedKernel> emit_kernels(const std::vector<KernelChoice>& choices,
                                        const EmitOptions& options);

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
/// Throws: std::filesystem::filesystem_error naming the path.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

}  // namespace rajit::tune
