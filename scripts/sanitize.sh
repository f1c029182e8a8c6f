#!/usr/bin/env bash
## ASan+UBSan build (clang) of the host and nvrtc tiers, then each libFuzzer target for a bounded time; part of scripts/test.sh.
# Environment: FUZZ_SECONDS (per fuzzer, default 45), RAJIT_SANITIZE_BUILD (default build-sanitize).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${RAJIT_SANITIZE_BUILD:-build-sanitize}"
fuzz_seconds="${FUZZ_SECONDS:-45}"
jobs="$(nproc 2>/dev/null || echo 2)"
cuda_home="${RAJIT_CUDA_HOME:-${CUDA_HOME:-/usr/local/cuda}}"
[ -f "$cuda_home/include/cuda.h" ] || cuda_home=/usr
export LD_LIBRARY_PATH="$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# One clang build serves both: the libraries carry ASan, UBSan and libFuzzer coverage; the test
# tiers link the sanitizers, the fuzzers also link libFuzzer. UBSan findings are fatal.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DCUDAToolkit_ROOT="$cuda_home" -DRAJIT_BUILD_TESTS=ON -DRAJIT_BUILD_FUZZERS=ON \
  -DRAJIT_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=all" >&2
cmake --build "$dir" -j "$jobs" --target rajit_tests_host rajit_tests_nvrtc rajit_cli \
  rajit_cache_worker rajit_fuzz_spec_key rajit_fuzz_render rajit_fuzz_cache_entry \
  rajit_fuzz_cli_args rajit_fuzz_tune_file >&2

# libnvrtc is dlopen'd and not instrumented; measured: the nvrtc tier passes under ASan with leak
# detection on and no other option (docs/reliability.md). Any report aborts the test.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
(cd "$dir" && ctest -L 'host|nvrtc' --output-on-failure --timeout 3000)

# Fuzzers: the checked-in seeds plus what earlier runs found; a crash, a leak or a timeout fails.
for target in spec_key render cache_entry cli_args tune_file; do
  corpus="$dir/fuzz-corpus/$target"
  artifacts="$dir/fuzz-artifacts/$target/"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $target for ${fuzz_seconds}s" >&2
  "$dir/tests/fuzz/rajit_fuzz_$target" -max_total_time="$fuzz_seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$artifacts" \
    "$corpus" "tests/fuzz/corpus/$target" 2>"$dir/fuzz-$target.log" || {
      tail -60 "$dir/fuzz-$target.log" >&2
      echo "fuzz: $target FAILED; reproducer in $artifacts" >&2
      exit 1
    }
  grep -E 'stat::number_of_executed_runs|cov:' "$dir/fuzz-$target.log" | tail -2 >&2
done
echo "sanitize: ASan+UBSan host and nvrtc tiers passed; fuzzers ran ${fuzz_seconds}s each, clean" >&2
