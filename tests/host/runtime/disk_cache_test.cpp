/// Host tests for DiskCache: round trips, every kind of bad entry (one warning each), atomic writes (S41).
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "runtime/disk_cache.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"

namespace fs = std::filesystem;
using rajit::rt::DiskCache;
using rajit::test::LogCapture;
using rajit::test::TempDir;

namespace {

const std::string kKey = "7:example\n4:sm90\n";
const std::string kName = "fwd.bf16.d64.sm90.nvrtc13-0.0123456789abcdef.cubin";

std::vector<char> payload_bytes() {
  std::vector<char> p;
  for (int i = 0; i < 300; ++i) p.push_back(static_cast<char>(i * 31));
  return p;
}

std::vector<char> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_raw(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::string> hidden_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.front() == '.') out.push_back(name);
  }
  return out;
}

// Writes `bytes` as kName, loads it and expects one warning containing `reason`, a miss and the
// bad file gone.
void expect_rejected(const std::vector<char>& bytes, const std::string& reason) {
  TempDir dir;
  DiskCache cache(dir.path());
  write_raw(dir.path() / kName, bytes);
  LogCapture log;
  CHECK_FALSE(cache.load(kName, kKey).has_value());
  const auto warnings = log.warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].text.find(kName) != std::string::npos);
  CHECK(warnings[0].text.find(reason) != std::string::npos);
  CHECK(warnings[0].text.find("rebuilding") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.path() / kName));
  CHECK(cache.counters().rejected == 1);
  CHECK(cache.counters().misses == 1);
  CHECK(cache.counters().hits == 0);
}

}  // namespace

TEST_CASE("DiskCache: a stored entry loads back byte for byte") {
  TempDir dir;
  DiskCache cache(dir.path() / "nested" / "root");  // created on first store
  LogCapture log;
  const std::vector<char> payload = payload_bytes();
  CHECK(cache.store(kName, kKey, payload));
  const auto loaded = cache.load(kName, kKey);
  REQUIRE(loaded.has_value());
  CHECK(*loaded == payload);
  CHECK(cache.counters().hits == 1);
  CHECK(cache.counters().stores == 1);
  CHECK(log.warnings().empty());
  // An empty payload is a valid entry too.
  CHECK(cache.store("empty.cubin", kKey, {}));
  const auto empty = cache.load("empty.cubin", kKey);
  REQUIRE(empty.has_value());
  CHECK(empty->empty());
}

