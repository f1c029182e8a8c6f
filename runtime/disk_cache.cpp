/// File format, validation and atomic writes for DiskCache; all POSIX I/O of the runtime lives here.
#include "runtime/disk_cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <system_error>
#include <thread>

#include "runtime/hash.hpp"
#include "runtime/log.hpp"

namespace rajit::rt {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kDigestBytes = 32;

void put_le(std::vector<char>& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t get_le(const char* p, int bytes) noexcept {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  }
  return value;
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// read() until `size` bytes or EOF; EINTR is retried because signals (e.g. a profiler's timer)
// must not turn into spurious cache misses.
bool read_all(int fd, std::vector<char>& buf, std::size_t size, int& err) {
  buf.resize(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, buf.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  buf.resize(done);
  return true;
}

bool write_all(int fd, const char* data, std::size_t size, int& err) noexcept {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Why the bytes of an entry are unusable, or nullopt when they are fine.
std::optional<std::string> check_entry(std::span<const char> file, std::string_view full_key,
                                       std::size_t& payload_offset, std::size_t& payload_size) {
  const std::size_t size = file.size();
  if (size < DiskCache::kPrefixBytes) {
    return "is truncated (header needs at least " + std::to_string(DiskCache::kPrefixBytes) +
           " bytes, found " + std::to_string(size) + ")";
  }
  if (std::string_view(file.data(), 8) != DiskCache::kMagic) {
    return std::string("has a bad magic number (not a rajit cache entry)");
  }
  const auto version = static_cast<std::uint32_t>(get_le(file.data() + 8, 4));
  if (version != DiskCache::kFormatVersion) {
    return "has format version " + std::to_string(version) + ", expected " +
           std::to_string(DiskCache::kFormatVersion);
  }
  const std::uint64_t key_size = get_le(file.data() + 12, 4);
  const std::uint64_t header_size = DiskCache::kPrefixBytes + key_size + 8 + kDigestBytes;
  if (size < header_size) {
    return "is truncated (header needs " + std::to_string(header_size) + " bytes, found " +
           std::to_string(size) + ")";
  }
  if (std::string_view(file.data() + DiskCache::kPrefixBytes, key_size) != full_key) {
    return std::string("belongs to a different key (stale entry or file-name collision)");
  }
  const char* p = file.data() + DiskCache::kPrefixBytes + key_size;
  const std::uint64_t expected = get_le(p, 8);
  const std::uint64_t found = size - header_size;
  if (found < expected) {
    return "is truncated (expected " + std::to_string(expected) + " payload bytes, found " +
           std::to_string(found) + ")";
  }
  if (found > expected) {
    return "is corrupt (" + std::to_string(found - expected) + " bytes after the " +
           std::to_string(expected) + "-byte payload)";
  }
  payload_offset = static_cast<std::size_t>(header_size);
  payload_size = static_cast<std::size_t>(expected);
  const Sha256::Digest want = [&] {
    Sha256::Digest d;
    std::memcpy(d.data(), p + 8, kDigestBytes);
    return d;
  }();
  Sha256 sha;
  sha.update(std::as_bytes(std::span<const char>(file.data() + payload_offset, payload_size)));
  if (sha.digest() != want) return std::string("fails its checksum (payload corrupted)");
  return std::nullopt;
}

std::atomic<std::uint64_t> g_temp_counter{0};

std::string temp_name_for(const std::string& file_name) {
  // pid + thread + counter: unique among concurrent writers in all processes sharing the directory.
  const auto tid = std::hash<std::thread::id>{}(std::this_thread::get_id());
  char suffix[80];
  std::snprintf(suffix, sizeof suffix, ".tmp.%ld.%zx.%llu", static_cast<long>(::getpid()),
                static_cast<std::size_t>(tid),
                static_cast<unsigned long long>(g_temp_counter.fetch_add(1)));
  return "." + file_name + suffix;
}

bool is_scratch_name(std::string_view name) noexcept {
  return !name.empty() && name.front() == '.' &&
         (name.find(".tmp.") != std::string_view::npos ||
          (name.size() > 5 && name.substr(name.size() - 5) == ".lock"));
}

}  // namespace

ParsedCacheEntry parse_cache_entry(std::span<const char> file, std::string_view full_key) {
  ParsedCacheEntry out;
  out.problem = check_entry(file, full_key, out.payload_offset, out.payload_size);
  if (out.problem) out.payload_offset = out.payload_size = 0;
  return out;
}

bool is_valid_cache_file_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 200 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-' || c == '+';
  });
}

