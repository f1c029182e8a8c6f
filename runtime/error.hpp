/// The runtime's exception hierarchy, kept apart so every layer can catch rajit errors without pulling in driver or NVRTC code.
#pragma once

#include <cuda.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace rajit::rt {

/// Base of every error the runtime throws; catch this to handle "anything rajit".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// libcuda could not be loaded or initialised (no GPU, no driver, driver too old).
/// Thrown by the first use of driver(), never by loading the library (S29).
class NoDriverError : public Error {
 public:
  explicit NoDriverError(const std::string& reason);
  /// The probe's reason alone, without the "CUDA driver unavailable: " prefix.
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string reason_;
};

/// A driver API call returned something other than CUDA_SUCCESS.
class DriverError : public Error {
 public:
  /// `call` is the entry point's name ("cuModuleLoadData") or, failing that, the checked expression.
  DriverError(CUresult result, std::string call, const std::string& message);
  CUresult result() const noexcept { return result_; }
  /// Valid for the lifetime of this exception object.
  const char* call() const noexcept { return call_.c_str(); }

 private:
  CUresult result_;
  std::string call_;
};

/// NVRTC itself failed (library missing, out of memory, invalid option), as opposed to rejecting
/// the source, which is a CompileError or a CompileResult with ok = false.
class NvrtcError : public Error {
 public:
  /// `result` is an nvrtcResult, or kNotLoaded when libnvrtc could not be loaded at all.
  NvrtcError(int result, std::string call, const std::string& message);
  static constexpr int kNotLoaded = -1;
  int result() const noexcept { return result_; }
  const char* call() const noexcept { return call_.c_str(); }

 private:
  int result_;
  std::string call_;
};

/// NVRTC ran and rejected the source. what() is a summary line, at most kMaxWhatLogLines lines
/// of the log and a pointer to the full log and the dumped source (S31).
class CompileError : public Error {
 public:
  static constexpr int kMaxWhatLogLines = 30;

  CompileError(std::string program_name, std::string arch, std::string log,
               std::vector<std::string> options, std::filesystem::path source_path);

  /// The full NVRTC log, never truncated.
  const std::string& log() const noexcept { return log_; }
  const std::string& program_name() const noexcept { return program_name_; }
  const std::string& arch() const noexcept { return arch_; }
  const std::vector<std::string>& options() const noexcept { return options_; }
  /// Where the rejected source was dumped; empty when it could not be written.
  const std::filesystem::path& source_path() const noexcept { return source_path_; }

 private:
  std::string program_name_;
  std::string arch_;
  std::string log_;
  std::vector<std::string> options_;
  std::filesystem::path source_path_;
};

}  // namespace rajit::rt
