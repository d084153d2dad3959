#!/usr/bin/env bash
# DIN on the ML-100K behaviour split beside FuxiCTR 2.3.10's DIN (its model_zoo), same run, same
# configs (configs/fuxictr: DIN_ml100k_behaviour), same CSVs, same threads; and DeepFM without the
# sequence (DeepFM_ml100k, both implementations) and with it pooled (DeepFM_ml100k_behaviour,
# recforge), over seeds 2024-2026. There is no FuxiCTR anchor for DIN: this script is it.
#   usage: bench/din.sh [OUT_DIR]   (env: RECFORGE_DATA, SEEDS, THREADS=2, VENV=.venv-bench,
#                                     FUXICTR_SRC: a checkout of reczoo/FuxiCTR, required)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/bench/out/din}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
SEEDS=${SEEDS:-"2024 2025 2026"}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/.venv-bench}
: "${FUXICTR_SRC:?set FUXICTR_SRC to a checkout of https://github.com/reczoo/FuxiCTR (model_zoo/DIN/src/DIN.py)}"
[ -f "$FUXICTR_SRC/model_zoo/DIN/src/DIN.py" ] || { echo "no model_zoo/DIN/src/DIN.py under $FUXICTR_SRC" >&2; exit 1; }
BIN=$ROOT/target/release/recforge
(cd "$ROOT" && cargo build --release --locked -q)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "setuptools>=77.0.3" torch==2.15.0 fuxictr==2.3.10 ray pydantic polars
fi
mkdir -p "$OUT/config"
"$BIN" data split --data-dir "$DATA" --out "$OUT/data" >/dev/null
sed "s#\./data/#$OUT/data/#g" "$ROOT/configs/fuxictr/dataset_config.yaml" > "$OUT/config/dataset_config.yaml"
cp "$ROOT/configs/fuxictr/model_config.yaml" "$OUT/config/model_config.yaml"
: > "$OUT/results.jsonl"
for s in $SEEDS; do
  for e in DIN_ml100k_behaviour DeepFM_ml100k DeepFM_ml100k_behaviour; do
    t0=$(date +%s.%N)
    (cd "$OUT" && "$BIN" --threads "$THREADS" train --config config --expid "$e" --set seed=$s \
      --run-dir "runs/$e-$s" --metrics-json "runs/$e-$s.json" >/dev/null 2>&1)
    secs=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
    epochs=$(($(wc -l < "$OUT/runs/$e-$s/metrics.csv") - 1))
    python3 -c "import json,sys; m=json.load(open('$OUT/runs/$e-$s.json')); \
print(json.dumps({'impl': 'recforge', 'expid': '$e', 'seed': $s, **m, 'epochs': $epochs, 'seconds': $secs}))" \
      | tee -a "$OUT/results.jsonl"
  done
  for e in DIN_ml100k_behaviour DeepFM_ml100k; do
    split=${e#*_}
    "$VENV/bin/python" "$ROOT/bench/fuxictr_run.py" "$OUT/config" "$OUT/data/$split" "$FUXICTR_SRC" \
      --expid "$e" --seed "$s" --threads "$THREADS" 2>/dev/null | tee -a "$OUT/results.jsonl"
  done
done
python3 "$ROOT/bench/summarize_din.py" "$OUT/results.jsonl"
