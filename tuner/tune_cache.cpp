/// Tune-file parsing with limits, merging under a file lock, and the process-wide TuneStore.
#include "tuner/tune_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "generator/render.hpp"
#include "runtime/disk_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "runtime/nvrtc.hpp"

namespace rajit::tune {
namespace {

using nlohmann::json;
constexpr std::string_view kFormatName = "rajit-tune";

long long ceil_pow2(long long v) {
  long long p = 1;
  while (p < v && p < (1LL << 40)) p <<= 1;
  return p;
}

bool is_pow2(long long v) { return v > 0 && (v & (v - 1)) == 0; }

[[noreturn]] void corrupt(const std::string& what) {
  throw TuneFileError(TuneFileError::Kind::kCorrupt, what);
}

const json& field(const json& obj, const char* name, const std::string& where) {
  auto it = obj.find(name);
  if (it == obj.end()) corrupt(fmt::format("{}: missing field \"{}\"", where, name));
  return *it;
}

std::string string_field(const json& obj, const char* name, const std::string& where,
                         std::size_t max_len = 256) {
  const json& v = field(obj, name, where);
  if (!v.is_string()) corrupt(fmt::format("{}.{}: must be a string", where, name));
  std::string s = v.get<std::string>();
  if (s.size() > max_len) corrupt(fmt::format("{}.{}: longer than {} characters", where, name, max_len));
  return s;
}

double number_field(const json& obj, const char* name, const std::string& where, double min = 0) {
  const json& v = field(obj, name, where);
  if (!v.is_number()) corrupt(fmt::format("{}.{}: must be a number", where, name));
  const double d = v.get<double>();
  if (!(d >= min) || d > 1e12) {
    corrupt(fmt::format("{}.{}: {} must be finite and >= {}", where, name, d, min));
  }
  return d;
}

// A whole number in [min, max]: what an int field may hold (converting anything else to int is
// undefined behaviour, and the tune-file fuzzer found a driver_version of 1e10).
int int_field(const json& obj, const char* name, const std::string& where, long long min,
              long long max) {
  const double d = number_field(obj, name, where, static_cast<double>(min));
  if (d > static_cast<double>(max) || d != static_cast<double>(static_cast<long long>(d))) {
    corrupt(fmt::format("{}.{}: {} must be a whole number in [{}, {}]", where, name, d, min, max));
  }
  return static_cast<int>(d);
}

gen::TileConfig tile_field(const json& obj, const char* name, const std::string& where) {
  const std::string key = string_field(obj, name, where);
  try {
    return gen::parse_tile_key(key);
  } catch (const gen::SpecError& e) {
    corrupt(fmt::format("{}.{}: \"{}\" is not a tile key ({})", where, name, key, e.problems().front()));
  }
}

json entry_to_json(const TuneEntry& e) {
  return {{"device", e.device},
          {"spec", e.spec},
          {"bucket", e.bucket},
          {"template_set_hash", e.template_set_hash},
          {"tile", e.tile.key()},
          {"ms", e.ms},
          {"default_tile", e.default_tile.key()},
          {"default_ms", e.default_ms},
          {"runner_up_margin", e.runner_up_margin},
          {"candidates", e.candidates},
          {"shape", e.shape}};
}

auto entry_order(const TuneEntry& e) {
  return std::tie(e.device, e.spec, e.bucket, e.template_set_hash);
}

std::string read_text(const std::filesystem::path& path, std::size_t max_bytes, bool& missing) {
  missing = false;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    missing = true;
    return {};
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) corrupt(fmt::format("{}: cannot read ({})", path.string(), ec.message()));
  if (size > max_bytes) {
    corrupt(fmt::format("{}: {} bytes exceeds the limit of {} bytes", path.string(), size, max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) corrupt(fmt::format("{}: cannot open for reading", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string device_identity(std::string_view name, int cc, int sm_count) {
  std::string out;
  bool last_sep = true;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) {
      out += static_cast<char>(std::tolower(u));
      last_sep = false;
    } else if (!last_sep) {
      out += '_';
      last_sep = true;
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  if (out.empty()) out = "unknown";
  return fmt::format("{}.sm{}.{}sm", out, cc, sm_count);
}

std::string ShapeBucket::key() const {
  return fmt::format("tq{}.tk{}.bh{}", seqlen_q, seqlen_k, batch_heads);
}

ShapeBucket bucket_of(const Shape& s) noexcept {
  return {ceil_pow2(s.seqlen_q), ceil_pow2(s.seqlen_k),
          ceil_pow2(static_cast<long long>(s.batch) * s.heads)};
}

std::optional<ShapeBucket> parse_bucket_key(std::string_view key) noexcept {
  long long v[3] = {0, 0, 0};
  const char* prefixes[3] = {"tq", "tk", "bh"};
  std::size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string_view p = prefixes[i];
    if (key.substr(pos, p.size()) != p) return std::nullopt;
    pos += p.size();
    std::size_t digits = 0;
    while (pos < key.size() && key[pos] >= '0' && key[pos] <= '9' && digits < 13) {
      v[i] = v[i] * 10 + (key[pos] - '0');
      ++pos;
      ++digits;
    }
    if (digits == 0 || !is_pow2(v[i])) return std::nullopt;
    if (i < 2) {
      if (pos >= key.size() || key[pos] != '.') return std::nullopt;
      ++pos;
    }
  }
  if (pos != key.size()) return std::nullopt;
  return ShapeBucket{v[0], v[1], v[2]};
}

TuneFile parse_tune_file(std::string_view text, const TuneFileLimits& limits) {
  TuneFile out;
  if (text.empty()) return out;
  if (text.size() > limits.max_bytes) {
    corrupt(fmt::format("{} bytes exceeds the limit of {} bytes", text.size(), limits.max_bytes));
  }
  json root;
  try {
    // The callback sees every value with its depth before it is stored: deep nesting is refused
    // while parsing, so neither the parser nor the destructor ever walks a deep tree.
    const auto depth_guard = [&](int depth, json::parse_event_t, json&) {
      if (depth > limits.max_depth) {
        corrupt(fmt::format("nesting deeper than {} levels", limits.max_depth));
      }
      return true;
    };
    root = json::parse(text.begin(), text.end(), depth_guard, /*allow_exceptions=*/true,
                       /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    corrupt(fmt::format("not valid JSON: {}", e.what()));
  }
  if (!root.is_object()) corrupt("the top level must be a JSON object");
  const std::string format = string_field(root, "format", "file");
  if (format != kFormatName) {
    corrupt(fmt::format("file.format: \"{}\" is not \"{}\"", format, kFormatName));
  }
  const json& version = field(root, "version", "file");
  if (!version.is_number_integer()) corrupt("file.version: must be an integer");
  const auto v = version.get<long long>();
  if (v > TuneFile::kFormatVersion) {
    throw TuneFileError(TuneFileError::Kind::kNewerVersion,
                        fmt::format("file.version: {} is newer than this rajit reads ({})", v,
                                    TuneFile::kFormatVersion));
  }
  if (v < 1) corrupt(fmt::format("file.version: {} must be >= 1", v));
  const json& meta = field(root, "meta", "file");
  if (!meta.is_object()) corrupt("file.meta: must be an object");
  out.meta.rajit_version = string_field(meta, "rajit_version", "meta");
  out.meta.template_set_hash = string_field(meta, "template_set_hash", "meta");
  out.meta.nvrtc_version = string_field(meta, "nvrtc_version", "meta");
  out.meta.driver_version = int_field(meta, "driver_version", "meta", 0, 1 << 30);
  const json& entries = field(root, "entries", "file");
  if (!entries.is_array()) corrupt("file.entries: must be an array");
  if (entries.size() > limits.max_entries) {
    corrupt(fmt::format("file.entries: {} entries exceeds the limit of {}", entries.size(),
                        limits.max_entries));
  }
  out.entries.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const json& j = entries[i];
    const std::string where = fmt::format("entries[{}]", i);
    if (!j.is_object()) corrupt(where + ": must be an object");
    TuneEntry e;
    e.device = string_field(j, "device", where);
    e.spec = string_field(j, "spec", where);
    try {
      gen::require_valid(gen::parse_spec_key(e.spec));
    } catch (const gen::SpecError& err) {
      corrupt(fmt::format("{}.spec: \"{}\" is not a valid spec key ({})", where, e.spec,
                          err.problems().front()));
    }
    e.bucket = string_field(j, "bucket", where);
    if (!parse_bucket_key(e.bucket)) {
      corrupt(fmt::format("{}.bucket: \"{}\" is not tq<2^a>.tk<2^b>.bh<2^c>", where, e.bucket));
    }
    e.template_set_hash = string_field(j, "template_set_hash", where);
    e.tile = tile_field(j, "tile", where);
    // The device's shared-memory limit is checked at use; here only the rule's other parts.
    if (auto p = gen::validate(gen::parse_spec_key(e.spec), e.tile, 1 << 30); !p.empty()) {
      corrupt(fmt::format("{}.tile: {} is not valid for {} ({})", where, e.tile.key(), e.spec, p.front()));
    }
    e.ms = number_field(j, "ms", where);
    e.default_tile = tile_field(j, "default_tile", where);
    e.default_ms = number_field(j, "default_ms", where);
    // Negative when the winner took a tie (within 1%) from a slightly faster runner-up.
    e.runner_up_margin = number_field(j, "runner_up_margin", where, -1.0);
    e.candidates = int_field(j, "candidates", where, 0, 1000000);
    e.shape = string_field(j, "shape", where);
    out.entries.push_back(std::move(e));
  }
  return out;
}

std::string serialize_tune_file(const TuneFile& file) {
  std::vector<TuneEntry> sorted = file.entries;
  std::stable_sort(sorted.begin(), sorted.end(), [](const TuneEntry& a, const TuneEntry& b) {
    return entry_order(a) < entry_order(b);
  });
  json root = {{"format", kFormatName},
               {"version", TuneFile::kFormatVersion},
               {"meta",
                {{"rajit_version", file.meta.rajit_version},
                 {"template_set_hash", file.meta.template_set_hash},
                 {"nvrtc_version", file.meta.nvrtc_version},
                 {"driver_version", file.meta.driver_version}}},
               {"entries", json::array()}};
  for (const auto& e : sorted) root["entries"].push_back(entry_to_json(e));
  return root.dump(2) + "\n";
}

void merge_entries(TuneFile& base, const std::vector<TuneEntry>& fresh) {
  for (const auto& f : fresh) {
    auto it = std::find_if(base.entries.begin(), base.entries.end(),
                           [&](const TuneEntry& e) { return entry_order(e) == entry_order(f); });
    if (it != base.entries.end()) *it = f;
    else base.entries.push_back(f);
  }
}

std::filesystem::path default_tune_file() {
  if (const char* v = std::getenv("RAJIT_TUNE_FILE"); v != nullptr && *v != '\0') return v;
  return rt::DiskCache::default_root() / "tune.json";
}

TuneFile read_tune_file(const std::filesystem::path& path, const TuneFileLimits& limits) {
  bool missing = false;
  const std::string text = read_text(path, limits.max_bytes, missing);
  if (missing) return {};
  try {
    return parse_tune_file(text, limits);
  } catch (const TuneFileError& e) {
    throw TuneFileError(e.kind(), fmt::format("{}: {}", path.string(), e.what()));
  }
}

TuneFileMeta current_meta() {
  TuneFileMeta m;
  m.rajit_version = RAJIT_VERSION;
  m.template_set_hash = gen::template_set_hash();
  const rt::NvrtcStatus nv = rt::probe_nvrtc();
  m.nvrtc_version = nv.ok ? fmt::format("{}.{}", nv.major, nv.minor) : "unavailable";
  const rt::DriverStatus drv = rt::probe_driver();
  m.driver_version = drv.ok ? drv.version : 0;
  return m;
}

TuneStore::TuneStore(std::filesystem::path path) : path_(std::move(path)) {}

TuneStore& TuneStore::global() {
  static TuneStore* store = new TuneStore(default_tune_file());  // never destroyed (exit order)
  return *store;
}

std::string TuneStore::map_key(const std::string& device, const std::string& spec,
                               const std::string& bucket) {
  return device + '|' + spec + '|' + bucket;
}

void TuneStore::ensure_loaded_locked() {
  if (loaded_) return;
  loaded_ = true;
  entries_.clear();
  TuneFile file;
  try {
    file = read_tune_file(path_);
  } catch (const TuneFileError& e) {
    rt::log_warn("tune file ignored (treated as empty; it is rebuilt on the next tune): {}", e.what());
    return;
  }
  const std::string templates = gen::template_set_hash();
  std::size_t foreign = 0;
  for (auto& e : file.entries) {
    if (e.template_set_hash != templates) {
      ++foreign;
      continue;
    }
    entries_[map_key(e.device, e.spec, e.bucket)] = std::move(e);
  }
  if (!file.entries.empty()) {
    const TuneFileMeta now = current_meta();
    std::vector<std::string> drift;
    if (file.meta.rajit_version != now.rajit_version)
      drift.push_back(fmt::format("rajit {} -> {}", file.meta.rajit_version, now.rajit_version));
    if (file.meta.nvrtc_version != now.nvrtc_version && now.nvrtc_version != "unavailable")
      drift.push_back(fmt::format("NVRTC {} -> {}", file.meta.nvrtc_version, now.nvrtc_version));
    if (file.meta.driver_version != now.driver_version && now.driver_version != 0)
      drift.push_back(fmt::format("driver {} -> {}", file.meta.driver_version, now.driver_version));
    if (!drift.empty()) {
      std::string what;
      for (const auto& d : drift) what += (what.empty() ? "" : ", ") + d;
      rt::log_warn("tune file {} was written by another version ({}); its entries are used, "
                   "re-tune with `rajit tune --force` to refresh them",
                   path_.string(), what);
    }
  }
  if (foreign > 0) {
    rt::log_debug("tune file {}: {} entries of other template sets kept on disk, not used",
                  path_.string(), foreign);
  }
}

std::optional<TuneEntry> TuneStore::lookup(const std::string& device, const std::string& spec,
                                           const std::string& bucket) {
  std::lock_guard lock(mu_);
  ensure_loaded_locked();
  if (auto it = entries_.find(map_key(device, spec, bucket)); it != entries_.end()) return it->second;
  return std::nullopt;
}

std::vector<TuneEntry> TuneStore::entries() {
  std::lock_guard lock(mu_);
  ensure_loaded_locked();
  std::vector<TuneEntry> out;
  for (const auto& [k, e] : entries_) out.push_back(e);
  std::sort(out.begin(), out.end(),
            [](const TuneEntry& a, const TuneEntry& b) { return entry_order(a) < entry_order(b); });
  return out;
}

bool TuneStore::record(const std::vector<TuneEntry>& fresh, const TuneFileMeta& meta) {
  std::lock_guard lock(mu_);
  ensure_loaded_locked();
  for (const auto& e : fresh) entries_[map_key(e.device, e.spec, e.bucket)] = e;
  generation_.fetch_add(1, std::memory_order_acq_rel);
  // Merge with what other processes wrote since we loaded: lock, re-read, merge, rename.
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  rt::DiskCache lock_dir(dir);
  const rt::DiskCache::FileLock file_lock = lock_dir.lock(path_.filename().string());
  TuneFile file;
  try {
    file = read_tune_file(path_);
  } catch (const TuneFileError& e) {
    if (e.kind() == TuneFileError::Kind::kNewerVersion) {
      rt::log_warn("not updating {}: {}", path_.string(), e.what());
      return false;
    }
    rt::log_warn("rebuilding the tune file: {}", e.what());
  }
  file.meta = meta;
  merge_entries(file, fresh);
  const std::string text = serialize_tune_file(file);
  if (const std::error_code wec =
          rt::replace_file_atomically(path_, std::span<const char>(text.data(), text.size()))) {
    if (!warned_write_) {
      warned_write_ = true;
      rt::log_warn("cannot write the tune file {} ({}); tuned choices stay in this process only",
                   path_.string(), wec.message());
    }
    return false;
  }
  return true;
}

void TuneStore::reload() noexcept {
  std::lock_guard lock(mu_);
  loaded_ = false;
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

std::size_t TuneStore::generation() const noexcept {
  return generation_.load(std::memory_order_acquire);
}

}  // namespace rajit::tune
