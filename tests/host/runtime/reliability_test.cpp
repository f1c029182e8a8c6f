/// Host tests of the cache under load, faults and hostile files: 16 processes, SIGKILLed writers, every corruption class, hygiene, eviction, no subprocesses.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/disk_cache.hpp"
#include "runtime/kernel_cache.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"
#include "tests/support/cache_worker.hpp"
#include "tuner/tune_cache.hpp"

namespace fs = std::filesystem;
using rajit::rt::CompileRequest;
using rajit::rt::CompileResult;
using rajit::rt::DiskCache;
using rajit::rt::KernelCache;
using rajit::rt::KernelRequest;
using rajit::test::FakeDriver;
using rajit::test::LogCapture;
using rajit::test::TempDir;
using rajit::test::Child;
using rajit::test::compiles_in;
using rajit::test::finish;
using rajit::test::spawn_worker;

namespace {

// Counts compiles per source; images are fake_cubin_for(arch, source).
class CountingCompiler {
 public:
  std::atomic<int> calls{0};
  std::chrono::milliseconds delay{0};
  CountingCompiler() {
    KernelCache::set_compiler_for_testing([this](const CompileRequest& req) {
      ++calls;
      std::this_thread::sleep_for(delay);
      CompileResult r;
      const std::string image = rajit::test::fake_cubin_for(req.arch, req.source);
      r.cubin.assign(image.begin(), image.end());
      r.cubin.push_back('\0');
      r.ok = true;
      return r;
    });
  }
  ~CountingCompiler() { KernelCache::set_compiler_for_testing(nullptr); }
  CountingCompiler(const CountingCompiler&) = delete;
  CountingCompiler& operator=(const CountingCompiler&) = delete;
};

std::string expected_image(const KernelRequest& r) {
  std::string s = rajit::test::fake_cubin_for(r.arch, r.source);
  s.push_back('\0');
  return s;
}

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("concurrency: 16 processes compiling shared and distinct keys into one fresh cache, "
          "half of them also recording tune entries, all succeed, every entry validates and each "
          "key compiles once") {
  TempDir tmp;
  const fs::path dir = tmp.path() / "fresh" / "cache";  // created by the racing processes
  const std::vector<std::string> keys = {"shared", "k0", "k1", "k2", "k3"};
  std::vector<Child> children;
  for (int i = 0; i < 16; ++i) {
    // Odd workers also tune: they write tune.json (lock, re-read, merge, rename) while the others
    // compile.
    std::vector<std::string> args = {dir.string(), i % 2 == 1 ? "fake-tune" : "fake", "shared",
                                     "k" + std::to_string(i % 4)};
    if (i % 2 == 1) std::swap(args[2], args[3]);
    children.push_back(spawn_worker(args));
  }
  int total_compiles = 0;
  for (const Child& c : children) {
    const auto finished = finish(c);
    const int code = finished.first;
    const std::string& out = finished.second;
    CAPTURE(out);
    CHECK(code == 0);
    total_compiles += compiles_in(out);
  }
  // Five keys, each compiled by exactly one process: the others waited on its lock and loaded it.
  CHECK(total_compiles == static_cast<int>(keys.size()));

  // Every entry validates, with no compile, and nothing but entries and lock files remains.
  CountingCompiler compiler;
  KernelCache cache{dir};
  for (const std::string& key : keys) {
    const KernelRequest req = rajit::test::worker_request(key, true);
    const std::vector<char> cubin = cache.get_cubin(req);
    CHECK(std::string(cubin.begin(), cubin.end()) == rajit::test::fake_cubin_for(req.arch, req.source));
  }
  CHECK(compiler.calls == 0);
  CHECK(cache.disk()->counters().rejected == 0);
  CHECK(cache.disk()->list().size() == keys.size());
  // The tune file the tuning half (odd workers: keys "shared", k1, k3) wrote at once parses and
  // holds one entry per key it tuned; the cache did not list it as an entry.
  const rajit::tune::TuneFile tuned = rajit::tune::read_tune_file(dir / "tune.json");
  const std::vector<std::string> tuned_keys = {"shared", "k1", "k3"};
  CHECK(tuned.entries.size() == tuned_keys.size());
  for (const std::string& key : tuned_keys) {
    const std::string bucket = rajit::test::worker_tune_bucket(key);
    CHECK(std::count_if(tuned.entries.begin(), tuned.entries.end(),
                        [&](const auto& e) { return e.bucket == bucket; }) == 1);
  }
  for (const auto& e : fs::directory_iterator(dir)) {
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  }
  struct stat st{};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("concurrency: a writer SIGKILLed at random points mid-write leaves nothing a reader "
          "accepts that is not a whole entry") {
  TempDir tmp;
  std::mt19937 rng(12345);
  int whole = 0;
  for (int round = 0; round < 24; ++round) {
    // Odd rounds replace an entry a previous writer finished; even rounds start from nothing.
    if (round % 2 == 0) {
      for (const auto& e : fs::directory_iterator(tmp.path())) {
        if (e.path().filename().string().find(".tmp.") == std::string::npos) fs::remove(e.path());
      }
    }
    const Child writer = spawn_worker({tmp.path().string(), "writer", std::to_string(4 << 20)});
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60000));
    ::kill(writer.pid, SIGKILL);
    const auto finished = finish(writer);
    const int code = finished.first;
    const std::string& out = finished.second;
    CHECK(code == -1);  // killed, not exited
    LogCapture log;
    DiskCache reader(tmp.path());
    const auto payload = reader.load(rajit::test::kVictimName, rajit::test::kVictimKey);
    if (payload) {
      CHECK(rajit::test::is_self_consistent(*payload));
      CHECK(payload->size() == std::size_t{4} << 20);
      ++whole;
    }
    CHECK(log.warnings().empty());  // renames are atomic: never a partial entry to reject
  }
  MESSAGE(whole << " of 24 rounds left a whole entry; the rest left none");
  // Leftover temporaries are never read (dot names are not valid entry names) and an eviction
  // pass removes them once they are an hour old.
  std::size_t temps = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") == std::string::npos) continue;
    ++temps;
    CHECK_FALSE(rajit::rt::is_valid_cache_file_name(name));
    fs::last_write_time(e.path(), fs::file_time_type::clock::now() - std::chrono::hours(2));
  }
  DiskCache cleaner(tmp.path());
  cleaner.set_max_bytes(1);
  cleaner.evict_to_limit();
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  }
  MESSAGE(temps << " of 24 kills landed mid-write (left a temporary file); all were cleaned");
}

