/// Checksummed, atomically written cache files on disk (S40, S41): the persistence half of the kernel cache, usable without a GPU.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rajit::rt {

/// Writes `bytes` to `target` through a unique temporary file in the same folder, fsync and
/// rename, so a reader sees the old file or the whole new one, never a part (S41). The temporary
/// is removed on failure. Returns the error, or an empty code. Throws: nothing.
std::error_code replace_file_atomically(const std::filesystem::path& target,
                                        std::span<const char> bytes, unsigned mode = 0644) noexcept;

/// A directory of entries. Each entry is one file:
///   "RAJITKC\0" | u32 format version | u32 key length | key bytes | u64 payload length |
///   32-byte SHA-256 of the payload | payload            (integers little-endian)
/// The full key is stored so that a file-name (hash-prefix) collision is detected, not trusted.
///
/// Failure contract (S41): load() never throws and never returns bad bytes. A missing file is a
/// silent miss; an unreadable, truncated, corrupt, foreign or mismatched entry is a miss with one
/// warning naming the file and the reason, and the bad file is removed. store() is best effort:
/// on I/O failure it warns and returns. Writes go to a unique temporary file in the same
/// directory, are fsync'd, then renamed over the entry, so readers see the old or the new entry
/// and never a partial one. Thread-safe and multi-process safe.
class DiskCache {
 public:
  static constexpr std::uint32_t kFormatVersion = 1;
  static constexpr std::string_view kMagic{"RAJITKC\0", 8};
  /// Bytes before the key: magic, format version, key length.
  static constexpr std::size_t kPrefixBytes = 8 + 4 + 4;

  /// Default bound on the total size of the entries (RAJIT_CACHE_MAX_BYTES overrides it).
  static constexpr std::uint64_t kDefaultMaxBytes = std::uint64_t{4} << 30;

  /// `root` is created (mode 0700) on the first store(), not here. The size bound is read from
  /// $RAJIT_CACHE_MAX_BYTES (bytes; 0 = unbounded; invalid text warns and keeps the default).
  explicit DiskCache(std::filesystem::path root);

  /// $RAJIT_CACHE_DIR, else $XDG_CACHE_HOME/rajit/<version>, else $HOME/.cache/rajit/<version>,
  /// else <temp>/rajit-<uid>/<version>. Throws: nothing but std::bad_alloc.
  static std::filesystem::path default_root();

  const std::filesystem::path& root() const noexcept { return root_; }

  /// The payload stored under `file_name` for `full_key`, or nullopt. Throws: std::bad_alloc only.
  std::optional<std::vector<char>> load(const std::string& file_name, const std::string& full_key);

  /// Writes the entry atomically; never throws (warns on failure). Returns whether it was written.
  bool store(const std::string& file_name, const std::string& full_key,
             std::span<const char> payload) noexcept;

  /// Writes an auxiliary file (e.g. a dumped .cu) atomically into the cache directory.
  /// Returns its path, or nullopt after a warning. Throws: nothing.
  std::optional<std::filesystem::path> write_file(const std::string& file_name,
                                                  std::string_view bytes) noexcept;

  struct EntryInfo {
    std::string name;
    std::uintmax_t size = 0;
    std::filesystem::file_time_type mtime;
  };
  /// Entry files ("*.cubin") are the only files the cache lists, removes or evicts.
  static constexpr std::string_view kEntrySuffix = ".cubin";
  /// Entry files (regular, named "*.cubin") in the root, sorted by name; temporary, lock and
  /// other files (e.g. the tuner's tune.json) are skipped.
  /// A missing root lists as empty. Throws: nothing but std::bad_alloc.
  std::vector<EntryInfo> list() const;
  /// Removes every listed file (and stale temporary/lock files); returns how many listed files
  /// were removed. Throws: nothing but std::bad_alloc.
  std::size_t remove_all();
  /// Removes one entry; false if it did not exist or could not be removed.
  bool remove(const std::string& file_name) noexcept;

