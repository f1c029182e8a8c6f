/// DeviceBuffer: an owned cuMemAlloc allocation, for tools, tests and the tuner's inputs.
#pragma once
#include <cuda.h>

#include <cstddef>
#include <memory>
#include <span>

#include "runtime/driver.hpp"

namespace rajit::rt {

struct DeviceFree {
  void operator()(void* p) const noexcept;  // logs a failure, never throws (S35)
};

/// Device memory in the current context. Move-only (rule of zero, S34).
/// Throws (constructor, copies): DriverError, NoDriverError.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  CUdeviceptr get() const { return reinterpret_cast<CUdeviceptr>(ptr_.get()); }
  void* data() const { return ptr_.get(); }
  std::size_t size() const { return bytes_; }
  void upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  void download(void* host, std::size_t bytes, std::size_t offset = 0) const;
  void fill_bytes(unsigned char value);

 private:
  std::unique_ptr<void, DeviceFree> ptr_;
  std::size_t bytes_ = 0;
};

}  // namespace rajit::rt
