/// Offline generation (`rajit gen`): write .cu/.ptx/.cubin files for specs x archs plus a manifest.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "generator/spec.hpp"
#include "runtime/nvrtc.hpp"
#include "tuner/bundle.hpp"
#include "tuner/heuristic.hpp"
#include "tuner/tune_cache.hpp"

namespace rajit::tune {

struct KernelChoice {
  gen::AttentionSpec spec;
  gen::TileConfig tile;
  std::vector<gen::Arch> archs;  ///< empty: every arch of EmitOptions::archs
};

struct EmitOptions {
  std::vector<gen::Arch> archs;
  bool cu = true, ptx = false, cubin = true;
  std::filesystem::path out_dir;
  /// Bundle routes written into the manifest ("routes"); each must name an emitted cubin.
  std::vector<BundleRoute> routes;
};

struct EmittedKernel {
  std::string spec_key, tile_key, entry, arch;
  std::vector<std::string> files;  ///< names relative to out_dir
  rt::ResourceUsage resources;     ///< from NVRTC's ptxas report (cubin only)
  int shared_bytes = 0;            ///< dynamic shared memory per block
  int threads = 0;
  std::string full_key;            ///< kernel-cache file name (readable prefix + key hash)
  std::string cubin_file;          ///< the .cubin among `files`, if emitted
  std::string cubin_sha256;        ///< its SHA-256 (manifest "sha256"), checked before loading
};

/// Generates, compiles (when ptx or cubin is asked for) and writes every (choice, arch) under
/// out_dir, then writes out_dir/manifest.json (with each cubin's SHA-256 and `options.routes`, so
/// the folder is a bundle that tune::Bundle can open). Files are written to a temporary name and renamed;
/// if any kernel fails, the files this call wrote are removed and nothing is left half-written.
/// Throws: gen::SpecError (invalid choice, or a tile that does not fit an arch's shared memory),
/// rt::CompileError (NVRTC rejected a source), std::filesystem::filesystem_error (out_dir).
std::vector<EmittedKernel> emit_kernels(const std::vector<KernelChoice>& choices,
                                        const EmitOptions& options);

/// What a bundle holds: the kernels to emit and the routes to them.
struct BundlePlan {
  std::vector<KernelChoice> choices;
  std::vector<BundleRoute> routes;
  std::vector<std::string> skipped;  ///< entries left out, with the reason (other template set...)
};

/// A route per tune-file entry of this template set whose device's compute capability matches one
/// of `archs` (a device "x.sm90.132sm" routes to sm_90 and sm_90a if asked for). When two devices
/// of one arch disagree on a bucket, the first entry in file order wins and the other is skipped.
/// Pure. Throws: std::bad_alloc.
BundlePlan plan_bundle_from_tune_file(const TuneFile& file, const std::vector<gen::Arch>& archs);

/// A route per (spec, shape, arch) with the heuristic tile of that arch. Pure.
/// Throws: gen::SpecError (invalid spec, nothing fits).
BundlePlan plan_bundle_heuristic(const std::vector<gen::AttentionSpec>& specs,
                                 const std::vector<Shape>& shapes,
                                 const std::vector<gen::Arch>& archs);

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
/// Throws: std::filesystem::filesystem_error naming the path.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

}  // namespace rajit::tune
