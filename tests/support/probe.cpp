/// Tier probes: host needs nothing, nvrtc needs libnvrtc, gpu needs libcuda and a device.
#include "tests/support/probe.hpp"

#include <cstring>

#include "runtime/driver.hpp"
#include "runtime/nvrtc.hpp"

namespace rajit::test {

Probe probe(const std::string& tier) noexcept {
  Probe p;
  if (tier == "host") {
    p.ok = true;
    return p;
  }
  const rt::NvrtcStatus nv = rt::probe_nvrtc();
  if (!nv.ok) {
    p.reason = "no NVRTC: " + nv.reason;
    return p;
  }
  if (tier == "nvrtc") {
    p.ok = true;
    return p;
  }
  const rt::DriverStatus drv = rt::probe_driver();
  if (!drv.ok) {
    p.reason = "no CUDA driver or GPU: " + drv.reason;
    return p;
  }
  try {
    if (rt::device_count() < 1) {
      p.reason = "no CUDA device";
      return p;
    }
    const rt::DeviceInfo info = rt::device_info(0);
    if (info.cc_major < 8) {
      p.reason = "device 0 is sm_" + std::to_string(info.cc_major * 10 + info.cc_minor) +
                 "; rajit needs sm_80 or newer";
      return p;
    }
    if (info.cc_major != 9) p.unsupported_suites.push_back("sm90");
  } catch (const std::exception& e) {
    p.reason = e.what();
    return p;
  }
  p.ok = true;
  return p;
}

bool is_query(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strstr(a, "-help") || std::strstr(a, "-list") || std::strstr(a, "-count") ||
        std::strcmp(a, "-h") == 0 || std::strstr(a, "-ltc") || std::strstr(a, "-lts")) {
      return true;
    }
  }
  return false;
}

}  // namespace rajit::test
