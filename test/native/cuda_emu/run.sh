#!/usr/bin/env bash
# Builds the CUDA kernels for the host emulation (emu.h) with AddressSanitizer and
# UBSan and runs them against float64 references (emu_test.cc). No GPU needed; needs
# g++ with C++20 and the CUDA headers (for cuda_runtime_api.h only).
#   test/native/cuda_emu/run.sh [gemm|elementwise|softmax|layernorm|attention|bag_pool|dwconv2d|nystrom|contrastive|optim]
set -euo pipefail
cd "$(dirname "$0")/../../.."
cuda_include=
candidates=("${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda)
if command -v nvcc > /dev/null; then candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"); fi
for root in "${candidates[@]}"; do
  if [ -n "$root" ] && [ -f "$root/include/cuda_runtime_api.h" ]; then cuda_include=$root/include; break; fi
done
if [ -z "$cuda_include" ]; then
  echo "cuda_emu: skipped, no CUDA headers (set CUDA_HOME)" >&2
  exit 0
fi
out=${CUDA_EMU_OUT:-build-cuda/emu}
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -pthread -fsanitize=address,undefined -fno-sanitize-recover=undefined
  -Wall -Wno-unknown-pragmas -Wno-unused-function -isystem "$cuda_include" -DMSTAR_CUDA_EMULATION)
emu=(-include test/native/cuda_emu/emu.h)
objects=()
pids=()
compile() {  # source object [extra flags]
  local src=$1 obj=$2
  shift 2
  if [ ! -f "$obj" ] || [ -n "$(find "$src" cuda test/native/cuda_emu cpp/core -newer "$obj" \( -name '*.cu*' -o -name '*.h' -o -name '*.cc' \) -print -quit)" ]; then
    g++ "${flags[@]}" "$@" -c "$src" -o "$obj" &
    pids+=($!)
  fi
  objects+=("$obj")
}
for kernel in gemm elementwise softmax layernorm attention bag_pool dwconv2d nystrom contrastive optim; do
  compile "cuda/$kernel.cu" "$out/$kernel.o" -x c++ "${emu[@]}"
done
compile test/native/cuda_emu/emu_test.cc "$out/emu_test.o" "${emu[@]}"
compile test/native/cuda_emu/emu_runtime.cc "$out/emu_runtime.o"
compile cpp/core/error.cc "$out/error.o"
for p in "${pids[@]}"; do wait "$p"; done
g++ "${flags[@]}" -o "$out/emu_test" "${objects[@]}"
ASAN_OPTIONS=detect_leaks=1 "$out/emu_test" "$@"
