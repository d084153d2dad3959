#!/usr/bin/env bash
# Test AUC/logloss of recforge on FuxiCTR's own configs (configs/fuxictr, = ../shared/anchors) over
# the fixed splits, seeds 2024-2026, next to FuxiCTR 2.3.10's numbers from ../shared/anchors/FUXICTR.md
# (measured on this machine kind with the same configs and splits).
#   usage: bench/accuracy.sh [OUT_DIR]      (env: RECFORGE_DATA, SEEDS, EXPIDS)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/bench/out/accuracy}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
SEEDS=${SEEDS:-"2024 2025 2026"}
EXPIDS=${EXPIDS:-"LR_frappe FM_frappe DeepFM_frappe DCNv2_frappe LR_ml100k FM_ml100k DeepFM_ml100k DCNv2_ml100k LR_criteo FM_criteo DeepFM_criteo DCNv2_criteo"}
BIN=$ROOT/target/release/recforge
(cd "$ROOT" && cargo build --release --locked -q)
mkdir -p "$OUT/config"
"$BIN" data split --data-dir "$DATA" --out "$OUT/data" >/dev/null
sed "s#\./data/#$OUT/data/#g" "$ROOT/configs/fuxictr/dataset_config.yaml" > "$OUT/config/dataset_config.yaml"
cp "$ROOT/configs/fuxictr/model_config.yaml" "$OUT/config/model_config.yaml"
: > "$OUT/results.tsv"
for e in $EXPIDS; do
  for s in $SEEDS; do
    line=$(cd "$OUT" && "$BIN" train --config config --expid "$e" --set seed=$s --run-dir "runs/$e-$s" 2>/dev/null | grep '^test')
    auc=$(echo "$line" | awk '{for(i=1;i<NF;i++) if($i=="AUC") print $(i+1)}')
    ll=$(echo "$line" | awk '{for(i=1;i<NF;i++) if($i=="logloss") print $(i+1)}')
    epochs=$(($(wc -l < "$OUT/runs/$e-$s/metrics.csv") - 1))
    printf "%s\t%s\t%s\t%s\t%s\n" "$e" "$s" "$auc" "$ll" "$epochs" | tee -a "$OUT/results.tsv"
  done
done
python3 "$ROOT/bench/summarize_accuracy.py" "$OUT/results.tsv"
