#!/usr/bin/env bash
# Trains SEEDS bundles with different seeds on a real log and evaluates each with
# recserve-eval, side by side with the baselines of the same run; prints the mean and
# spread of every metric, and the compression policy each version was served with.
#   bash bench/quality_seeds.sh [LOG] [SPLIT] [SEEDS]
# e.g. bash bench/quality_seeds.sh ../shared/data/online-retail-uci/events.csv.gz leave_last_out 10
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
log=${1:-$root/../shared/data/online-retail-uci/events.csv.gz}
split=${2:-leave_last_out}
seeds=${3:-10}
out=${OUT_DIR:-$(mktemp -d /tmp/recserve-seeds.XXXXXX)}
mkdir -p "$out"
echo "log $log, split $split, $seeds seeds, output in $out"
for seed in $(seq 1 "$seeds"); do
  dir="$out/model-$seed"
  rm -rf "$dir"
  "$build/train/recserve-train" --events_csv="$log" --split="$split" --model_dir="$dir" --version=1 \
    --seed="$seed" --quiet > "$out/train-$seed.log" 2>&1
  if ! "$build/train/recserve-eval" --events_csv="$log" --split="$split" --model_dir="$dir" \
      --progress=false --json="$out/eval-$seed.json" > "$out/eval-$seed.txt" 2>&1; then
    echo "seed $seed: NOT SERVED: $(tail -1 "$out/eval-$seed.txt")"
  else
    echo "seed $seed: $(grep '^recserve /' "$out/eval-$seed.txt")"
  fi
done
/usr/bin/python3 - "$out" "$seeds" <<'PY'
import json, statistics, sys, glob, os
out, seeds = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "eval-*.json")))]
print(f"\n{len(runs)} of {seeds} versions served (evaluated); {seeds - len(runs)} unserved")
policies = {}
for r in runs:
    policies[r["model"]["compression"]] = policies.get(r["model"]["compression"], 0) + 1
print("served policy:", ", ".join(f"{k} x{v}" for k, v in sorted(policies.items())))
names = [m["name"] for m in runs[0]["methods"]]
metrics = ["hit10", "hit50", "hit100", "ndcg10", "mrr", "coverage10", "consumed10"]
print(f"\n{'method':20s} " + " ".join(f"{m:>17s}" for m in metrics))
for i, name in enumerate(names):
    cells = []
    for m in metrics:
        v = [r["methods"][i][m] for r in runs]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        cells.append(f"{statistics.mean(v):.4f} ±{sd:.4f}".rjust(17))
    print(f"{name:20s} " + " ".join(cells))
for key in ["hit100_vs_best", "ndcg10_vs_best", "hit10_vs_popularity"]:
    v = [r["ratios"][key] for r in runs]
    print(f"{key:20s} mean {statistics.mean(v):.3f}x  min {min(v):.3f}x  max {max(v):.3f}x")
v = [r["users_per_second"] for r in runs]
print(f"eval users/s        mean {statistics.mean(v):.0f} (whole run incl. baselines)")
PY
