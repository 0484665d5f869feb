#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds recserve and runs the whole test suite.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/deploy/scripts/setup-debian.sh"
export BUILD_DIR=${BUILD_DIR:-$root/build}
bash "$root/deploy/scripts/build.sh"
cd "$BUILD_DIR"
ctest -j"${JOBS:-$(nproc)}" --output-on-failure --timeout 1500