  /// An advisory, cross-process lock for producing `file_name` (flock on a hidden lock file), so
  /// that two processes missing the same entry compile it once (S41). Released on destruction.
  class FileLock {
   public:
    FileLock() = default;
    explicit FileLock(int fd) noexcept : fd_(fd) {}
    FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileLock& operator=(FileLock&& other) noexcept;
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    ~FileLock();
    bool locked() const noexcept { return fd_ >= 0; }

   private:
    int fd_ = -1;
  };
  /// Blocks until the lock for `file_name` is held. On failure returns an unlocked FileLock
  /// after a debug message: locking is an optimisation, never a requirement. Throws: nothing.
  FileLock lock(const std::string& file_name) noexcept;

  struct Counters {
    std::size_t hits = 0;
    std::size_t misses = 0;    // includes rejected entries
    std::size_t rejected = 0;  // present but unusable (each warned once and removed)
    std::size_t stores = 0;
    std::size_t store_failures = 0;
  };
  Counters counters() const noexcept;

  /// The bound on the summed size of all entries; 0 = unbounded. After each store() that takes
  /// the total past it, the least recently used entries (by mtime; a hit refreshes it) are
  /// removed under a directory-wide lock until the total fits. Temporary files of writers still
  /// writing are never entries, so they are never evicted; the entry just stored is kept.
  std::uint64_t max_bytes() const noexcept { return max_bytes_.load(std::memory_order_relaxed); }
  void set_max_bytes(std::uint64_t bytes) noexcept { max_bytes_.store(bytes, std::memory_order_relaxed); }
  /// Evicts as described at max_bytes(), never removing `keep`; returns how many entries went.
  /// Also removes temporary files that crashed writers left more than an hour ago.
  std::size_t evict_to_limit(const std::string& keep = {}) noexcept;

 private:
  /// Creates the root (0700) if `create`, then checks that it is a directory owned by this user
  /// and not writable by others: a group/other-writable one of ours loses those write bits with
  /// a warning; a foreign one, or a shared sticky one like /tmp, is refused with one warning.
  /// False: use no disk cache.
  bool trusted_root(bool create) noexcept;
  bool ensure_root() noexcept { return trusted_root(true); }
  std::optional<std::filesystem::path> write_atomically(const std::string& file_name,
                                                        std::span<const char> bytes) noexcept;

  std::filesystem::path root_;
  std::atomic<std::uint64_t> max_bytes_{kDefaultMaxBytes};
  std::atomic<bool> root_warned_{false};
  std::atomic<std::size_t> hits_{0}, misses_{0}, rejected_{0}, stores_{0}, store_failures_{0};
};

/// What parse_cache_entry() found: `problem` says why the bytes are unusable (worded to follow
/// the file's name in a warning), or is nullopt and the payload is file[offset, offset + size).
struct ParsedCacheEntry {
  std::optional<std::string> problem;
  std::size_t payload_offset = 0;
  std::size_t payload_size = 0;
};

/// Validates the bytes of one entry file against the key it must hold: magic, format version,
/// key length and bytes, payload length, SHA-256. Pure (no I/O), total over every input (the
/// fuzz target tests/fuzz/cache_entry_fuzz.cpp holds it to that). Throws: std::bad_alloc only.
ParsedCacheEntry parse_cache_entry(std::span<const char> file, std::string_view full_key);

/// Encodes one entry (exposed so tests can build corrupt ones). Throws: std::bad_alloc only.
std::vector<char> encode_cache_entry(std::string_view full_key, std::span<const char> payload,
                                     std::uint32_t format_version = DiskCache::kFormatVersion);

/// Whether `file_name` is a plain name safe to join to the cache root (no '/', not "." or "..",
/// no leading '.', printable). Throws: nothing.
bool is_valid_cache_file_name(std::string_view file_name) noexcept;

}  // namespace rajit::rt
