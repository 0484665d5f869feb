#!/usr/bin/env bash
# HTTP/2 rapid reset and open-stream floods against two recserve binaries, side by side:
# each attack on a fresh server (RSS figures from bench/http2_rapid_reset.py).
#   bash bench/rapid_reset_side_by_side.sh BEFORE_BINARY AFTER_BINARY MODEL_BASE_PATH [PORT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
before=$1 after=$2 models=$3 port=${4:-18600}
log=$(mktemp)
for binary in "$before" "$after"; do
  for attack in "" --hold_open; do
    "$binary" --model_base_path="$models" --port="$port" --admin_port=-1 --metrics_port=-1 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do grep -q "now serving" "$log" && break; sleep 0.2; done
    echo "== $binary ${attack:-(rapid reset)}"
    /usr/bin/python3 "$here/http2_rapid_reset.py" --port="$port" --pid="$pid" --settle=5 $attack
    kill "$pid"
    wait "$pid" || true
  done
done
rm -f "$log"
