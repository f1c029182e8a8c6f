/// Runs the built `rajit` binary (RAJIT_CLI_PATH) in a shell and captures exit status and output.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace rajit::test::cli {

/// A fresh folder under the system temp dir, removed with its contents on destruction.
class TempFolder {
 public:
  explicit TempFolder(const std::string& tag) {
    std::random_device rd;
    const auto base = std::filesystem::temp_directory_path();
    for (;;) {
      path_ = base / ("rajit-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
      if (std::filesystem::create_directory(path_)) break;
    }
  }
  ~TempFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Result {
  int exit_code = -1;  ///< WEXITSTATUS, or -1 when the process did not exit normally
  std::string out, err;
  std::string command;
};

/// Runs `program args...` with stdout and stderr captured to files and RAJIT_CACHE_DIR set to
/// `cache_dir` (a fresh folder per test, so no user cache is touched).
inline Result run(const std::string& program, const std::vector<std::string>& args,
                  const std::filesystem::path& cache_dir, const std::string& env_prefix = "") {
  TempFolder io("cli-io");
  Result r;
  std::string cmd = env_prefix + " RAJIT_CACHE_DIR=" + shell_quote(cache_dir.string()) + " " +
                    shell_quote(program);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  r.command = cmd;
  cmd += " >" + shell_quote((io.path() / "out").string()) + " 2>" +
         shell_quote((io.path() / "err").string()) + " </dev/null";
  const int status = std::system(cmd.c_str());
  r.exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  r.out = slurp(io.path() / "out");
  r.err = slurp(io.path() / "err");
  return r;
}

/// The `rajit` binary under test: $RAJIT_CLI_PATH when set (test binaries copied to another
/// machine, e.g. the GPU runner), else the one this build produced.
inline std::string cli_path() {
  const char* env = std::getenv("RAJIT_CLI_PATH");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(RAJIT_CLI_PATH);
}

inline Result rajit(const std::vector<std::string>& args, const std::filesystem::path& cache_dir) {
  return run(cli_path(), args, cache_dir);
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace rajit::test::cli
