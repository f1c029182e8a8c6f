/// libFuzzer target: the disk-cache entry parser is total over every byte string, and accepts only what encode_cache_entry wrote for that key.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

#include "runtime/disk_cache.hpp"

namespace {
void require(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

// Input: "<key>\n<file bytes>". Checks: no crash or out-of-bounds read on any bytes; an accepted
// file's payload lies inside it and re-encodes to the same file; and encoding then parsing any
// (key, payload) round-trips.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t cut = all.find('\n');
  const std::string_view key = all.substr(0, cut == std::string_view::npos ? 0 : cut);
  const std::string_view body = cut == std::string_view::npos ? all : all.substr(cut + 1);
  // A heap copy of exactly the file's size, so that ASan sees any read past its end.
  const std::vector<char> file(body.begin(), body.end());
  const rajit::rt::ParsedCacheEntry parsed = rajit::rt::parse_cache_entry(file, key);
  if (!parsed.problem) {
    require(parsed.payload_offset + parsed.payload_size == file.size());
    const std::span<const char> payload(file.data() + parsed.payload_offset, parsed.payload_size);
    require(rajit::rt::encode_cache_entry(key, payload) == file);
  } else {
    require(!parsed.problem->empty());
  }
  const std::vector<char> encoded =
      rajit::rt::encode_cache_entry(key, std::span<const char>(body.data(), body.size()));
  const rajit::rt::ParsedCacheEntry again = rajit::rt::parse_cache_entry(encoded, key);
  require(!again.problem && again.payload_size == body.size());
  (void)rajit::rt::is_valid_cache_file_name(body);
  return 0;
}
