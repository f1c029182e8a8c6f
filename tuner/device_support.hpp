/// Helpers every launching facade (forward, backward) shares: view checks, device facts, arch.
#pragma once
#include <cuda.h>

#include <array>
#include <string>
#include <vector>

#include "tuner/forward.hpp"

namespace rajit::tune::detail {

/// Appends a problem for each way `t` fails to be a (want) tensor with unit last stride, a
/// pointer aligned to align_elems 16-bit elements and strides that are multiples of it.
void check_view(std::vector<std::string>& out, const char* name, const TensorView& t,
                const std::array<long long, 4>& want, int align_elems);

struct DeviceFacts {
  int cc = 0;          ///< major * 10 + minor
  int max_shared = 0;  ///< opt-in shared memory per block, capped by what rajit assumes for cc
};
/// Cached per ordinal. Thread-safe. Throws: rt::DriverError, rt::NoDriverError.
DeviceFacts device_facts(int ordinal);

/// The arch NVRTC targets for a device: sm_90 (not 90a: no wgmma yet, and plain sm_90 cubins also
/// run on any later-revision 9.x part).
std::string arch_for(int cc);

/// The device that owns `ptr`. Throws: ArgumentError naming `name` when it is not device memory.
int device_of(const void* ptr, const char* name);

/// Keeps the caller's current context when it belongs to `ordinal`, else makes that device's
/// primary context current; returns the context now current. Throws: rt::DriverError.
CUcontext context_for(int ordinal);

}  // namespace rajit::tune::detail
