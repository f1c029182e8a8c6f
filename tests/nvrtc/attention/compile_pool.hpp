/// The nvrtc tier's compile tests' shared part: kernels compiled on a thread pool, and what each must show.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/nvrtc.hpp"

namespace rajit::test {

struct CompileOutcome {
  std::string what;
  bool ok = false;
  int registers = -1, spill = -1;
  bool wgmma_serialized = false;
  std::string log;  // the start of NVRTC's log, where the compile failed or was serialised
};

/// Compiles every job on a small thread pool (NVRTC is thread-safe; CI has 2 cores).
/// `make(job)` returns the job's CompileRequest and the name its outcome is reported under.
template <class Job, class MakeRequest>
std::vector<CompileOutcome> compile_all(const std::vector<Job>& jobs, MakeRequest make) {
  std::vector<CompileOutcome> out(jobs.size());
  std::atomic<std::size_t> next{0};
  const unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < n; ++t) {
    pool.emplace_back([&] {
      for (std::size_t i = next++; i < jobs.size(); i = next++) {
        std::pair<rt::CompileRequest, std::string> job = make(jobs[i]);
        const rt::CompileResult res = rt::compile(job.first);
        CompileOutcome& o = out[i];
        o.what = std::move(job.second);
        o.ok = res.ok && !res.cubin.empty();
        o.registers = res.resources.registers;
        o.spill = res.resources.spill_store_bytes + res.resources.spill_load_bytes;
        o.wgmma_serialized = res.resources.wgmma_serialized;
        if (!res.ok || o.wgmma_serialized) o.log = res.log.substr(0, 4000);
      }
    });
  }
  for (auto& t : pool) t.join();
  return out;
}

/// Compiled, with a register count in range, no spills and no serialised wgmma.
inline void check_outcome(const CompileOutcome& o) {
  CAPTURE(o.what);
  CAPTURE(o.log);
  CHECK(o.ok);
  CHECK(o.registers > 0);
  CHECK(o.registers <= 255);
  CHECK(o.spill == 0);
  CHECK_FALSE(o.wgmma_serialized);  // ptxas would put a wait after every wgmma
}

}  // namespace rajit::test
