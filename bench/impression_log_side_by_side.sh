#!/usr/bin/env bash
# The impression log's cost on the request path: one recserve binary under the same
# recserve-load run with the log off, at 1% and at 100% of answers, in interleaved rounds
# (off, 1%, 100%, off, ...) so drift of a shared machine falls on every setting alike.
# Prints each run's line, then per setting the mean p50/p99 and server CPU per request
# with ratios to "off", and the records the log wrote and dropped.
#   bash bench/impression_log_side_by_side.sh BUILD_DIR WORLD MODEL_BASE_PATH [RATE] [SECONDS] [ROUNDS] [PORT]
set -euo pipefail
build=$1 world=$2 models=$3 rate=${4:-300} seconds=${5:-20} rounds=${6:-3} port=${7:-18900}
metrics_port=$((port + 2))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=$work/results
for round in $(seq "$rounds"); do
  for share in off 0.01 1; do
    flags=()
    if [ "$share" != off ]; then
      rm -rf "$work/log"
      flags=(--impression_log_dir="$work/log" --impression_log_share="$share")
    fi
    "$build/server/recserve" --model_base_path="$models" --port="$port" --admin_port=-1 \
      --metrics_port="$metrics_port" "${flags[@]}" >"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do grep -q "now serving" "$work/server.log" && break; sleep 0.2; done
    line=$("$build/bench/recserve-load" --address=127.0.0.1:$port --world="$world" --rate="$rate" \
      --seconds="$seconds" --server_pid="$pid" | grep '^target')
    counts=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
      sed -n 's/^recserve_impression_records_total{result="\([a-z_]*\)"} \([0-9.e+]*\)$/\1=\2/p' | paste -sd' ')
    kill "$pid"
    wait "$pid" || true
    echo "round $round share $share: $line ${counts:+ log: $counts}"
    p50=$(sed -n 's/.* p50 \+\([0-9.]*\) .*/\1/p' <<<"$line")
    p99=$(sed -n 's/.* p99 \+\([0-9.]*\) .*/\1/p' <<<"$line")
    cpu=$(sed -n 's/.*server CPU \([0-9.]*\) ms.*/\1/p' <<<"$line")
    echo "$share $p50 $p99 $cpu" >>"$results"
  done
done
awk '{n[$1]++; p50[$1]+=$2; p99[$1]+=$3; cpu[$1]+=$4}
  END {
    printf "%-6s %9s %9s %16s %10s %10s %10s\n", "share", "p50 ms", "p99 ms", "CPU ms/request", "p50 x off", "p99 x off", "CPU x off"
    split("off 0.01 1", order, " ")
    for (i = 1; i <= 3; i++) {
      s = order[i]
      printf "%-6s %9.3f %9.3f %16.4f %10.3f %10.3f %10.3f\n", s, p50[s]/n[s], p99[s]/n[s], cpu[s]/n[s],
        (p50[s]/n[s])/(p50["off"]/n["off"]), (p99[s]/n[s])/(p99["off"]/n["off"]), (cpu[s]/n[s])/(cpu["off"]/n["off"])
    }
  }' "$results"
