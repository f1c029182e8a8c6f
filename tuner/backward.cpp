/// The backward facade: argument checks, tile choice, kernel lookup and launches (issue 5).
#include "tuner/backward.hpp"

#include <fmt/format.h>

namespace rajit::tune {

std::vector<std::string> check_backward_args(const BackwardArgs& args) {
  return gen::validate(args.spec);
}

std::size_t backward_workspace_bytes(const BackwardArgs&) { return 0; }

BackwardRecord backward(const BackwardArgs& args) {
  if (auto problems = check_backward_args(args); !problems.empty()) {
    throw ArgumentError(std::move(problems));
  }
  // TODO(issue 5): the generated backward kernels replace this.
  throw ArgumentError({"backward: not built yet in this version of rajit"});
}

}  // namespace rajit::tune
