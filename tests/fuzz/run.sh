#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, RECSERVE_FUZZ=ON: AddressSanitizer,
# UndefinedBehaviorSanitizer and libFuzzer) in a build directory of their own, then per
# target:
#   1. replays every input in tests/fuzz/regressions/<target>/ once (each one crashed the
#      target before its fix);
#   2. fuzzes for FUZZ_SECONDS, starting from the seeds fuzz_seeds writes, the checked-in
#      corpus (tests/fuzz/corpus/<target>/) and the regression inputs, with the target's
#      dictionary (tests/fuzz/dict/<target>.dict) when there is one.
# A crash, leak, sanitizer report, failed property (FUZZ_CHECK), input slower than
# -timeout or memory past -rss_limit_mb fails the target; libFuzzer saves the input under
# $FUZZ_BUILD_DIR/fuzz-artifacts/<target>/. Fix the bug, then copy the input into
# tests/fuzz/regressions/<target>/ so every later run replays it.
# The same clang build compiles the server binary with clang's thread-safety analysis
# (-DRECSERVE_THREAD_SAFETY_ANALYSIS=ON, docs/architecture.md "Concurrency"): a lock
# annotation broken anywhere in the server or engine fails the build, before any fuzzing.
# deploy/scripts/test.sh runs this (RECSERVE_SKIP_CLANG=1 skips it).
#
# Environment: FUZZ_SECONDS (default 30), FUZZ_TARGETS (default all, space-separated),
# FUZZ_BUILD_DIR (default <repo>/build-fuzz), FUZZ_BUILD=0 to use the build as it is,
# FUZZ_FLAGS (more libFuzzer flags, e.g. "-jobs=2 -workers=2"), JOBS (build parallelism).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-30}
all_targets="fuzz_safetensors fuzz_onnx fuzz_manifest fuzz_hnsw_graph fuzz_event_csv fuzz_ratings_csv fuzz_request"
read -r -a targets <<<"${FUZZ_TARGETS:-$all_targets}"

if [[ "${FUZZ_BUILD:-1}" != 0 ]]; then
  if ! command -v clang++ >/dev/null; then
    echo "fuzz: clang++ not found (deploy/scripts/setup-debian.sh installs clang)" >&2
    exit 1
  fi
  # The clang build configuration; the libraries' sanitizer flags are in CMakeLists.txt.
  BUILD_DIR=$build BUILD_TYPE=RelWithDebInfo \
    CMAKE_EXTRA="-DCMAKE_CXX_COMPILER=clang++ -DRECSERVE_FUZZ=ON -DRECSERVE_THREAD_SAFETY_ANALYSIS=ON -DRECSERVE_BUILD_TESTS=OFF -DRECSERVE_BUILD_BENCH=OFF" \
    TARGETS="recserve ${targets[*]} fuzz_seeds" bash "$root/deploy/scripts/build.sh"
fi

seeds=$build/fuzz-seeds
rm -rf "$seeds"
"$build/tests/fuzz/fuzz_seeds" "$seeds" "$root/tests/data/online-retail-slice.csv.gz"

# -timeout: a single input running this long is a hang (the slowest seed takes well under
# a second even under the sanitizers on a loaded machine). -rss_limit_mb: the readers'
# own limits keep honest inputs far below it.
common=(-timeout=25 -rss_limit_mb=2048 -print_final_stats=1)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
passed=0
failed=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/$t
  regressions=$root/tests/fuzz/regressions/$t
  log=$build/fuzz-logs/$t.log
  artifacts=$build/fuzz-artifacts/$t/
  mkdir -p "$build/fuzz-logs" "$artifacts" "$build/fuzz-corpus/$t"
  : >"$log"
  ok=1

  mapfile -t replay < <(find "$regressions" -type f ! -name README.md 2>/dev/null | sort)
  if ((${#replay[@]} > 0)) && ! "$bin" "${common[@]}" "${replay[@]}" >>"$log" 2>&1; then
    echo "fuzz: $t: a regression input fails again" >&2
    ok=0
  fi

  if ((ok)); then
    dirs=("$build/fuzz-corpus/$t" "$seeds/$t")
    for d in "$root/tests/fuzz/corpus/$t" "$regressions"; do
      if [[ -d "$d" ]]; then dirs+=("$d"); fi
    done
    dict=()
    if [[ -f "$root/tests/fuzz/dict/$t.dict" ]]; then dict=(-dict="$root/tests/fuzz/dict/$t.dict"); fi
    # shellcheck disable=SC2086
    if ! "$bin" "${common[@]}" "${dict[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts" \
        ${FUZZ_FLAGS:-} "${dirs[@]}" >>"$log" 2>&1; then
      echo "fuzz: $t: found an input that fails; saved in $artifacts" >&2
      ok=0
    fi
  fi

  if ((ok)); then
    passed=$((passed + 1))
    echo "fuzz: $t: ok ($(grep -E '^stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}') runs in ${seconds}s;" \
      "$(grep -cE '^#[0-9]+.*(NEW|REDUCE)' "$log") new inputs)"
  else
    failed+=("$t")
    tail -n 60 "$log" >&2
  fi
done
echo "fuzz: $passed passed, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
  echo "fuzz: failed: ${failed[*]} (logs in $build/fuzz-logs)" >&2
  exit 1
fi