TEST_CASE("concurrency: 64 threads released at once asking for one key compile it once") {
  TempDir tmp;
  FakeDriver driver;
  CountingCompiler compiler;
  compiler.delay = std::chrono::milliseconds(100);
  KernelCache cache{tmp.path()};
  const KernelRequest req = rajit::test::worker_request("one", true);
  std::barrier start(64);
  std::vector<std::thread> threads;
  std::vector<CUfunction> got(64);
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      got[static_cast<std::size_t>(i)] = cache.get(req, 0).fn;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(compiler.calls == 1);
  CHECK(cache.counters().compiles == 1);
  CHECK(cache.counters().memory_misses == 1);
  CHECK(driver.loads == 1);
  const bool all_same = std::all_of(got.begin(), got.end(),
                                    [&](CUfunction f) { return f == got[0] && f != nullptr; });
  CHECK(all_same);

  // get_cubin skips the memory layer; the per-entry file lock still makes 16 threads compile
  // a new key once.
  const KernelRequest other = rajit::test::worker_request("two", true);
  std::barrier start2(16);
  threads.clear();
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      start2.arrive_and_wait();
      CHECK(cache.get_cubin(other).size() == expected_image(other).size());
    });
  }
  for (auto& t : threads) t.join();
  CHECK(compiler.calls == 2);
}

