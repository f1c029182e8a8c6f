/// Host tests for parsing NVRTC's ptxas -v report into ResourceUsage (the format is NVRTC 13's, captured verbatim).
#include <doctest/doctest.h>

#include "runtime/nvrtc.hpp"

using rajit::rt::parse_ptxas_resources;

namespace {

// Two entries plus a non-inlined device function whose properties come after the last entry.
constexpr const char* kLog =
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function 'bad' for 'sm_80'\n"
    "ptxas info    : Function properties for bad\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 8 registers, used 0 barriers, 360 bytes cmem[0]\n"
    "ptxas info    : Compile time = 1.200 ms\n"
    "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
    "ptxas info    : Function properties for k\n"
    "ptxas         .     256 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads\n"
    "ptxas info    : Used 24 registers, used 1 barriers, 1024 bytes smem, 256 bytes cumulative "
    "stack size, 364 bytes cmem[0]\n"
    "ptxas info    : Compile time = 6.653 ms\n"
    "ptxas info    : Function properties for _Z1fPfi\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";

}  // namespace

TEST_CASE("ptxas report: the named entry's registers, smem, spills and stack are read") {
  const rajit::rt::ResourceUsage k = parse_ptxas_resources(kLog, "k");
  CHECK(k.registers == 24);
  CHECK(k.shared_bytes == 1024);
  CHECK(k.spill_store_bytes == 12);
  CHECK(k.spill_load_bytes == 8);
  CHECK(k.stack_bytes == 256);
}

TEST_CASE("ptxas report: an entry without static smem reports 0 bytes, not unknown") {
  const rajit::rt::ResourceUsage bad = parse_ptxas_resources(kLog, "bad");
  CHECK(bad.registers == 8);
  CHECK(bad.shared_bytes == 0);
  CHECK(bad.spill_store_bytes == 0);
  CHECK(bad.stack_bytes == 0);
}

TEST_CASE("ptxas report: an empty entry name means the first entry") {
  CHECK(parse_ptxas_resources(kLog, "").registers == 8);
}

TEST_CASE("ptxas report: wgmma serialisation is read for the function it names") {
  // As ptxas 13 writes it, ahead of the entry's section.
  const std::string log =
      "ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are "
      "serialized due to non wgmma instructions defining accumulator registers of a wgmma "
      "between start and end of the pipeline stage in the function 'k'\n" +
      std::string(kLog);
  CHECK(parse_ptxas_resources(log, "k").wgmma_serialized);
  CHECK(parse_ptxas_resources(log, "").wgmma_serialized);
  CHECK_FALSE(parse_ptxas_resources(log, "bad").wgmma_serialized);
  CHECK_FALSE(parse_ptxas_resources(kLog, "k").wgmma_serialized);
  CHECK(parse_ptxas_resources(log, "k").registers == 24);
}

TEST_CASE("ptxas report: an absent entry or an empty log leaves every field unknown") {
  for (const char* log : {kLog, ""}) {
    const rajit::rt::ResourceUsage none = parse_ptxas_resources(log, "nope");
    CHECK(none.registers == -1);
    CHECK(none.shared_bytes == -1);
    CHECK(none.spill_store_bytes == -1);
    CHECK(none.spill_load_bytes == -1);
    CHECK(none.stack_bytes == -1);
  }
}
