/// DeviceBuffer's driver calls.
#include "runtime/device_buffer.hpp"

#include "runtime/log.hpp"

namespace rajit::rt {

void DeviceFree::operator()(void* p) const noexcept {
  if (p == nullptr) return;
  const CUresult r = driver().cuMemFree(reinterpret_cast<CUdeviceptr>(p));
  if (r != CUDA_SUCCESS) log_warn("cuMemFree failed: {}", result_name(r));
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  CUdeviceptr p = 0;
  RAJIT_CU_CHECK(driver().cuMemAlloc(&p, bytes == 0 ? 1 : bytes), "allocating {} bytes", bytes);
  ptr_.reset(reinterpret_cast<void*>(p));
}

void DeviceBuffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  RAJIT_CU_CHECK(driver().cuMemcpyHtoD(get() + offset, host, bytes), "uploading {} bytes", bytes);
}

void DeviceBuffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  RAJIT_CU_CHECK(driver().cuMemcpyDtoH(host, get() + offset, bytes), "downloading {} bytes", bytes);
}

void DeviceBuffer::fill_bytes(unsigned char value) {
  RAJIT_CU_CHECK(driver().cuMemsetD8(get(), value, bytes_), "filling {} bytes", bytes_);
}

}  // namespace rajit::rt
