#!/usr/bin/env bash
## Set up, build, and run every test tier (host, nvrtc, gpu); a tier without its hardware is Skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cd build
ctest --output-on-failure --timeout 3000 "$@"
