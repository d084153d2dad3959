#!/usr/bin/env bash
# Training throughput and memory: recforge vs FuxiCTR 2.3.10 (from PyPI, PyTorch on CPU) in one
# run, on the same synthetic log (39 fields, 1,000,078 embedding rows, Zipf(1.1) ids), same
# hyper-parameters (embedding 16, batch 4096, MLP 400×3, Adam 1e-3), same thread count, one epoch.
# Then recforge's step time as the embedding tables grow (10^5 → 10^7 rows).
#   usage: bench/run.sh [OUT_DIR]   (env: ROWS=2000000 THREADS=2 VENV=.venv-bench MODELS="DeepFM DCNv2" SCALING=1)
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
  rm -rf "$OUT/runs/$m"
  /usr/bin/time -f "%M" -o "$OUT/rss-$m.txt" "$BIN" --threads "$THREADS" train --config "$OUT/syn" --expid "${m}_synthetic" \
    --set epochs=1 --run-dir "$OUT/runs/$m" > /dev/null 2>&1
  rf=$(tail -1 "$OUT/runs/$m/metrics.csv" | cut -d, -f7)
  echo "{\"impl\": \"recforge\", \"model\": \"$m\", \"samples_per_sec\": $rf, \"peak_rss_mb\": $(( $(cat "$OUT/rss-$m.txt") / 1024 ))}"
  "$VENV/bin/python" "$ROOT/bench/fuxictr_throughput.py" "$OUT/syn/train.csv" "$m" --threads "$THREADS" 2>/dev/null | sed 's/^{/{"impl": "FuxiCTR", /'
done
[ "${SCALING:-1}" = 0 ] || "$ROOT/target/release/recforge-bench" vocab-scaling --vocab 100000,1000000,10000000 --steps 20
