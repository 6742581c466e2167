#!/usr/bin/env bash
# The one device script (issue 6): on a GPU machine, builds the CUDA addon, runs the CUDA
# parity tests, a compute-sanitizer memcheck pass over a small subset, and the GPU
# benchmarks against PyTorch, then prints a summary. Meant to finish in under 8 minutes.
#
#   bench/gpu/run.sh            # everything
#   SKIP_BUILD=1 bench/gpu/run.sh   # reuse build-cuda/Release/mstar.node (e.g. built on a
#                                   # machine without a GPU and carried over: saves ~3-5 min)
#
# Every step has its own time limit and log (in $OUT, default bench/out/gpu), and a failed
# step does not stop the later ones, so one run says as much as it can. Exit status: 0 when
# every step that ran passed. Needs: node >= 20, nvcc, cmake, an NVIDIA GPU (cc >= 8.0);
# node_modules/ (npm ci is tried when it is missing; the device machine may have no network).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
export NO_COLOR=1  # plain logs
started=$(date +%s)
summary=()
failed=0

# step NAME LIMIT_SECONDS COMMAND...: runs with a time limit, logs to $OUT/NAME.log, keeps score.
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local secs=$(($(date +%s) - t0))
  tail -n 25 "$OUT/$name.log"
  local verdict=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then verdict="TIMEOUT"; elif [ "$rc" -ne 0 ]; then verdict="FAILED (rc $rc)"; fi
  [ "$verdict" = ok ] || failed=1
  summary+=("$(printf '%-12s %-16s %4ss  %s' "$name" "$verdict" "$secs" "$OUT/$name.log")")
  return "$rc"
}

skip() {
  summary+=("$(printf '%-12s %-16s        %s' "$1" "skipped" "$2")")
}

echo "=== machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
echo "node $(node --version 2>&1); $(nvcc --version 2>&1 | tail -n 1); $(cmake --version 2>&1 | head -n 1)"
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')

# The device machine may have no network: a node_modules tarball made on the build machine
# (tar czf node_modules.tgz node_modules) is unpacked first when present.
tarball=${NODE_MODULES_TARBALL:-node_modules.tgz}
if [ ! -x node_modules/.bin/vitest ] && [ -f "$tarball" ]; then
  step unpack 120 tar xzf "$tarball"
fi
if [ ! -x node_modules/.bin/vitest ] || [ ! -e node_modules/cmake-js ]; then
  step deps 180 npm ci --no-audit --no-fund --ignore-scripts
else
  skip deps "node_modules present"
fi

if [ "${SKIP_BUILD:-0}" = 1 ] && [ -f build-cuda/Release/mstar.node ]; then
  skip build "SKIP_BUILD=1"
else
  # Only this GPU's architecture: about half the compile time of the default 80+90 build.
  arch_flag=()
  if [ -n "$cc" ]; then arch_flag=("--CDCMAKE_CUDA_ARCHITECTURES=${cc}-real"); fi
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) step build 300 npx cmake-js rebuild --out build-cuda "${arch_flag[@]}"
fi

if [ -f build-cuda/Release/mstar.node ]; then
  # MSTAR_REQUIRE_GPU=1: a GPU suite that would skip fails instead.
  MSTAR_REQUIRE_GPU=1 step tests 240 npx vitest run test/cuda.test.ts
  if command -v compute-sanitizer > /dev/null; then
    MSTAR_CUDA_CACHING=0 step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 99 \
      --target-processes all node --import tsx bench/gpu/smoke.ts
  else
    skip memcheck "compute-sanitizer not on PATH"
  fi
  step bench 180 npx tsx bench/gpu/bench.ts
else
  skip tests "no build"
  skip memcheck "no build"
  skip bench "no build"
fi

echo
echo "=== summary ($(($(date +%s) - started))s)"
for line in "${summary[@]}"; do echo "$line"; done
grep -h "Tests \|Test Files\|ERROR SUMMARY\|smoke: ok" "$OUT"/tests.log "$OUT"/memcheck.log 2>/dev/null
if [ -f "$OUT/bench.log" ]; then sed -n '/^device:/,/^BENCH_JSON/p' "$OUT/bench.log"; fi
exit "$failed"
