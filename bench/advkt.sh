#!/usr/bin/env bash
# AdvKT's claim (issue 13): multi-step AUC of AdvKT against DKT, SAKT and AKT, every model
# through the same evaluators (the anchor protocol: half of each window given, the next 10
# answered on the model's own guesses; AdvKT's code protocol: the whole window generated from
# its first response), over seeds, on collapsed assist2009, Statics and their sparse forms
# (10% of the training students). Appends JSON lines to bench/advkt-results.jsonl;
# bench/summarize_advkt.py turns them into BENCHMARKS.md's table.
#
# env: SEEDS (default "42 43 44"), MODELS (default "DKT SAKT AKT AdvKT"),
#      DATASETS (default "statics_sparse assist2009c_sparse statics assist2009c"),
#      EPOCHS (cap on pyKT's stopping rule, default 200), ADVKT_EPOCHS (AdvKT's cap, default
#      EPOCHS), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
OUT=bench/advkt-results.jsonl
WORK=${WORK:-/tmp/recforge-advkt}
mkdir -p "$WORK"
cargo build --release -q -p recforge
BIN=target/release/recforge
CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
for data in ${DATASETS:-statics_sparse assist2009c_sparse statics assist2009c}; do
  for seed in ${SEEDS:-42 43 44}; do
    for model in ${MODELS:-DKT SAKT AKT AdvKT}; do
      dir="$WORK/${model}_${data}_$seed"
      cap=${EPOCHS:-200}
      [ "$model" = AdvKT ] && cap=${ADVKT_EPOCHS:-$cap}
      rm -rf "$dir"
      start=$(date +%s)
      RAYON_NUM_THREADS=$THREADS "$BIN" --threads "$THREADS" train --config configs/kt \
        --expid "${model}_${data}" --set num_epochs="$cap" --set seed="$seed" \
        --run-dir "$dir" --metrics-json "$dir.json" > "$dir.log" 2>&1
      python3 - "$dir" "$model" "$data" "$seed" "$THREADS" "$CPU" "$(( $(date +%s) - start ))" \
        "$cap" >> "$OUT" <<'PY'
import json, sys
d, model, data, seed, threads, cpu, wall, cap = sys.argv[1:]
log = open(d + ".log").read().splitlines()
epochs = [f for f in map(str.split, log) if len(f) in (7, 8) and f[0].isdigit()]
best = [int(l.split()[2].rstrip(";")) for l in log if l.startswith("best epoch")]
m = json.load(open(d + ".json"))
print(json.dumps({"model": model, "dataset": data, "seed": int(seed), "threads": int(threads),
                  "cpu": cpu, "wall_s": int(wall), "epoch_cap": int(cap), "epochs": len(epochs),
                  "best_epoch": best[0] if best else None,
                  "median_epoch_s": sorted(float(f[-2]) for f in epochs)[len(epochs) // 2],
                  "valid": m["valid"], "test": m["test"]}))
PY
      tail -1 "$OUT" | cut -c1-200
    done
  done
done
