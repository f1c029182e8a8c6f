#!/usr/bin/env bash
## compute-sanitizer memcheck and racecheck over rajit's kernels on odd shapes (needs a GPU); exits non-zero on any finding.
# Usage: scripts/sanitize_gpu.sh [DOCTEST_FILTER]
#   Runs `rajit run` (forward + reference check) for each spec in $SPECS and each Tq = Tk in
#   $SEQLENS under each tool in $TOOLS. With DOCTEST_FILTER (e.g. "backward*"), also runs the
#   gpu tier's matching test cases under each tool, so new kernels are added by filter, not code.
# Environment:
#   RAJIT_BIN   folder with rajit and tests/rajit_tests_gpu (or rajit_tests_gpu) (default build)
#   SPECS       comma-separated spec keys (default: the seeds' spec, a head_dim 128 one, plain
#               non-causal attention)
#   SEQLENS     default "1 17 1000"; TOOLS default "memcheck racecheck"; HEADS default 2
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RAJIT_BIN:-build}"
filter="${1:-}"
specs="${SPECS:-fwd.bf16.ds56.r8.d64.causal.colbias,fwd.fp16.ds120.r8.d128.causal.colbias,fwd.bf16.ds64.r0.d64.full.nobias}"
seqlens="${SEQLENS:-1 17 1000}"
tools="${TOOLS:-memcheck racecheck}"
heads="${HEADS:-2}"
cs="$(command -v compute-sanitizer || true)"
[ -n "$cs" ] || cs="${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"
[ -x "$cs" ] || { echo "sanitize_gpu: compute-sanitizer not found" >&2; exit 2; }
gpu_tests="$bin/tests/rajit_tests_gpu"
[ -x "$gpu_tests" ] || gpu_tests="$bin/rajit_tests_gpu"
# One cache for every run: each kernel compiles once, outside the sanitizer's timing.
export RAJIT_CACHE_DIR="${RAJIT_CACHE_DIR:-$(mktemp -d)/rajit-cache}"

# Each run's full output stays in $SANITIZE_LOG_DIR (default: a fresh temporary folder).
logs="${SANITIZE_LOG_DIR:-$(mktemp -d)}"
mkdir -p "$logs"
failures=0
runs=0
run() {
  local label="$1"; shift
  local start=$SECONDS
  runs=$((runs + 1))
  local log="$logs/run$runs.log"
  if "$cs" --error-exitcode 99 --print-limit 20 "$@" > "$log" 2>&1; then
    # The sanitizer's summary and the check's verdict, so a pass shows what was checked.
    echo "PASS $label ($((SECONDS - start)) s): $(grep -hoE '(ERROR|RACECHECK) SUMMARY: .*|-> (PASS|FAIL)|test cases: .*' "$log" | tr '\n' ' ')"
  else
    echo "FAIL $label ($((SECONDS - start)) s), log $log:"; tail -40 "$log"
    failures=$((failures + 1))
  fi
}
for tool in $tools; do
  extra=()
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  for spec in ${specs//,/ }; do
    for t in $seqlens; do
      run "$tool $spec B=1 H=$heads T=$t" --tool "$tool" "${extra[@]}" \
        "$bin/rajit" run --spec "$spec" --batch 1 --heads "$heads" --seqlen "$t" --iters 0
    done
  done
  if [ -n "$filter" ]; then
    run "$tool gpu tests '$filter'" --tool "$tool" "${extra[@]}" "$gpu_tests" -tc="$filter"
  fi
done
echo "sanitize_gpu: $failures of $runs run(s) failing; logs in $logs"
[ "$failures" -eq 0 ]
