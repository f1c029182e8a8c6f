#!/usr/bin/env bash
## Installs what the build needs (Debian packages by name), then configures and builds rajit in build/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
[ -f /usr/include/fmt/format.h ] || need+=(libfmt-dev)
[ -f /usr/include/doctest/doctest.h ] || need+=(doctest-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
[ -f /usr/include/CLI/CLI.hpp ] || need+=(libcli11-dev)
# clang and its libFuzzer/sanitizer runtimes: scripts/sanitize.sh (run by scripts/test.sh).
command -v clang++ >/dev/null || need+=(clang)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
  need+=(libclang-rt-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq "${need[@]}" >&2
fi

# The CUDA toolkit supplies headers (cuda.h, nvrtc.h) at build time and libnvrtc at run time;
# libcuda is only needed to run kernels. $RAJIT_CUDA_HOME, then $CUDA_HOME, then /usr/local/cuda.
cuda_home="${RAJIT_CUDA_HOME:-${CUDA_HOME:-/usr/local/cuda}}"
if [ ! -f "$cuda_home/include/cuda.h" ]; then
  if ! [ -f /usr/include/cuda.h ]; then
    echo "setup: no CUDA toolkit headers in $cuda_home; installing Debian's nvidia-cuda-toolkit" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq nvidia-cuda-toolkit >&2
  fi
  cuda_home=/usr
fi
export PATH="$cuda_home/bin:$PATH"
export LD_LIBRARY_PATH="$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCUDAToolkit_ROOT="$cuda_home" >&2
cmake --build build -j "$jobs" >&2