std::vector<char> encode_cache_entry(std::string_view full_key, std::span<const char> payload,
                                     std::uint32_t format_version) {
  std::vector<char> out;
  out.reserve(DiskCache::kPrefixBytes + full_key.size() + 8 + kDigestBytes + payload.size());
  out.insert(out.end(), DiskCache::kMagic.begin(), DiskCache::kMagic.end());
  put_le(out, format_version, 4);
  put_le(out, full_key.size(), 4);
  out.insert(out.end(), full_key.begin(), full_key.end());
  put_le(out, payload.size(), 8);
  Sha256 sha;
  sha.update(std::as_bytes(payload));
  const Sha256::Digest digest = sha.digest();
  out.insert(out.end(), digest.begin(), digest.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

DiskCache::DiskCache(fs::path root) : root_(std::move(root)) {
  const char* text = std::getenv("RAJIT_CACHE_MAX_BYTES");
  if (text == nullptr || *text == '\0') return;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || *text == '-') {
    log_warn("RAJIT_CACHE_MAX_BYTES={}: must be a whole number of bytes (0 = unbounded); using "
             "the default {}",
             text, kDefaultMaxBytes);
    return;
  }
  max_bytes_.store(value, std::memory_order_relaxed);
}

fs::path DiskCache::default_root() {
  auto env = [](const char* name) -> const char* {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  if (const char* dir = env("RAJIT_CACHE_DIR")) return fs::path(dir);
  // XDG says relative values are invalid and must be ignored.
  if (const char* xdg = env("XDG_CACHE_HOME"); xdg != nullptr && fs::path(xdg).is_absolute()) {
    return fs::path(xdg) / "rajit" / RAJIT_VERSION;
  }
  if (const char* home = env("HOME")) return fs::path(home) / ".cache" / "rajit" / RAJIT_VERSION;
  std::error_code ec;
  fs::path tmp = fs::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  return tmp / ("rajit-" + std::to_string(::getuid())) / RAJIT_VERSION;
}

bool DiskCache::trusted_root(bool create) noexcept {
  try {
    if (create) {
      // mkdir component by component so that every directory we create is 0700: cached binaries
      // are loaded into the GPU, so other users must not be able to plant them.
      fs::path current;
      for (const fs::path& part : root_) {
        current /= part;
        if (::mkdir(current.c_str(), 0700) != 0 && errno != EEXIST) {
          log_warn("cannot create cache directory {}: {}; continuing without the disk cache",
                   current.string(), errno_text(errno));
          return false;
        }
      }
    }
    struct stat st{};
    if (::stat(root_.c_str(), &st) != 0) {
      if (errno != ENOENT && !root_warned_.exchange(true)) {
        log_warn("cannot inspect cache directory {}: {}; continuing without the disk cache",
                 root_.string(), errno_text(errno));
      }
      return false;
    }
    if (!S_ISDIR(st.st_mode)) {
      if (!root_warned_.exchange(true)) {
        log_warn("cache root {} is not a directory; continuing without the disk cache",
                 root_.string());
      }
      return false;
    }
    if (st.st_uid != ::geteuid()) {
      // Its owner could replace any entry with code of their choosing.
      if (!root_warned_.exchange(true)) {
        log_warn("cache directory {} is owned by uid {}, not by this user (uid {}); refusing to "
                 "use it (set RAJIT_CACHE_DIR to a directory of your own)",
                 root_.string(), st.st_uid, ::geteuid());
      }
      return false;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
      const unsigned old_mode = st.st_mode & 07777;
      if ((st.st_mode & S_ISVTX) != 0) {
        // A shared sticky folder such as /tmp: never chmod it, and never trust it.
        if (!root_warned_.exchange(true)) {
          log_warn("cache directory {} is a shared folder (mode {:04o}); refusing to use it (set "
                   "RAJIT_CACHE_DIR to a private directory, e.g. {}/rajit)",
                   root_.string(), old_mode, root_.string());
        }
        return false;
      }
      // Ours but writable by others, who could plant cubins: take away only their write bit.
      const unsigned new_mode = old_mode & ~static_cast<unsigned>(S_IWGRP | S_IWOTH);
      if (::chmod(root_.c_str(), static_cast<mode_t>(new_mode)) != 0) {
        if (!root_warned_.exchange(true)) {
          log_warn("cache directory {} is writable by other users (mode {:04o}) and cannot be "
                   "changed ({}); refusing to use it",
                   root_.string(), old_mode, errno_text(errno));
        }
        return false;
      }
      log_warn("cache directory {} was writable by other users (mode {:04o}); removed their write "
               "permission (now {:04o})",
               root_.string(), old_mode, new_mode);
    }
    return true;
  } catch (...) {
    return false;
  }
}

std::optional<std::vector<char>> DiskCache::load(const std::string& file_name,
                                                 const std::string& full_key) {
  auto miss = [&] {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  };
  auto reject = [&](const std::string& why) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    log_warn("cache entry {} {}; rebuilding", (root_ / file_name).string(), why);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  };
  if (!is_valid_cache_file_name(file_name)) return reject("has an invalid file name");
  if (!trusted_root(false)) return miss();
  const fs::path path = root_ / file_name;
  // O_NOFOLLOW: an entry that is a symlink could point anywhere, so it is never read (S41).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return miss();
    if (err == ELOOP) return reject("is a symbolic link, which is refused");
    return reject("cannot be opened (" + errno_text(err) + ")");
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return reject("is not a regular file");
  }
  std::vector<char> file;
  int err = 0;
  const bool read_ok = read_all(fd, file, static_cast<std::size_t>(st.st_size), err);
  // The mtime records the last use, so that eviction is least-recently-used (atime is often
  // disabled). A bad entry touched here is removed below; a failure only skews the LRU order.
  if (read_ok && st.st_uid == ::geteuid()) ::futimens(fd, nullptr);
  ::close(fd);
  if (!read_ok) return reject("cannot be read (" + errno_text(err) + ")");

  if (st.st_uid != ::geteuid()) {
    // Someone else's file could be any code; never load it (S41). store() renames over it.
    return reject("is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
                  std::to_string(::geteuid()) + "), and is refused");
  }
  const ParsedCacheEntry parsed = parse_cache_entry(file, full_key);
  if (const std::optional<std::string>& why = parsed.problem) {
    // Remove the file we judged, not one a concurrent writer has just renamed into place.
    struct stat now{};
    if (::lstat(path.c_str(), &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
      ::unlink(path.c_str());
    }
    return reject(*why);
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  file.erase(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(parsed.payload_offset));
  return file;
}

std::error_code replace_file_atomically(const fs::path& target, std::span<const char> bytes,
                                       unsigned mode) noexcept {
  try {
    const fs::path folder = target.parent_path().empty() ? fs::path(".") : target.parent_path();
    const fs::path temp = folder / temp_name_for(target.filename().string());
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          static_cast<mode_t>(mode));
    if (fd < 0) return {errno, std::generic_category()};
    int err = 0;
    bool ok = write_all(fd, bytes.data(), bytes.size(), err);
    // fsync before rename: otherwise a crash can leave a renamed but empty file (ext4 delalloc).
    if (ok && ::fsync(fd) != 0) {
      err = errno;
      ok = false;
    }
    if (::close(fd) != 0 && ok) {
      err = errno;
      ok = false;
    }
    if (ok && ::rename(temp.c_str(), target.c_str()) != 0) {
      err = errno;
      ok = false;
    }
    if (!ok) {
      ::unlink(temp.c_str());
      return {err, std::generic_category()};
    }
    // Persist the rename itself; failure here only risks losing the file, so it is not reported.
    const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
    return {};
  } catch (...) {
    return std::make_error_code(std::errc::not_enough_memory);
  }
}

std::optional<fs::path> DiskCache::write_atomically(const std::string& file_name,
                                                    std::span<const char> bytes) noexcept {
  try {
    if (!is_valid_cache_file_name(file_name)) {
      log_warn("not writing cache file with invalid name '{}'", file_name);
      return std::nullopt;
    }
    if (!ensure_root()) return std::nullopt;
    const fs::path target = root_ / file_name;
    if (const std::error_code ec = replace_file_atomically(target, bytes, 0600)) {
      log_warn("cannot write cache file {}: {}; continuing without it", target.string(),
               ec.message());
      return std::nullopt;
    }
    return target;
  } catch (...) {
    return std::nullopt;
  }
}

bool DiskCache::store(const std::string& file_name, const std::string& full_key,
                      std::span<const char> payload) noexcept {
  std::optional<fs::path> written;
  try {
    const std::vector<char> entry = encode_cache_entry(full_key, payload);
    written = write_atomically(file_name, entry);
  } catch (...) {
    log_warn("out of memory while writing cache entry {}", file_name);
  }
  (written ? stores_ : store_failures_).fetch_add(1, std::memory_order_relaxed);
  if (written) evict_to_limit(file_name);
  return written.has_value();
}

std::optional<fs::path> DiskCache::write_file(const std::string& file_name,
                                              std::string_view bytes) noexcept {
  return write_atomically(file_name, std::span<const char>(bytes.data(), bytes.size()));
}

std::vector<DiskCache::EntryInfo> DiskCache::list() const {
  std::vector<EntryInfo> out;
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name.front() == '.') continue;
    // Only entries: other files may share the folder (the tuner's tune.json) and must never be
    // listed, removed by `cache rm --all` or evicted by the size bound.
    if (name.size() <= kEntrySuffix.size() ||
        name.compare(name.size() - kEntrySuffix.size(), kEntrySuffix.size(), kEntrySuffix) != 0) {
      continue;
    }
    std::error_code entry_ec;
    if (!it->is_regular_file(entry_ec) || it->is_symlink(entry_ec)) continue;
    EntryInfo info;
    info.name = name;
    info.size = it->file_size(entry_ec);
    info.mtime = it->last_write_time(entry_ec);
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const EntryInfo& a, const EntryInfo& b) { return a.name < b.name; });
  return out;
}

