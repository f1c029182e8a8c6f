/// What the cache worker process and the tests that start it agree on: requests, fake cubins, self-checking payloads.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <regex>
#include <utility>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/kernel_cache.hpp"

namespace rajit::test {

inline constexpr const char* kVictimName = "victim.sm90.nvrtcfake.0123456789abcdef.cubin";
inline constexpr const char* kVictimKey = "victim-key";

// The tune entries "fake-tune" workers record: one device, one bucket per worker key.
inline constexpr const char* kWorkerTuneDevice = "fake_gpu.sm90.132sm";
inline std::string worker_tune_bucket(const std::string& key) {
  std::size_t h = 0;  // a stable, distinct power of two per key (keys are short ASCII names)
  for (char c : key) h = h * 31 + static_cast<unsigned char>(c);
  const int t = 1 << (4 + static_cast<int>(h % 12));
  return "tq" + std::to_string(t) + ".tk" + std::to_string(t) + ".bh1";
}

/// The fake compiler's output: arch and source, so a test can tell which entry was served.
inline std::string fake_cubin_for(const std::string& arch, const std::string& source) {
  return "CUBIN:" + arch + ":" + source;
}

/// One tiny kernel per key; `fake` keeps the source trivial (the fake compiler ignores it).
inline rt::KernelRequest worker_request(const std::string& key, bool fake) {
  rt::KernelRequest r;
  r.readable_name = "worker." + key;
  r.entry_name = "worker_kernel";
  r.source = fake ? "// key " + key
                  : "extern \"C\" __global__ void worker_kernel(int* out) { out[0] = " +
                        std::to_string(std::hash<std::string>{}(key) % 100000) + "; }\n";
  r.arch = "sm_80";
  r.extra_key = "reliability-test";
  return r;
}

/// Bytes whose first 8 hold `seed` and whose every other byte follows from it, so that any mix
/// of two writers' bytes or any torn write is detectable without knowing which write won.
inline std::vector<char> self_checking_payload(std::uint64_t seed, std::size_t bytes) {
  std::vector<char> out(std::max<std::size_t>(bytes, 8));
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>(seed >> (8 * i));
  for (std::size_t i = 8; i < out.size(); ++i) {
    out[i] = static_cast<char>((seed * 2654435761u + i * 40503u) >> 7);
  }
  return out;
}

inline bool is_self_consistent(const std::vector<char>& payload) {
  if (payload.size() < 8) return false;
  std::uint64_t seed = 0;
  for (int i = 0; i < 8; ++i) {
    seed |= std::uint64_t{static_cast<unsigned char>(payload[static_cast<std::size_t>(i)])} << (8 * i);
  }
  return payload == self_checking_payload(seed, payload.size());
}

/// A started worker and the read end of its stdout.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;
};

/// fork + execv of rajit_cache_worker (RAJIT_CACHE_WORKER_PATH) with stdout on a pipe; pid -1
/// on failure. Tests may start programs; the library never does (reliability_test.cpp checks).
inline Child spawn_worker(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  std::vector<std::string> argv_text = {RAJIT_CACHE_WORKER_PATH};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return {};
  }
  return {pid, fds[0]};
}

/// Waits for the child; returns its exit code (-1 when a signal ended it) and its stdout.
inline std::pair<int, std::string> finish(const Child& c) {
  if (c.pid < 0) return {-2, "worker was not started"};
  std::string out;
  char buf[256];
  for (ssize_t n; (n = ::read(c.out_fd, buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(c.out_fd);
  int status = 0;
  while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// The "compiles N" a compiling worker prints, or -1000 when it printed none.
inline int compiles_in(const std::string& out) {
  std::smatch m;
  return std::regex_search(out, m, std::regex("compiles (\\d+)")) ? std::stoi(m[1]) : -1000;
}

}  // namespace rajit::test
