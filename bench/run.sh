#!/usr/bin/env bash
# Training throughput and memory: recforge vs FuxiCTR 2.3.10 (from PyPI, PyTorch on CPU) in one
# run, on the same synthetic log (39 fields, 1,000,078 embedding rows, Zipf(1.1) ids), same
# hyper-parameters (embedding 16, batch 4096, MLP 400×3, Adam 1e-3), same thread count, one epoch.
# Then recforge's step time as the embedding tables grow (10^5 → 10^7 rows).
# Models of the CTR zoo (MODELS="AutoInt xDeepFM ...") train with their configs/fuxictr entry
# `<Model>_ml100k` (DeepFM_ml100k's generic structure: embedding 16, DNN 400×3) on both sides;
# FuxiCTR's side is its model_zoo class from FUXICTR_SRC (a checkout of reczoo/FuxiCTR).
#   usage: bench/run.sh [OUT_DIR]   (env: ROWS=2000000 THREADS=2 VENV=.venv-bench MODELS="DeepFM DCNv2"
#                                    SCALING=1 FUXICTR_SRC=path, needed for zoo models)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/throughput}" && readlink -f "${1:-$ROOT/bench/out/throughput}")
ROWS=${ROWS:-2000000}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/.venv-bench}
BIN=$ROOT/target/release/recforge
(cd "$ROOT" && cargo build --release --locked -q)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "setuptools>=77.0.3" torch==2.15.0 fuxictr==2.3.10 ray pydantic polars
fi
if [ ! -f "$OUT/syn/train.csv" ]; then
  "$BIN" data generate --out "$OUT/syn" --rows "$ROWS" --criteo-like 1000000
fi
rm -rf "$OUT/syn/processed"
start=$(date +%s.%N)
"$BIN" data inspect --config "$OUT/syn" --expid DeepFM_synthetic > /dev/null 2>&1
echo "recforge preprocessing (fit vocabularies + encode 3 splits, $ROWS rows): $(python3 -c "print(round($(date +%s.%N)-$start,1))") s"
for m in ${MODELS:-DeepFM DCNv2}; do
  zoo=()
  if ! grep -q "^${m}_synthetic:" "$OUT/syn/model_config.yaml"; then
    # the zoo entry, pointed at the synthetic log
    python3 - "$ROOT/configs/fuxictr/model_config.yaml" "${m}_ml100k" "$OUT/syn/model_config.yaml" "${m}_synthetic" <<'PY'
import sys, yaml
entry = yaml.safe_load(open(sys.argv[1]))[sys.argv[2]]
entry.update(dataset_id="synthetic", embedding_dim=16, batch_size=4096)
for k in ("fs1_context", "fs2_context"):  # FinalMLP's gate fields are not in the synthetic log:
    if k in entry:                         # its learned-vector contexts instead
        entry[k] = []
with open(sys.argv[3], "a") as f:
    yaml.safe_dump({sys.argv[4]: entry}, f, default_flow_style=None)
PY
  fi
  if [ "$m" != DeepFM ] && [ "$m" != DCNv2 ]; then
    : "${FUXICTR_SRC:?set FUXICTR_SRC to a checkout of reczoo/FuxiCTR for $m}"
    zoo=(--fuxictr-src "$FUXICTR_SRC" --config "$OUT/syn/model_config.yaml" --expid "${m}_synthetic")
  fi
  rm -rf "$OUT/runs/$m"
  /usr/bin/time -f "%M" -o "$OUT/rss-$m.txt" "$BIN" --threads "$THREADS" train --config "$OUT/syn" --expid "${m}_synthetic" \
    --set epochs=1 --run-dir "$OUT/runs/$m" > /dev/null 2>&1
  rf=$(tail -1 "$OUT/runs/$m/metrics.csv" | cut -d, -f7)
  echo "{\"impl\": \"recforge\", \"model\": \"$m\", \"samples_per_sec\": $rf, \"peak_rss_mb\": $(( $(cat "$OUT/rss-$m.txt") / 1024 ))}"
  "$VENV/bin/python" "$ROOT/bench/fuxictr_throughput.py" "$OUT/syn/train.csv" "$m" --threads "$THREADS" "${zoo[@]}" 2>/dev/null | sed 's/^{/{"impl": "FuxiCTR", /'
done
[ "${SCALING:-1}" = 0 ] || "$ROOT/target/release/recforge-bench" vocab-scaling --vocab 100000,1000000,10000000 --steps 20
