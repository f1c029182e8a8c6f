/// libFuzzer target: the rajit CLI's argument parser (tools/rajit.cpp, built with RAJIT_CLI_FUZZING) never crashes on any argv.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

int rajit_cli_parse_only(int argc, char** argv);  // tools/rajit.cpp

// Input: arguments separated by '\0' (argv[0] is supplied). Parsing runs nothing: no compile,
// no file, no GPU; the flags' spec, shape and tile validation runs too.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args = {"rajit"};
  std::string current;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty()) args.push_back(current);
  if (args.size() > 64) return 0;  // argv length is not what is being tested
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  (void)rajit_cli_parse_only(static_cast<int>(args.size()), argv.data());
  return 0;
}
