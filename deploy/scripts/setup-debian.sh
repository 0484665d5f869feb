#!/usr/bin/env bash
# Installs the Debian 12 packages recserve needs to build, run and test.
# Idempotent: installs only what is missing. Needs root (or sudo) the first time.
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev libabsl-dev prometheus-cpp-dev libssl-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libonnx-dev libhnswlib-dev
  python3-grpcio python3-protobuf python3-torch prometheus
)
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
