/// The tune cache: which tile won for (device, spec, shape bucket), persisted as JSON (S42-S44);
/// the file format is a pure parse/serialise pair so it can be tested and fuzzed without a GPU.
#pragma once
#include <atomic>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "generator/spec.hpp"
#include "tuner/heuristic.hpp"

namespace rajit::tune {

/// S42: "sanitized_name.sm<cc>.<sm_count>sm", e.g. "nvidia_h200.sm90.132sm". The SM count keeps
/// H100 SXM, PCIe and MIG slices apart although their compute capability is the same.
std::string device_identity(std::string_view device_name, int cc, int sm_count);

/// The dynamic dimensions rounded UP to powers of two (S43): a shape tunes the bucket it falls in,
/// e.g. Tq = 3000 -> 4096. Static dimensions (widths, mask, bias, dtype) are in the spec key.
struct ShapeBucket {
  long long seqlen_q = 1, seqlen_k = 1, batch_heads = 1;
  std::string key() const;  ///< "tq4096.tk4096.bh64"
  friend bool operator==(const ShapeBucket&, const ShapeBucket&) = default;
};
ShapeBucket bucket_of(const Shape& shape) noexcept;
/// Inverse of ShapeBucket::key(); nullopt unless every field is a power of two. Throws: nothing.
std::optional<ShapeBucket> parse_bucket_key(std::string_view key) noexcept;

/// One tuned result.
struct TuneEntry {
  std::string device;             ///< device_identity()
  std::string spec;               ///< AttentionSpec::key() (includes the dtype)
  std::string bucket;             ///< ShapeBucket::key()
  std::string template_set_hash;  ///< entries of another template set are kept but never used
  gen::TileConfig tile;
  double ms = 0;                  ///< median of the winner on the tuned shape
  double default_ms = 0;          ///< median of the heuristic default on the same run
  gen::TileConfig default_tile;
  double runner_up_margin = 0;    ///< (runner-up ms - winner ms) / winner ms; 0 if alone; < 0
                                  ///< when the winner took a 1% tie from a faster runner-up
  int candidates = 0;             ///< tile shapes considered (timed or not)
  std::string shape;              ///< the shape that was timed, "BxHxTqxTk"
};

/// Who wrote the file (metadata; S44: device/template mismatches are per entry and hard,
/// driver/NVRTC/rajit drift is soft and only reported).
struct TuneFileMeta {
  std::string rajit_version;
  std::string template_set_hash;
  std::string nvrtc_version;  ///< "13.0" or "unavailable"
  int driver_version = 0;     ///< cuDriverGetVersion, 0 when unknown
};

struct TuneFile {
  static constexpr int kFormatVersion = 1;
  TuneFileMeta meta;
  std::vector<TuneEntry> entries;
};

/// Raised by parse_tune_file(); what() says what is wrong and where.
class TuneFileError : public std::runtime_error {
 public:
  enum class Kind { kCorrupt, kNewerVersion };
  TuneFileError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

struct TuneFileLimits {
  std::size_t max_bytes = 16u << 20;  ///< larger files are rejected before parsing
  int max_depth = 6;                  ///< the format needs 4 (root, entries, entry, field)
  std::size_t max_entries = 100000;
};

/// Parses the JSON text of a tune file. Pure: no I/O, no globals, no logging; every input either
/// returns a fully validated TuneFile or throws TuneFileError (also for nlohmann errors, depth and
/// size limits, wrong types, bad keys). An empty text is an empty file. Thread-safe.
/// Throws: TuneFileError, std::bad_alloc.
TuneFile parse_tune_file(std::string_view text, const TuneFileLimits& limits = {});

/// The pretty-printed JSON for `file` (entries sorted by device, spec, bucket, template set).
/// Throws: std::bad_alloc.
std::string serialize_tune_file(const TuneFile& file);

/// Adds `fresh` to `base`: an entry with the same (device, spec, bucket, template set) is
/// replaced, every other entry is kept. Pure. Throws: std::bad_alloc.
void merge_entries(TuneFile& base, const std::vector<TuneEntry>& fresh);

/// RAJIT_TUNE_FILE if set, else rt::DiskCache::default_root() / "tune.json". Throws: bad_alloc.
std::filesystem::path default_tune_file();

/// A tune file as a process sees it: loaded once, looked up on every forward() call, updated by
/// the tuner. Only entries of this process's template set are used. A corrupt, unreadable or
/// newer-format file is reported once (warning) and treated as empty; rajit/NVRTC/driver drift
/// is reported once. Thread-safe.
class TuneStore {
 public:
  explicit TuneStore(std::filesystem::path path);

  /// The store for default_tune_file(), created on first use. Throws: std::bad_alloc.
  static TuneStore& global();

  const std::filesystem::path& path() const noexcept { return path_; }

  /// The tuned tile for (device, spec, bucket), if any. Loads the file on first use.
  /// Throws: nothing but std::bad_alloc.
  std::optional<TuneEntry> lookup(const std::string& device, const std::string& spec,
                                  const std::string& bucket);

  /// Every usable entry (this template set), as loaded plus recorded. Throws: std::bad_alloc.
  std::vector<TuneEntry> entries();

  /// Adds entries in memory and merges them into the file: under a flock on "<dir>/.<name>.lock",
  /// re-read, merge, write a temporary, rename. A failed write (e.g. a read-only exported file)
  /// is warned about once and the entries stay in memory. Returns whether the file was written.
  /// `meta` describes this process (versions). Throws: nothing but std::bad_alloc.
  bool record(const std::vector<TuneEntry>& entries, const TuneFileMeta& meta);

  /// Forgets what was loaded; the next lookup reads the file again. Throws: nothing.
  void reload() noexcept;

  /// Bumped by every record(), so callers can drop decisions derived from older contents.
  std::size_t generation() const noexcept;

 private:
  void ensure_loaded_locked();
  static std::string map_key(const std::string& device, const std::string& spec,
                             const std::string& bucket);

  std::filesystem::path path_;
  mutable std::mutex mu_;
  bool loaded_ = false;
  bool warned_write_ = false;
  std::atomic<std::size_t> generation_{0};
  std::unordered_map<std::string, TuneEntry> entries_;
};

/// Reads and parses a tune file from disk: a missing file is an empty TuneFile; errors as
/// parse_tune_file, or TuneFileError(kCorrupt) for an unreadable file. Throws: TuneFileError.
TuneFile read_tune_file(const std::filesystem::path& path, const TuneFileLimits& limits = {});

/// Metadata describing this process: rajit version, template set, NVRTC and driver versions
/// (probed without throwing). Throws: std::bad_alloc.
TuneFileMeta current_meta();

}  // namespace rajit::tune
