#!/usr/bin/env bash
# Configures and builds recserve into ${BUILD_DIR:-build} (Release, ccache when present).
# Used by run.sh, test.sh and deploy/docker.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${launcher[@]}" ${CMAKE_EXTRA:-} >/dev/null
# TARGETS (space-separated) builds only those; default everything, tests included.
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build" -j"$jobs" "${targets[@]}"
