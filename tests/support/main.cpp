/// Shared doctest main of the three tiers: a tier without its hardware exits 77 (CTest: Skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "tests/support/probe.hpp"

int main(int argc, char** argv) {
  const rajit::test::Probe probe = rajit::test::probe(RAJIT_TEST_TIER);
  if (!probe.ok && !rajit::test::is_query(argc, argv)) {
    std::fprintf(stderr, "SKIPPED %s tests: %s\n", RAJIT_TEST_TIER, probe.reason.c_str());
    return 77;
  }
  doctest::Context ctx(argc, argv);
  for (const std::string& suite : probe.unsupported_suites) {
    std::fprintf(stderr, "excluding test suite %s on this device\n", suite.c_str());
    ctx.addFilter("test-suite-exclude", suite.c_str());
  }
  return ctx.run();
}
