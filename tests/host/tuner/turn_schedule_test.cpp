/// Host tests for the launch order of kernels timed in turn (tune::TurnSchedule, `rajit bench`).
#include <doctest/doctest.h>

#include <cstddef>
#include <set>
#include <vector>

#include "tuner/bench.hpp"

using rajit::tune::TurnSchedule;

namespace {

struct Case {
  int variants, turn, sets, timed;
};

}  // namespace

TEST_CASE("turn schedule: every timed launch follows its own kernel, on the least recently used set") {
  const Case cases[] = {{2, 10, 5, 100}, {2, 10, 12, 100}, {2, 1, 5, 100}, {2, 1, 4, 30},
                        {2, 3, 6, 7},    {3, 4, 5, 9},     {1, 10, 5, 50}, {2, 2, 1, 3}};
  for (const Case& c : cases) {
    CAPTURE(c.variants);
    CAPTURE(c.turn);
    CAPTURE(c.sets);
    const TurnSchedule order(c.variants, c.turn, c.sets, c.timed);
    const std::size_t n = order.launches();
    std::vector<std::size_t> timed(static_cast<std::size_t>(c.variants), 0);
    std::vector<std::set<std::size_t>> sets_seen(static_cast<std::size_t>(c.variants));
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t v = order.variant(k);
      REQUIRE(v < static_cast<std::size_t>(c.variants));
      REQUIRE(order.set(k) < static_cast<std::size_t>(c.sets));
      sets_seen[v].insert(order.set(k));
      // The set of launch k is the one no launch of the last cycle() - 1 has read.
      for (std::size_t j = k >= order.cycle() ? k - order.cycle() + 1 : 0; j < k; ++j) {
        CHECK(order.set(j) != order.set(k));
      }
      if (!order.timed(k)) continue;
      ++timed[v];
      if (c.variants > 1 && c.turn > 1) {  // right after a launch of the same kernel
        REQUIRE(k > 0);
        CHECK(order.variant(k - 1) == v);
      }
    }
    for (std::size_t v = 0; v < timed.size(); ++v) {
      CHECK(timed[v] >= static_cast<std::size_t>(c.timed));
      CHECK(timed[v] == timed[0]);  // every kernel timed as often
      CHECK(sets_seen[v].size() == order.cycle());  // and over every set in the cycle
    }
  }
}

TEST_CASE("turn schedule: one kernel, or turns of one, times every launch") {
  const TurnSchedule alone(1, 10, 5, 50);
  CHECK(alone.launches() == 50);
  for (std::size_t k = 0; k < alone.launches(); ++k) CHECK(alone.timed(k));
  const TurnSchedule strict(2, 1, 5, 50);
  CHECK(strict.launches() == 100);
  for (std::size_t k = 0; k < strict.launches(); ++k) {
    CHECK(strict.timed(k));
    CHECK(strict.variant(k) == k % 2);
  }
  // Strict alternation over an even number of sets would pair each kernel with half of them.
  CHECK(TurnSchedule(2, 1, 4, 10).cycle() == 3);
  CHECK(TurnSchedule(2, 10, 4, 10).cycle() == 4);
}
