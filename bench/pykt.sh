#!/usr/bin/env bash
# recforge's knowledge tracing beside pyKT 0.0.38's own DKT/SAKT/AKT classes, on the same
# splits, the same cores, one after the other in this run. Appends JSON lines to
# bench/pykt-results.jsonl (BENCHMARKS.md, "Knowledge tracing").
#
#   bench/pykt.sh speed                 one training epoch each (pyKT's AKT on assist2009:
#                                       its first $AKT_BATCHES batches), samples/s + peak RSS
#   bench/pykt.sh parity MODEL DATASET  both to convergence (pyKT's stopping rule), test AUC
#
# env: THREADS (default 2: torch threads = recforge's rayon threads), SEEDS (parity, "42"),
#      MODELS (speed, default "DKT SAKT AKT"),
#      VENV (default .venv-pykt, made by bench/pykt_venv.sh), AKT_BATCHES (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/pykt.sh speed | parity MODEL DATASET}
THREADS=${THREADS:-2}
VENV=${VENV:-.venv-pykt}
OUT=bench/pykt-results.jsonl
WORK=${WORK:-/tmp/recforge-pykt}
mkdir -p "$WORK"
bash bench/pykt_venv.sh "$VENV"
cargo build --release -q -p recforge
BIN=target/release/recforge
CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)

# recforge MODEL DATASET EPOCHS SEED: one training run; appends its JSON line
recforge_run() {
  local model=$1 data=$2 epochs=$3 seed=$4 dir="$WORK/$1_$2_$4"
  rm -rf "$dir"
  RAYON_NUM_THREADS=$THREADS /usr/bin/time -v "$BIN" train --config configs/kt --expid "${model}_${data}" \
    --set num_epochs="$epochs" --set seed="$seed" --run-dir "$dir" --metrics-json "$dir.json" \
    > "$dir.log" 2> "$dir.time"
  python3 - "$dir" "$model" "$data" "$seed" "$THREADS" "$CPU" >> "$OUT" <<'EOF'
import json, statistics, sys
d, model, data, seed, threads, cpu = sys.argv[1:]
rows = []
for line in open(d + ".log").readlines() + open(d + ".time").readlines():
    f = line.split()
    if len(f) == 7 and f[0].isdigit():
        rows.append((int(f[0]), float(f[3]), float(f[5]), float(f[6])))
rss = [l for l in open(d + ".time") if "Maximum resident set size" in l][0].split()[-1]
m = json.load(open(d + ".json"))
best = max(rows, key=lambda r: r[1])
print(json.dumps({
    "tool": "recforge", "model": model, "dataset": data, "seed": int(seed), "threads": int(threads),
    "cpu": cpu, "epochs": len(rows), "best_epoch": best[0], "valid_auc": m["valid"]["auc"],
    "test_auc": m["test"]["auc"], "test_acc": m["test"]["acc"],
    "median_epoch_seconds": statistics.median(r[2] for r in rows),
    "median_samples_per_s": statistics.median(r[3] for r in rows),
    "peak_rss_mib": int(rss) / 1024,
}))
EOF
  tail -1 "$OUT"
}

# pykt MODEL DATASET SEED ARGS...: one pyKT run; appends its final JSON line
pykt_run() {
  local model=$1 data=$2 seed=$3
  shift 3
  "$VENV/bin/python" bench/pykt_run.py --model "$model" --dataset "$data" --seed "$seed" \
    --threads "$THREADS" "$@" > "$WORK/pykt_${model}_${data}_$seed.log"
  tail -1 "$WORK/pykt_${model}_${data}_$seed.log" | python3 -c "
import json, sys; r = json.loads(sys.stdin.read()); r['cpu'] = '$CPU'; print(json.dumps(r))" >> "$OUT"
  tail -1 "$OUT"
}

case $MODE in
  speed)
    for data in statics assist2009; do
      for model in ${MODELS:-DKT SAKT AKT}; do
        recforge_run "$model" "$data" 1 42
        if [ "$model" = AKT ] && [ "$data" = assist2009 ]; then
          pykt_run "$model" "$data" 42 --epochs 1 --max-batches "${AKT_BATCHES:-8}"
        else
          pykt_run "$model" "$data" 42 --epochs 1
        fi
      done
    done ;;
  parity)
    MODEL=${2:?model}; DATA=${3:?dataset}
    for seed in ${SEEDS:-42}; do
      recforge_run "$MODEL" "$DATA" 200 "$seed"
      pykt_run "$MODEL" "$DATA" "$seed"
    done ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
