/// libFuzzer target: the spec, tile, arch, bias and dtype key parsers never crash, and what they accept round-trips.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "generator/spec.hpp"

namespace {
// A property violation is a crash, so that the fuzzer stops and keeps the input.
void require(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace rajit::gen;
  try {
    const AttentionSpec s = parse_spec_key(text);
    require(parse_spec_key(s.key()) == s);
    (void)validate(s);
    (void)validate(s, TileConfig{}, 232448);
  } catch (const SpecError&) {
  }
  try {
    const TileConfig t = parse_tile_key(text);
    require(parse_tile_key(t.key()) == t);
    (void)entry_name(AttentionSpec{}, t);
  } catch (const SpecError&) {
  }
  try {
    const Arch a = parse_arch(text);
    require(parse_arch(a.name()) == a);
    (void)a.max_shared_bytes();
  } catch (const SpecError&) {
  }
  try {
    (void)parse_bias(text);
  } catch (const SpecError&) {
  }
  try {
    (void)parse_dtype(text);
  } catch (const SpecError&) {
  }
  return 0;
}
