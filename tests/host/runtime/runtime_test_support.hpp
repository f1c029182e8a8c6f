/// Shared helpers for the runtime host tests: a scriptable fake driver table (S56), log capture and temp dirs.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "runtime/driver.hpp"
#include "runtime/log.hpp"

namespace rajit::test {

/// A unique directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    const auto base = std::filesystem::temp_directory_path();
    for (;;) {
      path_ = base / ("rajit-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
      if (std::filesystem::create_directory(path_)) break;
    }
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Captures every log message (at every level) for its lifetime; restores stderr and the level.
class LogCapture {
 public:
  struct Message {
    rt::LogLevel level;
    std::string text;
  };
  LogCapture() : saved_level_(rt::log_level()) {
    rt::set_log_level(rt::LogLevel::kDebug);
    rt::set_log_sink([this](rt::LogLevel level, std::string_view text) {
      const std::lock_guard<std::mutex> lock(mutex_);
      messages_.push_back({level, std::string(text)});
    });
  }
  ~LogCapture() {
    rt::set_log_sink(nullptr);
    rt::set_log_level(saved_level_);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<Message> at(rt::LogLevel level) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Message> out;
    for (const Message& m : messages_) {
      if (m.level == level) out.push_back(m);
    }
    return out;
  }
  std::vector<Message> warnings() const { return at(rt::LogLevel::kWarn); }
  void clear() {
    const std::lock_guard<std::mutex> lock(mutex_);
    messages_.clear();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
  rt::LogLevel saved_level_;
};

/// A fake libcuda: installs itself on construction and restores the real driver on destruction,
/// so declare it before any cache or kernel that uses it. Behaviour is scripted through the
/// public members; calls are counted. One instance at a time.
class FakeDriver {
 public:
  // Scripted behaviour.
  CUresult init_result = CUDA_SUCCESS;
  int device_count = 2;
  /// Decides what cuModuleLoadData returns for an image; default accepts everything.
  std::function<CUresult(const void* image)> on_load;
  std::function<CUresult(CUfunction, const char*)> on_launch;

  // Counters.
  std::atomic<int> loads{0}, unloads{0}, retains{0}, set_current{0}, set_attribute{0},
      launches{0}, get_function{0};
  std::atomic<int> last_smem_attribute{0};

  FakeDriver() {
    instance() = this;
    api_.cuInit = [](unsigned int) { return instance()->init_result; };
    api_.cuDriverGetVersion = [](int* v) {
      *v = 13000;
      return CUDA_SUCCESS;
    };
    api_.cuDeviceGetCount = [](int* n) {
      *n = instance()->device_count;
      return CUDA_SUCCESS;
    };
    api_.cuDeviceGet = [](CUdevice* d, int ordinal) {
      if (ordinal < 0 || ordinal >= instance()->device_count) return CUDA_ERROR_INVALID_DEVICE;
      *d = ordinal;
      return CUDA_SUCCESS;
    };
    api_.cuDeviceGetName = [](char* name, int len, CUdevice d) {
      std::snprintf(name, static_cast<std::size_t>(len), "Fake GPU %d", static_cast<int>(d));
      return CUDA_SUCCESS;
    };
    api_.cuDeviceGetAttribute = [](int* v, CUdevice_attribute a, CUdevice) {
      switch (a) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 50 * 1024 * 1024; break;
        default: return CUDA_ERROR_INVALID_VALUE;
      }
      return CUDA_SUCCESS;
    };
    api_.cuDeviceTotalMem = [](std::size_t* bytes, CUdevice) {
      *bytes = std::size_t{80} << 30;
      return CUDA_SUCCESS;
    };
    api_.cuDevicePrimaryCtxRetain = [](CUcontext* ctx, CUdevice d) {
      ++instance()->retains;
      *ctx = context_of(static_cast<int>(d));
      return CUDA_SUCCESS;
    };
    api_.cuCtxGetCurrent = [](CUcontext* ctx) {
      *ctx = current();
      return CUDA_SUCCESS;
    };
    api_.cuCtxSetCurrent = [](CUcontext ctx) {
      ++instance()->set_current;
      current() = ctx;
      return CUDA_SUCCESS;
    };
    api_.cuCtxGetDevice = [](CUdevice* d) {
      for (int i = 0; i < instance()->device_count; ++i) {
        if (current() == context_of(i)) {
          *d = i;
          return CUDA_SUCCESS;
        }
      }
      return CUDA_ERROR_INVALID_CONTEXT;
    };
    api_.cuModuleLoadData = [](CUmodule* m, const void* image) {
      FakeDriver* f = instance();
      ++f->loads;
      if (f->on_load) {
        const CUresult r = f->on_load(image);
        if (r != CUDA_SUCCESS) return r;
      }
      *m = reinterpret_cast<CUmodule>(new char[1]);
      return CUDA_SUCCESS;
    };
    api_.cuModuleUnload = [](CUmodule m) {
      ++instance()->unloads;
      delete[] reinterpret_cast<char*>(m);
      return CUDA_SUCCESS;
    };
    api_.cuModuleGetFunction = [](CUfunction* fn, CUmodule m, const char* name) {
      ++instance()->get_function;
      if (std::strcmp(name, "missing_kernel") == 0) return CUDA_ERROR_NOT_FOUND;
      *fn = reinterpret_cast<CUfunction>(m);  // unique per module, which is all tests need
      return CUDA_SUCCESS;
    };
    api_.cuFuncSetAttribute = [](CUfunction, CUfunction_attribute a, int value) {
      if (a == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        ++instance()->set_attribute;
        instance()->last_smem_attribute = value;
      }
      return CUDA_SUCCESS;
    };
    api_.cuLaunchKernel = [](CUfunction f, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void**, void**) {
      ++instance()->launches;
      return instance()->on_launch ? instance()->on_launch(f, "") : CUDA_SUCCESS;
    };
    rt::install_driver_for_testing(&api_);
  }
  ~FakeDriver() {
    rt::install_driver_for_testing(nullptr);
    current() = nullptr;
    instance() = nullptr;
  }
  FakeDriver(const FakeDriver&) = delete;
  FakeDriver& operator=(const FakeDriver&) = delete;

  const rt::DriverApi& api() const { return api_; }
  /// Re-installs after a test edited api() entries through mutable_api().
  rt::DriverApi& mutable_api() { return api_; }
  void reinstall() { rt::install_driver_for_testing(&api_); }

  static CUcontext context_of(int device) {
    return reinterpret_cast<CUcontext>(static_cast<std::uintptr_t>(0x1000 + 0x100 * device));
  }
  static CUcontext& current() {
    thread_local CUcontext ctx = nullptr;
    return ctx;
  }

 private:
  static FakeDriver*& instance() {
    static FakeDriver* f = nullptr;
    return f;
  }
  rt::DriverApi api_;
};

}  // namespace rajit::test
