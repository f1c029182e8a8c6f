/// Bundle manifests (parse with limits, verify cubins by SHA-256) and the process-wide bundle.
#include "tuner/bundle.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "generator/render.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

namespace rajit::tune {
namespace {

using nlohmann::json;
constexpr std::size_t kMaxManifestBytes = 16u << 20;
constexpr int kMaxManifestDepth = 8;

[[noreturn]] void bad(const std::string& what) { throw BundleError("bundle manifest: " + what); }

std::string str(const json& obj, const char* name, const std::string& where, bool required = true) {
  auto it = obj.find(name);
  if (it == obj.end()) {
    if (required) bad(fmt::format("{}: missing field \"{}\"", where, name));
    return {};
  }
  if (!it->is_string()) bad(fmt::format("{}.{}: must be a string", where, name));
  return it->get<std::string>();
}

int integer(const json& obj, const char* name, const std::string& where) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_number_integer()) {
    bad(fmt::format("{}.{}: must be an integer", where, name));
  }
  const auto v = it->get<long long>();
  if (v < 0 || v > (1 << 30)) bad(fmt::format("{}.{}: {} is out of range", where, name, v));
  return static_cast<int>(v);
}

bool plain_file_name(const std::string& n) {
  return !n.empty() && n.size() < 512 && n.front() != '.' && n.find('/') == std::string::npos &&
         n.find('\\') == std::string::npos && n.find('\0') == std::string::npos;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string kernel_key(const std::string& spec, const std::string& tile, const std::string& arch) {
  return spec + '|' + tile + '|' + arch;
}

std::string read_all(const std::filesystem::path& p, std::size_t limit) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  if (ec) throw BundleError(fmt::format("{}: cannot read ({})", p.string(), ec.message()));
  if (size > limit) throw BundleError(fmt::format("{}: {} bytes exceeds {}", p.string(), size, limit));
  std::ifstream in(p, std::ios::binary);
  if (!in) throw BundleError(fmt::format("{}: cannot open", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

BundleManifest parse_bundle_manifest(std::string_view text) {
  if (text.size() > kMaxManifestBytes) bad(fmt::format("{} bytes exceeds {}", text.size(), kMaxManifestBytes));
  json root;
  try {
    const auto guard = [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxManifestDepth) bad(fmt::format("nesting deeper than {} levels", kMaxManifestDepth));
      return true;
    };
    root = json::parse(text.begin(), text.end(), guard);
  } catch (const json::exception& e) {
    bad(fmt::format("not valid JSON: {}", e.what()));
  }
  if (!root.is_object()) bad("the top level must be an object");
  BundleManifest m;
  m.rajit_version = str(root, "rajit_version", "manifest");
  m.template_set_hash = str(root, "template_set_hash", "manifest");
  auto ks = root.find("kernels");
  if (ks == root.end() || !ks->is_array()) bad("manifest.kernels: must be an array");
  for (std::size_t i = 0; i < ks->size(); ++i) {
    const json& j = (*ks)[i];
    const std::string where = fmt::format("kernels[{}]", i);
    if (!j.is_object()) bad(where + ": must be an object");
    BundleKernel k;
    k.spec = str(j, "spec", where);
    k.tile = str(j, "tile", where);
    k.arch = str(j, "arch", where);
    k.entry = str(j, "entry", where);
    k.cubin = str(j, "cubin", where, /*required=*/false);
    k.threads = integer(j, "threads", where);
    k.dynamic_shared_bytes = integer(j, "dynamic_shared_bytes", where);
    try {
      (void)gen::parse_spec_key(k.spec);
      (void)gen::parse_tile_key(k.tile);
      (void)gen::parse_arch(k.arch);
    } catch (const gen::SpecError& e) {
      bad(fmt::format("{}: {}", where, e.problems().front()));
    }
    if (!k.cubin.empty()) {
      if (!plain_file_name(k.cubin)) bad(fmt::format("{}.cubin: \"{}\" is not a plain file name", where, k.cubin));
      k.sha256 = str(j, "sha256", where);
      if (!is_hex64(k.sha256)) bad(fmt::format("{}.sha256: must be 64 lowercase hex digits", where));
    }
    m.kernels.push_back(std::move(k));
  }
  if (auto rs = root.find("routes"); rs != root.end()) {
    if (!rs->is_array()) bad("manifest.routes: must be an array");
    for (std::size_t i = 0; i < rs->size(); ++i) {
      const json& j = (*rs)[i];
      const std::string where = fmt::format("routes[{}]", i);
      if (!j.is_object()) bad(where + ": must be an object");
      BundleRoute r{str(j, "spec", where), str(j, "bucket", where), str(j, "arch", where),
                    str(j, "tile", where)};
      bool found = false;
      for (const auto& k : m.kernels) {
        found = found || (k.spec == r.spec && k.tile == r.tile && k.arch == r.arch && !k.cubin.empty());
      }
      if (!found) {
        bad(fmt::format("{}: no cubin in the manifest for {} {} {}", where, r.spec, r.tile, r.arch));
      }
      m.routes.push_back(std::move(r));
    }
  }
  return m;
}

std::shared_ptr<const Bundle> Bundle::open(const std::filesystem::path& dir) {
  auto b = std::make_shared<Bundle>();
  b->dir_ = dir;
  const auto manifest_path = dir / "manifest.json";
  try {
    b->manifest_ = parse_bundle_manifest(read_all(manifest_path, kMaxManifestBytes));
  } catch (const BundleError& e) {
    throw BundleError(fmt::format("{}: {}", manifest_path.string(), e.what()));
  }
  for (std::size_t i = 0; i < b->manifest_.kernels.size(); ++i) {
    const auto& k = b->manifest_.kernels[i];
    if (!k.cubin.empty()) b->kernels_.emplace(kernel_key(k.spec, k.tile, k.arch), i);
  }
  for (const auto& r : b->manifest_.routes) {
    b->routes_.emplace(kernel_key(r.spec, r.bucket, r.arch), gen::parse_tile_key(r.tile));
  }
  return b;
}

bool Bundle::matches_templates() const {
  return manifest_.template_set_hash == gen::template_set_hash();
}

std::optional<gen::TileConfig> Bundle::route(const std::string& spec, const std::string& bucket,
                                             const std::string& arch) const {
  if (auto it = routes_.find(kernel_key(spec, bucket, arch)); it != routes_.end()) return it->second;
  return std::nullopt;
}

const BundleKernel* Bundle::kernel(const std::string& spec, const std::string& tile,
                                   const std::string& arch) const {
  if (auto it = kernels_.find(kernel_key(spec, tile, arch)); it != kernels_.end()) {
    return &manifest_.kernels[it->second];
  }
  return nullptr;
}

std::vector<char> Bundle::read_cubin(const BundleKernel& k) const {
  const auto path = dir_ / k.cubin;
  const std::string bytes = read_all(path, 256u << 20);
  const std::string got = rt::sha256_hex(bytes);
  if (got != k.sha256) {
    throw BundleError(fmt::format("{}: SHA-256 {} does not match the manifest's {}; refusing to "
                                  "load it (rebuild the bundle with `rajit gen --bundle`)",
                                  path.string(), got, k.sha256));
  }
  return {bytes.begin(), bytes.end()};
}

namespace {
std::mutex g_bundle_mu;
bool g_bundle_resolved = false;
std::shared_ptr<const Bundle> g_bundle;
std::atomic<std::size_t> g_bundle_generation{0};
}  // namespace

std::size_t bundle_generation() noexcept { return g_bundle_generation.load(std::memory_order_acquire); }

std::shared_ptr<const Bundle> active_bundle() {
  std::lock_guard lock(g_bundle_mu);
  if (!g_bundle_resolved) {
    g_bundle_resolved = true;
    if (const char* dir = std::getenv("RAJIT_BUNDLE"); dir != nullptr && *dir != '\0') {
      try {
        g_bundle = Bundle::open(dir);
      } catch (const BundleError& e) {
        throw BundleError(fmt::format("RAJIT_BUNDLE={}: {}", dir, e.what()));
      }
      if (!g_bundle->matches_templates()) {
        rt::log_warn("RAJIT_BUNDLE={}: built from template set {}, this rajit has {}; bundle not used",
                     dir, g_bundle->manifest().template_set_hash, gen::template_set_hash());
        g_bundle.reset();
      } else {
        rt::log_info("using kernel bundle {} ({} kernels, {} routes)", dir,
                     g_bundle->manifest().kernels.size(), g_bundle->manifest().routes.size());
      }
    }
  }
  return g_bundle;
}

void use_bundle(const std::filesystem::path& dir) {
  std::shared_ptr<const Bundle> b;
  if (!dir.empty()) {
    b = Bundle::open(dir);
    if (!b->matches_templates()) {
      throw BundleError(fmt::format("{}: built from template set {}, this rajit has {}",
                                    dir.string(), b->manifest().template_set_hash,
                                    gen::template_set_hash()));
    }
  }
  std::lock_guard lock(g_bundle_mu);
  g_bundle_resolved = true;
  g_bundle = std::move(b);
  g_bundle_generation.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace rajit::tune
