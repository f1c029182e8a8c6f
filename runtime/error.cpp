/// Message formatting for the runtime's exceptions (kept out of the header so what() text is built in one place).
#include "runtime/error.hpp"

#include <fmt/format.h>

#include <string_view>
#include <utility>

namespace rajit::rt {
namespace {

std::string compile_error_what(const std::string& program_name, const std::string& arch,
                               const std::string& log, const std::filesystem::path& source_path) {
  std::string out = fmt::format("NVRTC failed to compile {} for {}\n", program_name, arch);
  // Trailing blank lines would count against the budget without telling the reader anything.
  std::string_view rest(log);
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == '\r' || rest.back() == ' ')) {
    rest.remove_suffix(1);
  }
  int shown = 0;
  int hidden = 0;
  while (!rest.empty()) {
    const std::size_t eol = rest.find('\n');
    const std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
    if (shown < CompileError::kMaxWhatLogLines) {
      out.append(line).push_back('\n');
      ++shown;
    } else {
      ++hidden;
    }
  }
  if (hidden > 0) out += fmt::format("... ({} more log lines)\n", hidden);
  out += fmt::format("full log: CompileError::log(); source: {}",
                     source_path.empty() ? std::string("(not saved)") : source_path.string());
  return out;
}

}  // namespace

NoDriverError::NoDriverError(const std::string& reason)
    : Error("CUDA driver unavailable: " + reason), reason_(reason) {}

DriverError::DriverError(CUresult result, std::string call, const std::string& message)
    : Error(message), result_(result), call_(std::move(call)) {}

NvrtcError::NvrtcError(int result, std::string call, const std::string& message)
    : Error(message), result_(result), call_(std::move(call)) {}

CompileError::CompileError(std::string program_name, std::string arch, std::string log,
                           std::vector<std::string> options, std::filesystem::path source_path)
    : Error(compile_error_what(program_name, arch, log, source_path)),
      program_name_(std::move(program_name)),
      arch_(std::move(arch)),
      log_(std::move(log)),
      options_(std::move(options)),
      source_path_(std::move(source_path)) {}

}  // namespace rajit::rt
