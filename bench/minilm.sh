#!/usr/bin/env bash
# The text encoder against sentence-transformers (PyTorch), in one run on the same cores:
# sentences/s of encode (batch 32) and the time of one contrastive fine-tuning step (16 pairs,
# forward + backward + Adam over all 22.7M parameters), on two real text sets: 256 ToolLens
# queries (short) and 128 ToolLens tool descriptions (long: most hit the 256-token cap).
# Runs alternate engine by engine, ROUNDS times; the summary gives medians and ratios.
#   usage: bench/minilm.sh [OUT_DIR]
#   env: RECFORGE_DATA, RECFORGE_MODELS, THREADS=2, ROUNDS=3, VENV=.venv-bench
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/minilm}" && readlink -f "${1:-$ROOT/bench/out/minilm}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
MODEL=${RECFORGE_MODELS:-$ROOT/models}/all-MiniLM-L6-v2
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
VENV=${VENV:-$ROOT/.venv-bench}
"$ROOT/scripts/fetch-minilm.sh" >/dev/null
(cd "$ROOT" && cargo build --release --locked -q)
if ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.15.0 sentence-transformers==6.2.0
fi
T=$DATA/toolret_colt/ToolLens
head -256 "$T/queries.jsonl" > "$OUT/queries.jsonl"
head -128 "$T/corpus.jsonl" > "$OUT/tools.jsonl"

RES=$OUT/results.jsonl
: > "$RES"
for round in $(seq "$ROUNDS"); do
  for set in queries tools; do
    for task in encode finetune; do
      bench="text-$task"
      RAYON_NUM_THREADS=$THREADS "$ROOT/target/release/recforge-bench" "$bench" --model "$MODEL" \
        --texts "$OUT/$set.jsonl" --reps 3 --steps 5 | sed "s/^{/{\"set\":\"$set\",\"round\":$round,/" >> "$RES"
      "$VENV/bin/python" "$ROOT/bench/minilm_st.py" "$task" --model "$MODEL" --texts "$OUT/$set.jsonl" \
        --reps 3 --steps 5 --threads "$THREADS" 2>/dev/null | sed "s/^{/{\"set\": \"$set\", \"round\": $round, /" >> "$RES"
    done
  done
done

python3 - "$RES" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(set_, task, engine, key):
    return statistics.median(r[key] for r in rows if r["set"] == set_ and r["task"] == task and r["engine"] == engine)
print("| texts | recforge sentences/s | sentence-transformers sentences/s | ratio | recforge fine-tune step ms | PyTorch step ms | ratio (PyTorch / recforge) |")
print("|---|---|---|---|---|---|---|")
for s in ["queries", "tools"]:
    re_, se = med(s, "encode", "recforge", "sentences_per_sec"), med(s, "encode", "sentence-transformers", "sentences_per_sec")
    rf, sf = med(s, "finetune", "recforge", "step_ms"), med(s, "finetune", "sentence-transformers", "step_ms")
    print(f"| ToolLens {s} | {re_:.1f} | {se:.1f} | {re_ / se:.2f}x | {rf:.0f} | {sf:.0f} | {sf / rf:.2f}x |")
PY
