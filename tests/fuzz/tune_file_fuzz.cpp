/// libFuzzer target: the tune-file parser never crashes on any bytes and throws only TuneFileError.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tuner/tune_cache.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    (void)rajit::tune::parse_tune_file(text);
  } catch (const rajit::tune::TuneFileError&) {  // the one documented error
  }
  return 0;
}
