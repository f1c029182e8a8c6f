/// Deployable kernel bundles: a folder of cubins plus manifest.json (written by `rajit gen
/// --bundle`) that forward() uses instead of tuning and NVRTC for the (spec, shape bucket, arch)
/// routes it covers. Manifest parsing is pure so it is tested without files or a GPU.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "generator/spec.hpp"

namespace rajit::tune {

/// A bundle that cannot be used: bad manifest, missing file, SHA-256 mismatch. what() names the
/// file.
class BundleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BundleKernel {
  std::string spec, tile, arch, entry;
  std::string cubin;   ///< file name relative to the bundle folder
  std::string sha256;  ///< 64 lowercase hex digits of the cubin file
  int threads = 0;
  int dynamic_shared_bytes = 0;
};

/// "For this spec and shape bucket on this arch, run this tile."
struct BundleRoute {
  std::string spec, bucket, arch, tile;
};

struct BundleManifest {
  std::string rajit_version;
  std::string template_set_hash;
  std::vector<BundleKernel> kernels;
  std::vector<BundleRoute> routes;
};

/// Parses manifest.json (size limit 16 MiB, depth limit 8). Every kernel with a cubin must carry
/// its SHA-256, every route must name a kernel in the manifest, and file names must be plain
/// (no '/', no leading '.'). Pure. Throws: BundleError.
BundleManifest parse_bundle_manifest(std::string_view text);

/// A loaded bundle. Lookups are cheap and thread-safe; cubin bytes are read and verified lazily.
class Bundle {
 public:
  /// Reads dir/manifest.json. Throws: BundleError (naming the manifest).
  static std::shared_ptr<const Bundle> open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const noexcept { return dir_; }
  const BundleManifest& manifest() const noexcept { return manifest_; }
  /// Whether the bundle was built from this process's template set (else it is not used).
  bool matches_templates() const;

  /// The routed tile, or nullopt. Throws: nothing but std::bad_alloc.
  std::optional<gen::TileConfig> route(const std::string& spec, const std::string& bucket,
                                       const std::string& arch) const;
  /// The kernel built for (spec, tile, arch), or null. Throws: nothing but std::bad_alloc.
  const BundleKernel* kernel(const std::string& spec, const std::string& tile,
                             const std::string& arch) const;
  /// The cubin bytes of `k`, verified against the manifest's SHA-256.
  /// Throws: BundleError naming the file on a read failure or hash mismatch.
  std::vector<char> read_cubin(const BundleKernel& k) const;

 private:
  std::filesystem::path dir_;
  BundleManifest manifest_;
  std::map<std::string, gen::TileConfig> routes_;
  std::map<std::string, std::size_t> kernels_;
};

/// The process-wide bundle: the one given to use_bundle(), else $RAJIT_BUNDLE (opened on first
/// use), else none. Throws: BundleError when RAJIT_BUNDLE names an unusable bundle.
std::shared_ptr<const Bundle> active_bundle();
/// Bumped by every use_bundle(), so cached tile decisions made under another bundle are dropped.
std::size_t bundle_generation() noexcept;
/// Makes forward() use the bundle in `dir` (empty path: none) for every later call.
/// Throws: BundleError.
void use_bundle(const std::filesystem::path& dir);

}  // namespace rajit::tune
