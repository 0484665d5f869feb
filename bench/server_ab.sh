#!/usr/bin/env bash
# Two recserve builds side by side in one run: the same bundle, the same open-loop load
# (recserve-load, Poisson arrivals), the servers taking turns round by round, each round
# on a fresh process. Prints every round's line and, per server, the median over rounds
# of p50, p99 and server CPU per request, with B's ratio to A. For "did this change make
# the request path slower": A = a build of the old commit, B = the new one.
#
#   bash bench/server_ab.sh OLD_BUILD NEW_BUILD BUNDLE_DIR WORLD_DIR [RATE] [SECONDS] [ROUNDS]
#   e.g. bash bench/server_ab.sh /work/old/build build /work/bench/models-small/1 /work/bench/world-small 600 15 4
#
# The load generator is NEW_BUILD's. Both servers run with their defaults plus a metrics
# endpoint on a free port (as in production, so the request metrics are recorded).
set -euo pipefail
a_build=$1
b_build=$2
bundle=$3
world=$4
rate=${5:-600}
seconds=${6:-15}
rounds=${7:-4}
work=$(mktemp -d /tmp/recserve-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT

run() {  # run NAME BUILD ROUND
  local name=$1 build=$2 round=$3
  local models="$work/models-$name"
  rm -rf "$models" "$work/port"
  mkdir -p "$models"
  cp -r "$bundle" "$models/1"
  "$build/server/recserve" --model_base_path="$models" --port=0 --admin_port=0 --metrics_port=0 \
    --port_file="$work/port" 2>"$work/log-$name" &
  local pid=$!
  while [ ! -s "$work/port" ]; do sleep 0.1; done
  local port
  read -r port _ <"$work/port"
  until "$b_build/server/recserve-cli" health --address="127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done
  local line
  line=$("$b_build/bench/recserve-load" --address="127.0.0.1:$port" --world="$world" --rate="$rate" \
    --seconds="$seconds" --server_pid=$pid 2>&1 | grep -E "^target")
  echo "round $round $name: $line"
  echo "$name $line" >>"$work/lines"
  kill -TERM $pid
  wait $pid || true
}

isa=$(ONEDNN_VERBOSE=1 timeout 60 "$b_build/bench/recserve-ranker-bench" --benchmark_min_time=0.001 2>&1 |
  sed -n 's/^onednn_verbose,info,cpu,isa://p' | head -1)
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; oneDNN ISA: $isa"
echo "A = $a_build, B = $b_build; bundle $bundle; $rate/s for $seconds s, $rounds rounds"
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    run A "$a_build" "$round"
    run B "$b_build" "$round"
  else
    run B "$b_build" "$round"
    run A "$a_build" "$round"
  fi
done
# Medians over rounds: fields "p50 X", "p99 X" and "CPU X ms/request" of each line.
awk '
  { for (i = 1; i <= NF; i++) {
      if ($i == "p50") p50[$1] = p50[$1] " " $(i + 1)
      if ($i == "p99") p99[$1] = p99[$1] " " $(i + 1)
      if ($i == "CPU") cpu[$1] = cpu[$1] " " $(i + 1)
      if ($i ~ /^ok$/) { split($(i + 1), f, "/"); failed[$1] += f[2] - f[1] } } }
  function median(s,   n, v, i, j, t) {
    n = split(s, v, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  END {
    printf "| server | median p50 ms | median p99 ms | median server CPU ms/request | failed |\n|---|---|---|---|---|\n"
    for (s in p50) printf "| %s | %.3f | %.3f | %.3f | %d |\n", s, median(p50[s]), median(p99[s]), median(cpu[s]), failed[s]
    printf "B / A: p50 %.2fx, p99 %.2fx, CPU per request %.2fx\n", median(p50["B"]) / median(p50["A"]),
      median(p99["B"]) / median(p99["A"]), median(cpu["B"]) / median(cpu["A"])
  }' "$work/lines"
