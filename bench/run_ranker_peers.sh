#!/usr/bin/env bash
# Ranker throughput side by side in one run: recserve fp32 / int8 (recserve-compress)
# and PyTorch fp32 / dynamic int8 (torch_peer.py) on the same MLP shape, one thread,
# batch 1, 64, 256, 1000; prints the ratios.
#   bash bench/run_ranker_peers.sh models/default/1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
bundle=${1:?usage: run_ranker_peers.sh BUNDLE_VERSION_DIR}
sizes=$(sed -n 's/^layer_sizes: //p' "$bundle/manifest.textproto" | paste -sd, -)
compress_out=$(OMP_NUM_THREADS=1 "$build/compression/recserve-compress" --bundle="$bundle" --seconds_per_bucket=1)
ours=$(echo "$compress_out" | awk '/^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9.]+x/ {print $1, $2, $3}')
isa=$(echo "$compress_out" | sed -n 's/.*oneDNN ISA //p')
peer=$(/usr/bin/python3 "$root/bench/torch_peer.py" --sizes="$sizes" --seconds=1 2>/dev/null | awk '/^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9.]+$/ {print $1, $2, $3}')
macs=$(echo "$sizes" | awk -F, '{s=0; for (i=1;i<NF;i++) s+=$i*$(i+1); print s}')
echo "MLP $sizes ($macs MACs/row), one thread, oneDNN ISA ${isa:-unknown}; rows/s"
printf "%6s %12s %12s %12s %12s %10s %10s %10s %9s\n" batch ours_fp32 ours_int8 torch_fp32 torch_int8 int8/fp32 vs_torch8 vs_torch32 effGMAC/s
join <(echo "$ours") <(echo "$peer") | while read -r b f q tf tq; do
  awk -v b="$b" -v f="$f" -v q="$q" -v tf="$tf" -v tq="$tq" -v m="$macs" 'BEGIN {
    printf "%6d %12.0f %12.0f %12.0f %12.0f %9.2fx %9.2fx %9.1fx %8.1f\n", b, f, q, tf, tq, q/f, q/tq, q/tf, q*m/1e9 }'
done
echo "effGMAC/s = full-MLP MACs x rows/s: the work PyTorch does per row. Our int8 takes the request-constant"
echo "columns in fp32 once per request and multiplies fewer (recserve-compress prints the served MACs and GMAC/s);"
echo "fraction of the VNNI limit = served GMAC/s / 358 (2 x 64 int8 MAC/cycle x 2.8 GHz, targets.md); with AMX"
echo "(avx512_core_amx) oneDNN runs batches >= 64 on TDPBUSD tiles, whose limit is 8x that"