TEST_CASE("corruption: every flipped byte and every truncation of an entry is rejected with one "
          "warning, rebuilt, and never served") {
  TempDir tmp;
  CountingCompiler compiler;
  const KernelRequest req = rajit::test::worker_request("victim", true);
  const std::string file = rajit::rt::cache_file_name(req);
  const fs::path path = tmp.path() / file;
  {
    KernelCache warm{tmp.path()};
    warm.get_cubin(req);
  }
  const std::vector<char> good = read_bytes(path);
  REQUIRE(good.size() > 100);
  const std::string want = expected_image(req);

  std::vector<std::pair<std::string, std::vector<char>>> variants;
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::vector<char> flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ (i % 2 == 0 ? 0x01 : 0x80));
    variants.push_back({"flip byte " + std::to_string(i), std::move(flipped)});
  }
  for (std::size_t len = 0; len < good.size(); len += (len < 80 ? 1 : 7)) {
    variants.push_back({"truncate to " + std::to_string(len),
                        std::vector<char>(good.begin(), good.begin() + static_cast<long>(len))});
  }
  std::vector<char> longer = good;
  longer.push_back('x');
  variants.push_back({"one byte appended", longer});

  int compiles_before = compiler.calls;
  for (const auto& item : variants) {
    const std::string& what = item.first;
    const auto& bytes = item.second;
    CAPTURE(what);
    write_bytes(path, bytes);
    LogCapture log;
    KernelCache cache{tmp.path()};
    const std::vector<char> got = cache.get_cubin(req);
    CHECK(std::string(got.begin(), got.end()) == want);  // never the corrupt bytes
    CHECK(log.warnings().size() == 1);                    // reported once
    CHECK(compiler.calls == ++compiles_before);           // rebuilt
    CHECK(read_bytes(path) == good);                      // and the rebuilt entry is whole
  }
  MESSAGE(variants.size() << " corrupt variants of a " << good.size() << "-byte entry");
}

TEST_CASE("corruption: wrong magic, wrong version, another key, another arch and another NVRTC "
          "version are each rejected once and rebuilt") {
  TempDir tmp;
  CountingCompiler compiler;
  KernelRequest req = rajit::test::worker_request("victim", true);
  req.arch = "sm_90";
  KernelRequest sm80 = req;
  sm80.arch = "sm_80";
  const std::string key = rajit::rt::full_key(req);
  const std::string file = rajit::rt::cache_file_name(req);
  const std::string image = expected_image(req);
  const std::span<const char> payload(image.data(), image.size());

  std::string other_nvrtc_key = key;
  const std::string tail = "4:fake\n";
  REQUIRE(other_nvrtc_key.ends_with(tail));
  other_nvrtc_key.replace(other_nvrtc_key.size() - tail.size(), tail.size(), "4:12.8\n");
  std::vector<char> bad_magic = rajit::rt::encode_cache_entry(key, payload);
  bad_magic[0] = 'X';
  const std::string sm80_image = expected_image(sm80);

  const std::vector<std::pair<std::string, std::vector<char>>> cases = {
      {"wrong magic", bad_magic},
      {"format version 2", rajit::rt::encode_cache_entry(key, payload, 2)},
      {"format version 0", rajit::rt::encode_cache_entry(key, payload, 0)},
      {"another key", rajit::rt::encode_cache_entry(key + "x", payload)},
      {"an sm_80 entry under the sm_90 name",
       rajit::rt::encode_cache_entry(rajit::rt::full_key(sm80),
                                     std::span<const char>(sm80_image.data(), sm80_image.size()))},
      {"an entry from NVRTC 12.8", rajit::rt::encode_cache_entry(other_nvrtc_key, payload)},
      {"an empty file", {}},
  };
  for (const auto& item : cases) {
    const std::string& what = item.first;
    const auto& bytes = item.second;
    CAPTURE(what);
    write_bytes(tmp.path() / file, bytes);
    const int before = compiler.calls;
    {
      LogCapture log;
      KernelCache cache{tmp.path()};
      const std::vector<char> got = cache.get_cubin(req);
      CHECK(std::string(got.begin(), got.end()) == image);
      REQUIRE(log.warnings().size() == 1);
      CHECK(log.warnings()[0].text.find(file) != std::string::npos);
      CHECK(compiler.calls == before + 1);
    }
    LogCapture log;  // the rebuilt entry is served silently by the next process
    KernelCache next{tmp.path()};
    CHECK(next.get_cubin(req).size() == image.size());
    CHECK(log.warnings().empty());
    CHECK(compiler.calls == before + 1);
  }
}

