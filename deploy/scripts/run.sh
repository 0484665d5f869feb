#!/usr/bin/env bash
# Sets up a Debian 12 machine, builds recserve, makes a default model bundle from the
# small synthetic world if there is none yet, and starts the server in the foreground.
#   bash deploy/scripts/run.sh [extra recserve flags]
# Then, in another shell:  build/server/recserve-cli recommend --events=17:click,42:view
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/deploy/scripts/setup-debian.sh"
export BUILD_DIR=${BUILD_DIR:-$root/build}
TARGETS="recserve recserve-cli recserve-datagen recserve-train recserve-compress" \
  bash "$root/deploy/scripts/build.sh"
models=${RECSERVE_MODELS:-$root/models/default}
if ! ls "$models"/*/READY >/dev/null 2>&1; then
  echo "run: no model under $models; generating the small synthetic world and training one"
  world=${RECSERVE_WORLD:-$root/out/world-small}
  [ -f "$world/world.txt" ] || "$BUILD_DIR/train/recserve-datagen" --preset=small --out="$world"
  "$BUILD_DIR/train/recserve-train" --world="$world" --model_dir="$models"
fi
echo "run: starting recserve on port ${PORT:-8500} (admin 8501 on loopback); Ctrl-C stops it"
echo "run: try  $BUILD_DIR/server/recserve-cli recommend --events=17:click,42:view --n=10"
exec "$BUILD_DIR/server/recserve" --model_base_path="$models" --port="${PORT:-8500}" "$@"
