#!/usr/bin/env bash
# recforge and FuxiCTR 2.3.10 (its model_zoo) side by side on the same configs (configs/fuxictr),
# CSVs, seeds and threads, with every epoch's validation AUC and learning rate from both, so a
# final number that depends on where a slow run is cut off (or on a seed-sensitive learning-rate
# cut) can be read epoch by epoch instead of against the anchors' finals alone.
#   usage: bench/curves.sh [OUT_DIR]   (env: EXPIDS="FwFM_frappe", SEEDS="2024 2025 2026",
#            RECFORGE_DATA, THREADS=2, VENV=.venv-bench, FUXICTR_SRC: a checkout of reczoo/FuxiCTR)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/bench/out/curves}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
EXPIDS=${EXPIDS:-FwFM_frappe}
SEEDS=${SEEDS:-"2024 2025 2026"}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/.venv-bench}
: "${FUXICTR_SRC:?set FUXICTR_SRC to a checkout of https://github.com/reczoo/FuxiCTR (model_zoo/)}"
BIN=$ROOT/target/release/recforge
(cd "$ROOT" && cargo build --release --locked -q)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "setuptools>=77.0.3" torch==2.15.0 fuxictr==2.3.10 ray pydantic polars
fi
mkdir -p "$OUT/config" "$OUT/runs"
"$BIN" data split --data-dir "$DATA" --out "$OUT/data" >/dev/null
sed "s#\./data/#$OUT/data/#g" "$ROOT/configs/fuxictr/dataset_config.yaml" > "$OUT/config/dataset_config.yaml"
cp "$ROOT/configs/fuxictr/model_config.yaml" "$OUT/config/model_config.yaml"
: > "$OUT/results.jsonl"
for e in $EXPIDS; do
  split=${e#*_}   # <Model>_<dataset>: the dataset's CSVs are in data/<dataset>
  for s in $SEEDS; do
    run=$OUT/runs/$e-$s
    (cd "$OUT" && "$BIN" --threads "$THREADS" train --config config --expid "$e" --set seed=$s \
      --run-dir "$run" --metrics-json "$run.json" >"$run.log" 2>&1) || { echo "recforge $e $s failed: $run.log" >&2; exit 1; }
    python3 - "$run" "$e" "$s" <<'PY' | tee -a "$OUT/results.jsonl"
import csv, json, sys
run, expid, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.DictReader(open(f"{run}/metrics.csv")))
# recforge logs the rate an epoch trained at; FuxiCTR's list is the rate after each epoch's rule
lrs = [float(r["learning_rate"]) for r in rows][1:] + [None]
print(json.dumps({"impl": "recforge", "expid": expid, "seed": seed, **json.load(open(f"{run}.json")),
                  "epochs": len(rows), "curve": [float(r.get("valid_AUC") or r["valid_auc"]) for r in rows], "lr": lrs}))
PY
    "$VENV/bin/python" "$ROOT/bench/fuxictr_run.py" "$OUT/config" "$OUT/data/$split" "$FUXICTR_SRC" \
      --expid "$e" --seed "$s" --threads "$THREADS" 2>"$run.fuxictr.log" | tee -a "$OUT/results.jsonl" \
      || { echo "FuxiCTR $e $s failed: $run.fuxictr.log" >&2; exit 1; }
  done
done
python3 "$ROOT/bench/summarize_curves.py" "$OUT/results.jsonl"
