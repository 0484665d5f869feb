#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds recserve and runs the whole test suite.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/deploy/scripts/setup-debian.sh"
export BUILD_DIR=${BUILD_DIR:-$root/build}
bash "$root/deploy/scripts/build.sh"
(cd "$BUILD_DIR" && ctest -j"${JOBS:-$(nproc)}" --output-on-failure --timeout 1500)

# The suite again under AddressSanitizer and UndefinedBehaviorSanitizer (leaks included),
# in a build of its own: every test but the whole-training ones (label "training" and
# "quality": 13 minutes and more each under ASan; the trainer's parts, its MLP, item2vec,
# importers and evaluation, are unit tests and run here). RECSERVE_SKIP_ASAN=1 skips it.
if [[ "${RECSERVE_SKIP_ASAN:-}" != 1 ]]; then
  asan_dir=${ASAN_BUILD_DIR:-$root/build-asan}
  BUILD_DIR=$asan_dir BUILD_TYPE=RelWithDebInfo \
    CMAKE_EXTRA="-DRECSERVE_SANITIZE=address,undefined -DRECSERVE_BUILD_BENCH=OFF" \
    bash "$root/deploy/scripts/build.sh"
  (cd "$asan_dir" && ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
    ctest -LE "training|quality" -j"${JOBS:-$(nproc)}" --output-on-failure --timeout 1500)
fi

# The concurrency tests again, built with ThreadSanitizer (label "concurrency"): the
# worker pool, the model manager and its load thread, hot reload under concurrent calls
# without gRPC (reload_stress_test), the log rate limiter, the shadow scorer's queue and
# thread (shadow_scorer_test), and metrics series removed while requests record into them
# (metrics_test). Any report fails the run
# (halt_on_error). Debian's gRPC and Abseil are not TSAN-built; tests/tsan.supp says
# what that hides. RECSERVE_SKIP_TSAN=1 skips this for a quick local run.
if [[ "${RECSERVE_SKIP_TSAN:-}" != 1 ]]; then
  tsan_dir=${TSAN_BUILD_DIR:-$root/build-tsan}
  BUILD_DIR=$tsan_dir BUILD_TYPE=RelWithDebInfo \
    CMAKE_EXTRA="-DRECSERVE_SANITIZE=thread -DRECSERVE_BUILD_BENCH=OFF" \
    TARGETS="worker_pool_test model_manager_test load_thread_test reload_stress_test log_rate_limiter_test shadow_scorer_test metrics_test" \
    bash "$root/deploy/scripts/build.sh"
  (cd "$tsan_dir" && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan.supp" \
    ctest -L concurrency -j"${JOBS:-$(nproc)}" --output-on-failure --timeout 1500)
fi

# --- clang build ------------------------------------------------------------------------
# One clang build (build-fuzz, tests/fuzz/run.sh) does two jobs:
# - the thread-safety analysis (-DRECSERVE_THREAD_SAFETY_ANALYSIS=ON) over the server and
#   the engine: a guarded member touched without its lock, a *Locked function called
#   without the lock, or locks taken against the declared order fail the build
#   (docs/architecture.md, "Concurrency");
# - the libFuzzer targets (the bundle readers, the CSV importers, the request path) with
#   ASan and UBSan: each replays its checked-in regression inputs, then fuzzes for
#   FUZZ_SECONDS (30 by default).
# RECSERVE_SKIP_CLANG=1 skips it.
if [[ "${RECSERVE_SKIP_CLANG:-}" != 1 ]]; then
  FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-$root/build-fuzz} bash "$root/tests/fuzz/run.sh"
fi
# --- end of clang build -----------------------------------------------------------------
