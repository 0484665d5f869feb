#!/usr/bin/env bash
# Installs the Debian 12 packages recserve needs to build, run and test.
# Idempotent: installs only what is missing. Needs root (or sudo) the first time.
set -euo pipefail

# RECSERVE_SETUP=build installs only what compiling needs (the container's build stage);
# the default, all, adds the peers and tools the tests and benchmarks run.
build_packages=(
  build-essential cmake ccache pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev libabsl-dev prometheus-cpp-dev libssl-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libonnx-dev libhnswlib-dev
  # libdnnl-dev only recommends it, but its CMake config (GPU runtime OCL) requires OpenCL.
  ocl-icd-opencl-dev
)
test_packages=(
  python3-grpcio python3-protobuf python3-torch python3-yaml python3-kubernetes
  prometheus nginx-light
  # The clang build (tests/fuzz/run.sh: thread-safety analysis and the fuzz targets):
  # clang, its libFuzzer and sanitizer runtimes, and its OpenMP runtime (find_package(OpenMP)).
  clang libclang-rt-14-dev libomp-dev
)
case "${RECSERVE_SETUP:-all}" in
  build) packages=("${build_packages[@]}") ;;
  all) packages=("${build_packages[@]}" "${test_packages[@]}") ;;
  *) echo "setup: RECSERVE_SETUP must be build or all, not '${RECSERVE_SETUP}'" >&2; exit 2 ;;
esac
if [[ "${RECSERVE_SETUP_EXTRA:-}" != "" ]]; then
  # shellcheck disable=SC2206
  packages+=(${RECSERVE_SETUP_EXTRA})
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