TEST_CASE("DiskCache: the cache directory is created with mode 0700") {
  TempDir dir;
  DiskCache cache(dir.path() / "a" / "b");
  REQUIRE(cache.store(kName, kKey, payload_bytes()));
  struct stat st {};
  REQUIRE(::stat((dir.path() / "a" / "b").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat((dir.path() / "a").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("DiskCache: a missing entry is a silent miss") {
  TempDir dir;
  DiskCache cache(dir.path());
  LogCapture log;
  CHECK_FALSE(cache.load(kName, kKey).has_value());
  CHECK(log.warnings().empty());
  CHECK(cache.counters().misses == 1);
  CHECK(cache.counters().rejected == 0);
}

TEST_CASE("DiskCache: a truncated entry is a miss with one warning") {
  const std::vector<char> good = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  const std::size_t header = DiskCache::kPrefixBytes + kKey.size() + 8 + 32;
  for (std::size_t keep : {std::size_t{0}, std::size_t{3}, std::size_t{8}, std::size_t{15},
                           DiskCache::kPrefixBytes + 2, header - 1, header, header + 1,
                           good.size() - 1}) {
    CAPTURE(keep);
    expect_rejected(std::vector<char>(good.begin(), good.begin() + static_cast<long>(keep)),
                    "is truncated");
  }
}

TEST_CASE("DiskCache: a truncated payload reports expected and found byte counts") {
  const std::vector<char> good = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  expect_rejected(std::vector<char>(good.begin(), good.end() - 100),
                  "is truncated (expected 300 payload bytes, found 200)");
}

TEST_CASE("DiskCache: a flipped payload byte fails the checksum") {
  std::vector<char> bad = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  bad[bad.size() - 17] ^= 0x40;
  expect_rejected(bad, "fails its checksum");
}

TEST_CASE("DiskCache: bytes after the payload are corruption") {
  std::vector<char> bad = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  bad.push_back('x');
  expect_rejected(bad, "is corrupt");
}

TEST_CASE("DiskCache: a bad magic number is a miss with one warning") {
  std::vector<char> bad = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  bad[0] = 'X';
  expect_rejected(bad, "bad magic");
}

TEST_CASE("DiskCache: another format version is a miss with one warning") {
  expect_rejected(rajit::rt::encode_cache_entry(kKey, payload_bytes(), DiskCache::kFormatVersion + 1),
                  "has format version 2, expected 1");
}

TEST_CASE("DiskCache: an entry for another key is a miss with one warning") {
  expect_rejected(rajit::rt::encode_cache_entry("7:another\n", payload_bytes()),
                  "different key");
}

TEST_CASE("DiskCache: an entry that is a symlink is refused with one warning") {
  TempDir dir;
  DiskCache cache(dir.path());
  const std::vector<char> good = rajit::rt::encode_cache_entry(kKey, payload_bytes());
  write_raw(dir.path() / "elsewhere.bin", good);  // a valid entry, but reached through a link
  fs::create_symlink(dir.path() / "elsewhere.bin", dir.path() / kName);
  LogCapture log;
  CHECK_FALSE(cache.load(kName, kKey).has_value());
  const auto warnings = log.warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].text.find("symbolic link") != std::string::npos);
  CHECK(fs::exists(dir.path() / "elsewhere.bin"));  // the target is never touched
  // Storing replaces the link itself with a real entry.
  CHECK(cache.store(kName, kKey, payload_bytes()));
  CHECK_FALSE(fs::is_symlink(dir.path() / kName));
  CHECK(cache.load(kName, kKey).has_value());
}

TEST_CASE("DiskCache: file names that could escape the root are refused") {
  TempDir dir;
  DiskCache cache(dir.path() / "root");
  LogCapture log;
  for (const char* name : {"../x.cubin", "a/b.cubin", ".hidden", "", ".."}) {
    CAPTURE(name);
    CHECK_FALSE(cache.store(name, kKey, payload_bytes()));
    CHECK_FALSE(cache.load(name, kKey).has_value());
  }
  CHECK_FALSE(fs::exists(dir.path() / "x.cubin"));
  CHECK(cache.counters().store_failures == 5);
}

TEST_CASE("DiskCache: writes leave no temporary files behind, even under concurrency") {
  TempDir dir;
  DiskCache cache(dir.path());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 20; ++i) {
        std::vector<char> p(static_cast<std::size_t>(100 + t * 10 + i), static_cast<char>(t));
        cache.store(kName, kKey, p);  // all threads race on one name
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(cache.counters().stores == 160);
  CHECK(hidden_files(dir.path()).empty());
  const auto loaded = cache.load(kName, kKey);  // whichever write won, it is whole
  REQUIRE(loaded.has_value());
  CHECK(loaded->size() >= 100);
}

TEST_CASE("DiskCache: a failed write warns, returns false and leaves nothing behind") {
  if (::geteuid() == 0) {
    // root ignores directory permissions; use a path whose parent is a file instead.
    TempDir dir;
    write_raw(dir.path() / "file", {'x'});
    DiskCache cache(dir.path() / "file" / "sub");
    LogCapture log;
    CHECK_FALSE(cache.store(kName, kKey, payload_bytes()));
    CHECK(log.warnings().size() == 1);
    CHECK(cache.counters().store_failures == 1);
    return;
  }
  TempDir dir;
  DiskCache cache(dir.path());
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  LogCapture log;
  CHECK_FALSE(cache.store(kName, kKey, payload_bytes()));
  fs::permissions(dir.path(), fs::perms::owner_all);
  CHECK(log.warnings().size() == 1);
  CHECK(hidden_files(dir.path()).empty());
}

TEST_CASE("DiskCache: list, remove and remove_all see entries but not scratch files") {
  TempDir dir;
  DiskCache cache(dir.path());
  CHECK(cache.list().empty());
  CHECK(cache.store("b.cubin", kKey, payload_bytes()));
  CHECK(cache.store("a.cubin", kKey, {}));
  { auto lock = cache.lock("a.cubin"); CHECK(lock.locked()); }
  write_raw(dir.path() / ".a.cubin.tmp.1.2.3", {'x'});  // a crashed writer's leftover
  const auto entries = cache.list();
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].name == "a.cubin");
  CHECK(entries[1].name == "b.cubin");
  CHECK(entries[1].size == read_file(dir.path() / "b.cubin").size());
  CHECK(entries[1].size > 300);
  CHECK(cache.remove("a.cubin"));
  CHECK_FALSE(cache.remove("a.cubin"));
  CHECK(cache.remove_all() == 1);
  CHECK(cache.list().empty());
  CHECK(hidden_files(dir.path()).empty());
}

TEST_CASE("DiskCache: default_root follows RAJIT_CACHE_DIR, then XDG_CACHE_HOME, then HOME") {
  struct EnvRestore {
    std::string name;
    std::optional<std::string> value;
    explicit EnvRestore(std::string n) : name(std::move(n)) {
      if (const char* v = std::getenv(name.c_str())) value = v;
    }
    ~EnvRestore() {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  };
  EnvRestore a("RAJIT_CACHE_DIR"), b("XDG_CACHE_HOME"), c("HOME");
  ::setenv("RAJIT_CACHE_DIR", "/explicit/dir", 1);
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  ::setenv("HOME", "/home/u", 1);
  CHECK(DiskCache::default_root() == fs::path("/explicit/dir"));
  ::unsetenv("RAJIT_CACHE_DIR");
  CHECK(DiskCache::default_root() == fs::path("/xdg") / "rajit" / RAJIT_VERSION);
  ::setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  CHECK(DiskCache::default_root() == fs::path("/home/u/.cache/rajit") / RAJIT_VERSION);
  ::unsetenv("XDG_CACHE_HOME");
  CHECK(DiskCache::default_root() == fs::path("/home/u/.cache/rajit") / RAJIT_VERSION);
}
