#!/usr/bin/env bash
# The feedback loop on one machine (issue 15 item 3): a world, a bundle trained on it
# without served impressions (version 1), recserve serving it with every answer logged,
# then recserve-loop: simulated users click on what they are shown, the trainer learns
# from the log, the server hot-loads each new version. One line per round.
#   bash bench/feedback_loop.sh BUILD_DIR [PRESET] [ROUNDS] [PORT] [-- recserve-loop flags]
# WORK=DIR (a new or empty directory) keeps the world, the versions (DIR/models/1..ROUNDS),
# the log (DIR/log) and the simulated clicks (DIR/clicks.csv) there for recserve-eval
# --impressions; by default they go to a temporary directory removed at the end.
set -euo pipefail
build=$1 preset=${2:-tiny} rounds=${3:-4} port=${4:-18950}
shift $(($# < 4 ? $# : 4))
[ "${1:-}" = "--" ] && shift
hidden=64,32 seed=11
work=${WORK:-$(mktemp -d)} keep=${WORK:+1}
mkdir -p "$work"
trap 'if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; [ -n "$keep" ] || rm -rf "$work"' EXIT
"$build/train/recserve-datagen" --preset="$preset" --out="$work/world" >/dev/null
"$build/train/recserve-train" --world="$work/world" --model_dir="$work/models" --version=1 --threads=1 \
  --hidden="$hidden" --seed="$seed" --quiet | grep -E '^(test AUC|oracle AUC)'
"$build/server/recserve" --model_base_path="$work/models" --port="$port" --admin_port=$((port + 1)) \
  --metrics_port=-1 --poll_interval=500ms --impression_log_dir="$work/log" --impression_log_share=1 \
  --impression_log_file_age=1s >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "now serving" "$work/server.log" && break; sleep 0.2; done
OMP_NUM_THREADS=1 "$build/bench/recserve-loop" --address=127.0.0.1:$port --admin_address=127.0.0.1:$((port + 1)) \
  --world="$work/world" --model_dir="$work/models" --impressions="$work/log" --rounds="$rounds" --clicks_csv="$work/clicks.csv" \
  --hidden="$hidden" --seed="$seed" "$@"
