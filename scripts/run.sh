#!/usr/bin/env bash
## The main job: set up, build, then run the seeds' RA configuration through rajit end to end.
# With a GPU: generate, compile, run and check against the float64 reference, and time it.
# Without one: generate and compile (NVRTC), and say plainly that the kernel cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
set +e  # setup.sh turned on -e; exit code 77 (no GPU) is handled below
./build/rajit info
./build/rajit run --d-std 56 --r 8 --head-dim 64 --causal --bias column --dtype bf16 \
  --batch 4 --heads 16 --seqlen 4096 "$@"
rc=$?
if [ "$rc" -eq 77 ]; then
  echo "run.sh: kernels generated and compiled; no GPU on this machine, so nothing was run." >&2
  exit 0
fi
exit "$rc"