TEST_CASE("hygiene: an existing cache directory writable by others loses their write permission "
          "with a warning; a shared sticky one is refused") {
  TempDir tmp;
  const std::vector<char> payload = {'a', 'b'};
  SUBCASE("group/other-writable directory of ours") {
    const fs::path dir = tmp.path() / "open";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    LogCapture log;
    DiskCache cache(dir);
    CHECK(cache.store("x.cubin", "key", payload));
    struct stat st{};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0755);
    REQUIRE(log.warnings().size() == 1);
    CHECK(log.warnings()[0].text.find("removed their write permission (now 0755)") !=
          std::string::npos);
    CHECK(cache.load("x.cubin", "key") == payload);
    CHECK(log.warnings().size() == 1);
  }
  SUBCASE("sticky shared directory like /tmp") {
    const fs::path dir = tmp.path() / "shared";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chmod(dir.c_str(), 01777) == 0);
    LogCapture log;
    DiskCache cache(dir);
    CHECK_FALSE(cache.store("x.cubin", "key", payload));
    CHECK_FALSE(cache.load("x.cubin", "key").has_value());
    struct stat st{};
    REQUIRE(::stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 01777);  // never chmod'ed
    REQUIRE(log.warnings().size() == 1);
    CHECK(log.warnings()[0].text.find("shared folder (mode 1777)") != std::string::npos);
  }
}

TEST_CASE("hygiene: a cache directory or an entry owned by another user is refused") {
  if (::geteuid() != 0) {
    // Only root can hand a file to another user; CI containers run as root.
    MESSAGE("not root: cannot create files owned by another user; ownership checks not exercised");
    return;
  }
  TempDir tmp;
  const std::vector<char> payload = {'c', 'u', 'b', 'i', 'n'};
  SUBCASE("entry") {
    DiskCache cache(tmp.path());
    REQUIRE(cache.store("e.cubin", "key", payload));
    REQUIRE(::chown((tmp.path() / "e.cubin").c_str(), 65534, 65534) == 0);
    LogCapture log;
    CHECK_FALSE(cache.load("e.cubin", "key").has_value());
    REQUIRE(log.warnings().size() == 1);
    CHECK(log.warnings()[0].text.find("owned by uid 65534") != std::string::npos);
    CHECK(cache.store("e.cubin", "key", payload));  // replaced by our own entry
    CHECK(cache.load("e.cubin", "key") == payload);
  }
  SUBCASE("directory") {
    const fs::path dir = tmp.path() / "theirs";
    DiskCache cache(dir);
    REQUIRE(cache.store("e.cubin", "key", payload));  // a valid entry, but in their directory
    REQUIRE(::chown(dir.c_str(), 65534, 65534) == 0);
    LogCapture log;
    DiskCache reader(dir);
    CHECK_FALSE(reader.load("e.cubin", "key").has_value());
    CHECK_FALSE(reader.store("f.cubin", "key", payload));
    REQUIRE(log.warnings().size() == 1);  // once, however often it is used
    CHECK(log.warnings()[0].text.find("owned by uid 65534") != std::string::npos);
    CHECK(log.warnings()[0].text.find("RAJIT_CACHE_DIR") != std::string::npos);
  }
}

TEST_CASE("hygiene: the cache is bounded; least recently used entries are evicted first") {
  TempDir tmp;
  DiskCache cache(tmp.path());
  cache.set_max_bytes(3 * 1100);  // three ~1 KiB entries fit, four do not
  const std::vector<char> payload(1000, 'p');
  const auto now = fs::file_time_type::clock::now();
  for (int i = 0; i < 3; ++i) {
    const std::string name = "e" + std::to_string(i) + ".cubin";
    REQUIRE(cache.store(name, "key" + std::to_string(i), payload));
    fs::last_write_time(tmp.path() / name, now - std::chrono::minutes(10 - i));
  }
  CHECK(cache.list().size() == 3);
  CHECK(cache.load("e0.cubin", "key0").has_value());  // a hit makes e0 the most recent
  LogCapture log;
  REQUIRE(cache.store("e3.cubin", "key3", payload));
  std::vector<std::string> names;
  for (const auto& e : cache.list()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"e0.cubin", "e2.cubin", "e3.cubin"});  // e1 was LRU
  CHECK(log.at(rajit::rt::LogLevel::kInfo).size() == 1);

  // The entry just written is never the victim, even when it alone is over the bound.
  cache.set_max_bytes(10);
  REQUIRE(cache.store("big.cubin", "kb", payload));
  names.clear();
  for (const auto& e : cache.list()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"big.cubin"});
}

