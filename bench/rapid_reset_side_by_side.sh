#!/usr/bin/env bash
# HTTP/2 rapid reset and open-stream floods against two recserve binaries, side by side:
# each attack on a fresh server (RSS figures from bench/http2_rapid_reset.py), then how
# the server counted the Recommend calls (recserve_requests_total, codes seen).
#   bash bench/rapid_reset_side_by_side.sh BEFORE_BINARY AFTER_BINARY MODEL_BASE_PATH [PORT]
# Attacks: one burst of 20,000 resets; 20,000 streams held open; three bursts of 20,000
# resets 6 s apart on the same connection.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
before=$1 after=$2 models=$3 port=${4:-18600}
metrics_port=$((port + 1))
log=$(mktemp)
for binary in "$before" "$after"; do
  for attack in "" --hold_open "--streams=60000 --burst=20000 --gap=6"; do
    "$binary" --model_base_path="$models" --port="$port" --admin_port=-1 --metrics_port="$metrics_port" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do grep -q "now serving" "$log" && break; sleep 0.2; done
    echo "== $binary ${attack:-(rapid reset)}"
    /usr/bin/python3 "$here/http2_rapid_reset.py" --port="$port" --pid="$pid" --settle=5 $attack
    echo "calls: $(curl -s "http://127.0.0.1:$metrics_port/metrics" |
      sed -n 's/^recserve_requests_total{code="\([A-Z_]*\)",method="Recommend"[^}]*} \([1-9][0-9]*\)$/\1 \2/p' | paste -sd,)"
    echo "log lines: $(grep -c 'malformed Recommend' "$log" || true) malformed-request lines"
    kill "$pid"
    wait "$pid" || true
  done
done
rm -f "$log"
