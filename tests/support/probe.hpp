/// Test-tier probes: does this machine have what a tier needs (NVRTC; a driver and a GPU)?
#pragma once
#include <string>
#include <vector>

namespace rajit::test {

struct Probe {
  bool ok = false;
  std::string reason;                           ///< why not, when !ok
  std::vector<std::string> unsupported_suites;  ///< e.g. "sm90" on an A100
};

/// noexcept: dlopen + init only; never throws, never aborts.
Probe probe(const std::string& tier) noexcept;

/// True for doctest invocations that only list or describe (they must work without hardware).
bool is_query(int argc, char** argv);

}  // namespace rajit::test
