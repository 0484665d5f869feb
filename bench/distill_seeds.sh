#!/usr/bin/env bash
# Knowledge distillation, several seeds: each seed trains (in one recserve-train run) a
# teacher, the distilled student and the same-size student without a teacher, and prints
# the trainer's side-by-side table (held-out AUC, logloss, NDCG@10, MACs, served form, ns
# per candidate). On a real log each of the three bundles is also replayed through
# recserve-eval on the split's held-out users. Ends with mean and spread per ranker and
# the student's per-seed gain over the baseline.
#   bash bench/distill_seeds.sh world DIR [SEEDS] [extra recserve-train flags]
#   bash bench/distill_seeds.sh LOG SPLIT [SEEDS] [extra recserve-train flags]
# SEEDS is a count N (seeds 1..N) or a comma-separated list (e.g. 101,102 for tuning).
# e.g. bash bench/distill_seeds.sh world /tmp/world-small 3 --max_train_rows=400000
#      bash bench/distill_seeds.sh ../shared/data/online-retail-uci/events.csv.gz leave_last_out 3
#      STUDENT=8 TEACHER_FLAGS=--ensemble=4 bash bench/distill_seeds.sh \
#          ../shared/data/online-retail-uci/events.csv.gz leave_last_out 10 --ensemble=1 --refit=false
# STUDENT (default 32,16) and TEACHER (default 256,128,64) set the hidden widths.
# TEACHER_FLAGS (e.g. --ensemble=4): train each seed's teacher first in its own run, with
# the extra flags and then these (e.g. an ensemble teacher for single-network students), and
# distil from it with --teacher; unset, the teacher is trained inside the student's run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
source=$1
arg=$2
seeds=${3:-3}
if [[ $seeds == *,* ]]; then IFS=, read -ra seed_list <<< "$seeds"; else mapfile -t seed_list < <(seq 1 "$seeds"); fi
shift $(( $# < 3 ? $# : 3 ))
student=${STUDENT:-32,16}
teacher=${TEACHER:-256,128,64}
out=${OUT_DIR:-$(mktemp -d /tmp/recserve-distill.XXXXXX)}
mkdir -p "$out"
echo "source $source $arg, seeds ${seed_list[*]}, student $student, teacher $teacher ${TEACHER_FLAGS:-}, extra flags: $*, output in $out"
for seed in "${seed_list[@]}"; do
  rm -rf "$out/student-$seed" "$out/compare-$seed"
  if [ "$source" = world ]; then
    input=(--world="$arg" --threads=1)
  else
    input=(--events_csv="$source" --split="$arg")
  fi
  teacher_flag=(--teacher_hidden="$teacher")
  if [ -n "${TEACHER_FLAGS:-}" ]; then
    rm -rf "$out/teacher-$seed"
    # shellcheck disable=SC2086  # TEACHER_FLAGS is a list of flags
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$build/train/recserve-train" "${input[@]}" --model_dir="$out/teacher-$seed" \
      --version=1 --seed="$seed" --quiet --hidden="$teacher" "$@" $TEACHER_FLAGS > "$out/teacher-$seed.txt" 2>&1
    teacher_flag=(--teacher="$out/teacher-$seed/1")
  fi
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$build/train/recserve-train" "${input[@]}" --model_dir="$out/student-$seed" \
    --version=1 --seed="$seed" --quiet --hidden="$student" "${teacher_flag[@]}" \
    --distill_compare_dir="$out/compare-$seed" "$@" > "$out/train-$seed.txt" 2>&1
  echo "seed $seed:"
  sed -n '/^ranker /,/^baseline /p' "$out/train-$seed.txt"
  if [ "$source" != world ]; then
    for who in teacher student baseline; do
      dir=$out/compare-$seed/$who
      [ "$who" = student ] && dir=$out/student-$seed
      "$build/train/recserve-eval" --events_csv="$source" --split="$arg" --model_dir="$dir" --progress=false \
        --baselines=false --threads=1 \
        --json="$out/eval-$seed-$who.json" > "$out/eval-$seed-$who.txt" 2>&1
      echo "  recserve-eval $who: $(grep '^recserve ' "$out/eval-$seed-$who.txt")"
    done
  fi
done
/usr/bin/python3 - "$out" "$source" "${seed_list[@]}" <<'PY'
import glob, json, os, statistics, sys
out, source, seed_list = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
seeds = len(seed_list)
def sd(v):
    return statistics.stdev(v) if len(v) > 1 else 0
def ms(v):
    return f"{statistics.mean(v):.4f} ±{sd(v):.4f}"
def diffs(name, d, lower_is_better=False):
    ahead = sum(v < 0 if lower_is_better else v > 0 for v in d)
    print(f"student - baseline {name:8s} per seed: " + " ".join(f"{v:+.4f}" for v in d) +
          f"  mean {statistics.mean(d):+.4f} sd {sd(d):.4f}, student ahead on {ahead} of {len(d)}")
rows = {}  # name -> list of dicts per seed
for seed in seed_list:
    lines = open(os.path.join(out, f"train-{seed}.txt")).read().splitlines()
    for line in lines:
        f = line.split()
        if f and f[0] in ("teacher", "student", "baseline") and len(f) >= 12:
            rows.setdefault(f[0], []).append(dict(macs=int(f[3]), auc=float(f[4]), logloss=float(f[5]),
                                                  ndcg=float(f[6]), form=f[7], served_auc=float(f[8]),
                                                  fp32_ns=float(f[9]), served_ns=float(f[10])))
print(f"\nheld-out rows of the trainer, mean ± sd over {seeds} seeds")
print(f"{'ranker':9s} {'MACs':>8s} {'AUC':>16s} {'logloss':>16s} {'NDCG@10':>16s} {'served AUC':>16s} {'fp32 ns':>10s} {'served ns':>10s}")
for name in ("teacher", "student", "baseline"):
    r = rows.get(name, [])
    if not r:
        continue
    print(f"{name:9s} {r[0]['macs']:8d} {ms([x['auc'] for x in r]):>16s} {ms([x['logloss'] for x in r]):>16s} "
          f"{ms([x['ndcg'] for x in r]):>16s} {ms([x['served_auc'] for x in r]):>16s} "
          f"{statistics.mean(x['fp32_ns'] for x in r):10.1f} {statistics.mean(x['served_ns'] for x in r):10.1f}")
s, b = rows.get("student", []), rows.get("baseline", [])
for key in ("auc", "logloss", "ndcg"):
    diffs(key, [x[key] - y[key] for x, y in zip(s, b)], lower_is_better=key == "logloss")
if source != "world":
    metrics = ["hit10", "hit100", "ndcg10", "mrr"]
    print(f"\nrecserve-eval on the split's held-out users, mean ± sd over {seeds} seeds")
    print(f"{'ranker':9s} " + " ".join(f"{m:>16s}" for m in metrics))
    ev = {}
    for who in ("teacher", "student", "baseline"):
        runs = [json.load(open(os.path.join(out, f"eval-{seed}-{who}.json"))) for seed in seed_list]
        ev[who] = [r["methods"][0] for r in runs]
        print(f"{who:9s} " + " ".join(f"{ms([m[k] for m in ev[who]]):>16s}" for k in metrics))
    for k in metrics:
        diffs(k, [x[k] - y[k] for x, y in zip(ev["student"], ev["baseline"])])
PY
