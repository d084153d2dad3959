#!/usr/bin/env bash
# Top-K on DiffRec's ML-1M clean split: recforge beside RecBole 1.2.1 in the same run, on the
# same cores. Writes one JSON line per (system, model) with test metrics, median seconds per
# epoch and per validation pass, and peak RSS (GNU time) into OUT_DIR/results.jsonl.
#   usage: bench/recbole.sh [OUT_DIR]   (env: MODELS="Pop BPR MultiVAE LightGCN EASE DiffRec LDiffRec"
#          THREADS=2 VENV=.venv-recbole LIGHTGCN_EPOCHS=8 RECFORGE_DATA=../shared/data)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/out-recbole}
MODELS=${MODELS:-"Pop BPR MultiVAE LightGCN EASE DiffRec LDiffRec"}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/.venv-recbole}
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
SPLIT=$DATA/diffrec_ml1m_clean/ml-1m_clean
LIGHTGCN_EPOCHS=${LIGHTGCN_EPOCHS:-8}   # RecBole's anchor run stopped at 8 epochs
mkdir -p "$OUT"
"$ROOT/bench/recbole_venv.sh" "$VENV"
cargo build --release --locked -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/recforge
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*\(avx512f\).*/AVX-512: yes/' | head -2 > "$OUT/cpu.txt"
: > "$OUT/results.jsonl"
for m in $MODELS; do
  epochs=300; [ "$m" = LightGCN ] && epochs=$LIGHTGCN_EPOCHS
  extra=()
  if [ "$m" = LDiffRec ]; then
    # L-DiffRec clusters items by LightGCN vectors: recforge's, trained here, for both systems
    if [ ! -f "$OUT/item_emb.npy" ]; then
      "$BIN" --threads "$THREADS" train --config "$ROOT/configs/topk" --expid LightGCN_ml1m \
        --set "epochs=$LIGHTGCN_EPOCHS" --run-dir "$OUT/vectors-LightGCN" > /dev/null 2> "$OUT/vectors-LightGCN.log"
      "$BIN" item-vectors --model "$OUT/vectors-LightGCN" --out "$OUT/item_emb.npy"
    fi
    extra=(--set "item_emb_file=$OUT/item_emb.npy")
  fi
  # recforge
  /usr/bin/time -v "$BIN" --threads "$THREADS" train --config "$ROOT/configs/topk" --expid "${m}_ml1m" \
    --set "epochs=$epochs" "${extra[@]}" --run-dir "$OUT/recforge-$m" --metrics-json "$OUT/recforge-$m.json" \
    2> "$OUT/recforge-$m.log" > /dev/null
  params=$(grep -o "([0-9]* parameters)" "$OUT/recforge-$m.log" | grep -o "[0-9]*" | head -1)
  rss=$(grep "Maximum resident" "$OUT/recforge-$m.log" | awk '{print $NF}')
  # one validation pass (every user ranked, train items masked) with the saved model, timed
  # whole: loading the checkpoint and the data included
  evals=""
  for k in 1 2 3; do
    /usr/bin/time -f "%e" -o "$OUT/recforge-$m.eval-time" "$BIN" --threads "$THREADS" evaluate \
      --model "$OUT/recforge-$m" --data "$SPLIT/valid_list.npy" > /dev/null 2>&1
    evals="$evals $(cat "$OUT/recforge-$m.eval-time")"
  done
  python3 - "$OUT" "$m" "$rss" "$evals" "$params" <<'PY' >> "$OUT/results.jsonl"
import csv, json, statistics, sys
out, m, rss, evals, params = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/recforge-{m}/metrics.csv")))
print(json.dumps({"system": "recforge", "model": m, "epochs_trained": len(rows),
    "median_epoch_s": statistics.median(float(r["seconds"]) for r in rows),
    "median_eval_s": statistics.median(float(x) for x in evals.split()),
    "parameters": int(params), "peak_rss_mb": int(rss) // 1024, "test": json.load(open(f"{out}/recforge-{m}.json"))["test"]}))
PY
  # RecBole
  /usr/bin/time -v env THREADS="$THREADS" ITEM_EMB="$OUT/item_emb.npy" "$VENV/bin/python" "$ROOT/bench/recbole_run.py" "$SPLIT" \
    "$OUT/recbole-work" "$m" "$epochs" > "$OUT/recbole-$m.json" 2> "$OUT/recbole-$m.log"
  rss=$(grep "Maximum resident" "$OUT/recbole-$m.log" | awk '{print $NF}')
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); r['system']='recbole'; r['peak_rss_mb']=int(sys.argv[2])//1024; print(json.dumps(r))" \
    "$OUT/recbole-$m.json" "$rss" >> "$OUT/results.jsonl"
done
cat "$OUT/results.jsonl"
