#!/usr/bin/env bash
# Roll-outs under load, side by side in one run: p99 and failed requests with no new
# version (steady), and while version 2 arrives (a) as a plain reload
# (--rollout=immediate), (b) as a canary that is promoted, (c) as a canary that is rolled
# back. Each case: a fresh recserve on version 1 of the
# small world's model, recserve-load at RATE for RUN_SECONDS, version 2 published 3 s in.
#
#   BUILD=build WORK=/tmp/recserve-rollout-bench RATE=500 RUN_SECONDS=20 bash bench/rollout_side_by_side.sh
#
# Version 2 is version 1 copied (a good canary). The rolled-back one is the same copy
# whose manifest asks for a score PSI of at most 1e-9, a rule no version holds against
# sampling noise: the rollback path (the canary leaving the serving set under load) is
# what is measured, not the model. Canary: half of the users, judged after 500 calls,
# promoted after a 5 s window.
set -euo pipefail
build=${BUILD:-build}
work=${WORK:-/tmp/recserve-rollout-bench}
rate=${RATE:-500}
seconds=${RUN_SECONDS:-20}
mkdir -p "$work"
if [ ! -f "$work/world/.done" ]; then
  "$build/train/recserve-datagen" --preset=small --out="$work/world" >/dev/null
  touch "$work/world/.done"
fi
if [ ! -f "$work/trained/1/READY" ]; then
  OMP_NUM_THREADS=1 "$build/train/recserve-train" --world="$work/world" --model_dir="$work/trained" --version=1 \
    --threads=1 >/dev/null
fi
rm -rf "$work/drifting"
cp -r "$work/trained/1" "$work/drifting"
rm "$work/drifting/READY"
printf 'rollout { rules { max_score_psi: 1e-9 } }\n' >>"$work/drifting/manifest.textproto"
touch "$work/drifting/READY"

canary_flags=(--rollout=canary --canary_share=0.5 --rollout_min_requests=500 --rollout_window=5s)
run() {
  local name=$1 version2=$2
  shift 2
  local models="$work/models-$name"
  rm -rf "$models" "$work/port-$name"
  mkdir -p "$models"
  cp -r "$work/trained/1" "$models/1"
  "$build/server/recserve" --model_base_path="$models" --port=0 --admin_port=0 --metrics_port=-1 \
    --port_file="$work/port-$name" --poll_interval=100ms "$@" 2>"$work/log-$name" &
  local pid=$!
  while [ ! -s "$work/port-$name" ]; do sleep 0.1; done
  local port admin
  read -r port admin _ <"$work/port-$name"
  until "$build/server/recserve-cli" health --address="127.0.0.1:$port" >/dev/null 2>&1; do sleep 0.2; done
  "$build/bench/recserve-load" --address="127.0.0.1:$port" --world="$work/world" --rate="$rate" \
    --seconds="$seconds" --server_pid=$pid >"$work/load-$name" 2>&1 &
  local load=$!
  sleep 3
  if [ "$version2" != none ]; then
    cp -r "$version2" "$models/.incoming-2"
    mv "$models/.incoming-2" "$models/2"
  fi
  wait $load || true
  echo "== $name: $*"
  grep -E "^target" "$work/load-$name"
  "$build/server/recserve-cli" status --admin_address="127.0.0.1:$admin" | grep -E "^ +2 |verdict" || true
  kill -TERM $pid
  wait $pid || true
}

isa=$(ONEDNN_VERBOSE=1 timeout 60 "$build/bench/recserve-ranker-bench" --benchmark_min_time=0.001 2>&1 |
  sed -n 's/^onednn_verbose,info,cpu,isa://p' | head -1)
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; oneDNN ISA: $isa"
run steady none
run plain-reload "$work/trained/1"
run canary-promoted "$work/trained/1" "${canary_flags[@]}"
run canary-rolled-back "$work/drifting" "${canary_flags[@]}"