std::size_t DiskCache::remove_all() {
  std::size_t removed = 0;
  for (const EntryInfo& e : list()) {
    if (::unlink((root_ / e.name).c_str()) == 0) ++removed;
  }
  // Leftovers of crashed writers; lock files held by a live process are harmless to unlink.
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_scratch_name(it->path().filename().string())) ::unlink(it->path().c_str());
  }
  return removed;
}

bool DiskCache::remove(const std::string& file_name) noexcept {
  try {
    if (!is_valid_cache_file_name(file_name)) return false;
    return ::unlink((root_ / file_name).c_str()) == 0;
  } catch (...) {
    return false;
  }
}

std::size_t DiskCache::evict_to_limit(const std::string& keep) noexcept {
  try {
    // Temporary files of writers that died (e.g. SIGKILL) mid-write; a live writer's file is
    // seconds old, never an hour.
    const auto stale_before = fs::file_time_type::clock::now() - std::chrono::hours(1);
    std::error_code ec;
    for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      std::error_code time_ec;
      if (name.find(".tmp.") != std::string::npos && is_scratch_name(name) &&
          it->last_write_time(time_ec) < stale_before && !time_ec) {
        ::unlink(it->path().c_str());
      }
    }
    const std::uint64_t limit = max_bytes();
    if (limit == 0) return 0;
    auto total_of = [](const std::vector<EntryInfo>& entries) {
      std::uint64_t total = 0;
      for (const EntryInfo& e : entries) total += e.size;
      return total;
    };
    if (total_of(list()) <= limit) return 0;
    // One evicting process at a time; the list is re-read under the lock.
    const FileLock lock = this->lock("cache-eviction");
    std::vector<EntryInfo> entries = list();
    std::uint64_t total = total_of(entries);
    std::stable_sort(entries.begin(), entries.end(),
                     [](const EntryInfo& a, const EntryInfo& b) { return a.mtime < b.mtime; });
    std::size_t evicted = 0;
    for (const EntryInfo& e : entries) {
      if (total <= limit) break;
      if (e.name == keep) continue;
      if (::unlink((root_ / e.name).c_str()) == 0) {
        total -= std::min<std::uint64_t>(total, e.size);
        ++evicted;
        log_debug("evicted cache entry {} ({} bytes) to stay under {} bytes", e.name, e.size, limit);
      }
    }
    if (evicted > 0) {
      log_info("cache {}: evicted {} least recently used entries to stay under {} bytes "
               "(RAJIT_CACHE_MAX_BYTES)",
               root_.string(), evicted, limit);
    }
    return evicted;
  } catch (...) {
    return 0;
  }
}

DiskCache::FileLock& DiskCache::FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DiskCache::FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

DiskCache::FileLock DiskCache::lock(const std::string& file_name) noexcept {
  try {
    if (!is_valid_cache_file_name(file_name) || !ensure_root()) return FileLock();
    const fs::path path = root_ / ("." + file_name + ".lock");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      log_debug("cannot open lock file {}: {}", path.string(), errno_text(errno));
      return FileLock();
    }
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      log_debug("cannot lock {}: {}", path.string(), errno_text(errno));
      ::close(fd);
      return FileLock();
    }
    return FileLock(fd);
  } catch (...) {
    return FileLock();
  }
}

DiskCache::Counters DiskCache::counters() const noexcept {
  Counters c;
  c.hits = hits_.load(std::memory_order_relaxed);
  c.misses = misses_.load(std::memory_order_relaxed);
  c.rejected = rejected_.load(std::memory_order_relaxed);
  c.stores = stores_.load(std::memory_order_relaxed);
  c.store_failures = store_failures_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace rajit::rt
