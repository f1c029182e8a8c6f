#!/usr/bin/env bash
## Set up, build, and run every test tier (host, nvrtc, gpu; a tier without its hardware is Skipped), then the ASan+UBSan tiers and the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
(cd build && ctest --output-on-failure --timeout 3000 "$@")
# Reliability stage (docs/reliability.md): RAJIT_SKIP_SANITIZE=1 skips it for a quick local run.
[ "${RAJIT_SKIP_SANITIZE:-0}" = 1 ] || bash scripts/sanitize.sh