TEST_CASE("hygiene: RAJIT_CACHE_MAX_BYTES sets the bound; bad text warns and keeps the default") {
  TempDir tmp;
  ::setenv("RAJIT_CACHE_MAX_BYTES", "123456", 1);
  CHECK(DiskCache(tmp.path()).max_bytes() == 123456);
  ::setenv("RAJIT_CACHE_MAX_BYTES", "0", 1);
  CHECK(DiskCache(tmp.path()).max_bytes() == 0);
  {
    ::setenv("RAJIT_CACHE_MAX_BYTES", "4GB", 1);
    LogCapture log;
    CHECK(DiskCache(tmp.path()).max_bytes() == DiskCache::kDefaultMaxBytes);
    REQUIRE(log.warnings().size() == 1);
    CHECK(log.warnings()[0].text.find("RAJIT_CACHE_MAX_BYTES=4GB") != std::string::npos);
  }
  ::unsetenv("RAJIT_CACHE_MAX_BYTES");
  CHECK(DiskCache(tmp.path()).max_bytes() == DiskCache::kDefaultMaxBytes);
}

TEST_CASE("hygiene: the library never runs a shell or another program") {
  // Sources: no call that starts a process, in any library layer.
  const std::regex spawn(
      R"(\b(system|popen|execl|execlp|execle|execv|execvp|execvpe|fexecve|fork|vfork|posix_spawnp?|clone)\s*\()");
  int files = 0;
  for (const char* layer : {"runtime", "generator", "tuner", "templates"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(RAJIT_SOURCE_DIR) / layer)) {
      if (!e.is_regular_file()) continue;
      ++files;
      std::ifstream in(e.path());
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        const std::string code = line.substr(0, line.find("//"));  // comments may say "system ("
        CAPTURE(e.path().string() + ":" + std::to_string(n) + ": " + line);
        CHECK_FALSE(std::regex_search(code, spawn));
      }
    }
  }
  CHECK(files > 20);
  // Symbols: none of the static libraries links against a process-starting libc function.
  for (const char* lib : {RAJIT_LIB_RUNTIME, RAJIT_LIB_GENERATOR, RAJIT_LIB_TUNER}) {
    CAPTURE(lib);
    const std::string cmd = std::string("nm -u --format=posix '") + lib + "' 2>/dev/null";
    FILE* pipe = ::popen(cmd.c_str(), "r");  // the test may start programs; the library may not
    REQUIRE(pipe != nullptr);
    std::string symbols;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) symbols.append(buf, n);
    CHECK(::pclose(pipe) == 0);
    // The runtime's undefined symbols include dlopen: proof that the scan reads real symbols.
    if (std::string(lib) == RAJIT_LIB_RUNTIME) CHECK(symbols.find("dlopen") != std::string::npos);
    const std::regex banned(
        R"((^|\n)(system|popen|execl|execlp|execle|execv|execvp|execvpe|fexecve|fork|vfork|posix_spawnp?)(@\S*)? )");
    CHECK_FALSE(std::regex_search(symbols, banned));
  }
}

// The tune file's corruption, version-drift, foreign-entry and many-writers cases live beside its
// parser: tests/host/tuner/tune_cache_test.cpp ("tune file: truncation at every byte and flipped
// bytes ...", "TuneStore: a corrupt file is reported once ...", "TuneStore: entries of another
// template set or device ...", "TuneStore: version drift is a warning, once ...", "TuneStore: eight
// processes recording at once ..."); tests/fuzz/tune_file_fuzz.cpp fuzzes parse_tune_file.

TEST_CASE("hygiene: files that are not entries (the tune file) are never listed, evicted or removed") {
  TempDir tmp;
  DiskCache cache{tmp.path()};
  {
    std::ofstream tune(tmp.path() / "tune.json");
    tune << R"({"format":"rajit-tune","version":1,"entries":[]})";
  }
  cache.set_max_bytes(2 * 1100);  // two ~1 KiB entries fit; a third forces an eviction
  const std::vector<char> payload(1000, 'p');
  for (int i = 0; i < 3; ++i) {
    REQUIRE(cache.store("e" + std::to_string(i) + ".cubin", "key" + std::to_string(i), payload));
  }
  CHECK(cache.list().size() == 2);
  for (const auto& e : cache.list()) CHECK(e.name != "tune.json");
  CHECK(fs::exists(tmp.path() / "tune.json"));
  CHECK(cache.remove_all() == 2);
  CHECK(fs::exists(tmp.path() / "tune.json"));
}
