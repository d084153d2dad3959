#!/usr/bin/env bash
# Sequential recommendation on Amazon Beauty: recforge beside RecBole 1.2.1 in the same run, on
# the same cores, for the same number of epochs; then recforge alone to convergence. Writes one
# JSON line per (system, model, epochs) with valid/test metrics, median seconds per training
# epoch and peak RSS (GNU time) into OUT_DIR/results.jsonl.
#   usage: bench/seq.sh [OUT_DIR]   (env: MODELS="SASRec" EPOCHS=1 CONVERGE=1 THREADS=2
#          VENV=.venv-recbole RECFORGE_DATA=../shared/data)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/out-seq}
MODELS=${MODELS:-SASRec}
EPOCHS=${EPOCHS:-1}
CONVERGE=${CONVERGE:-1}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/.venv-recbole}
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
SEQS=$DATA/amazon_seq_gram/Beauty/user_sequence.txt
mkdir -p "$OUT"
"$ROOT/bench/recbole_venv.sh" "$VENV"
cargo build --release --locked -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/recforge
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*\(avx512f\).*/AVX-512: yes/' | head -2 > "$OUT/cpu.txt"
: > "$OUT/results.jsonl"

recforge_run() {  # model epochs tag [--set ...]
  local m=$1 e=$2 tag=$3; shift 3
  /usr/bin/time -v "$BIN" --threads "$THREADS" train --config "$ROOT/configs/seq" --expid "${m}_beauty" \
    --set "epochs=$e" "$@" --run-dir "$OUT/recforge-$m-$tag" --metrics-json "$OUT/recforge-$m-$tag.json" \
    2> "$OUT/recforge-$m-$tag.log" > /dev/null
  local rss
  rss=$(grep "Maximum resident" "$OUT/recforge-$m-$tag.log" | awk '{print $NF}')
  python3 - "$OUT" "$m" "$tag" "$rss" <<'PY' >> "$OUT/results.jsonl"
import csv, json, statistics, sys
out, m, tag, rss = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/recforge-{m}-{tag}/metrics.csv")))
r = json.load(open(f"{out}/recforge-{m}-{tag}.json"))
print(json.dumps({"system": "recforge", "model": m, "run": tag, "epochs_trained": len(rows),
    "median_epoch_s": statistics.median(float(x["seconds"]) for x in rows),
    "peak_rss_mb": int(rss) // 1024, "valid": r["valid"], "test": r["test"]}))
PY
}

for m in $MODELS; do
  recforge_run "$m" "$EPOCHS" "e$EPOCHS"
  recforge_run "$m" "$EPOCHS" "e$EPOCHS-prefix" --set train_mode=prefix
  /usr/bin/time -v env THREADS="$THREADS" "$VENV/bin/python" "$ROOT/bench/recbole_seq_run.py" "$SEQS" \
    "$OUT/recbole-work" "$m" "$EPOCHS" > "$OUT/recbole-$m.json" 2> "$OUT/recbole-$m.log"
  rss=$(grep "Maximum resident" "$OUT/recbole-$m.log" | awk '{print $NF}')
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); r['system']='recbole'; r['run']=sys.argv[3]; r['peak_rss_mb']=int(sys.argv[2])//1024; print(json.dumps(r))" \
    "$OUT/recbole-$m.json" "$rss" "e$EPOCHS" >> "$OUT/results.jsonl"
  if [ "$CONVERGE" = 1 ]; then
    recforge_run "$m" 300 converged
  fi
done
cat "$OUT/results.jsonl"
