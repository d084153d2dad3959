#!/usr/bin/env bash
# Serving under load: `recforge serve` with FuxiCTR's DeepFM_frappe (embedding 10, MLP 400×3 with
# batch norm) trained on the Frappe split, hammered on loopback by wrk with /v1/rank requests of
# 500 candidates (one user context, 500 items of the test split), then the same model shape
# scored in PyTorch (inference_mode, batches of 500) and recforge's model alone, same threads.
#   usage: bench/serve_load.sh [OUT_DIR]
#   env: RECFORGE_DATA, THREADS=2, DURATION=60 (seconds per wrk run), CONNECTIONS="1 4",
#        VENV=.venv-bench (torch is installed there when missing), PORT=18181
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/serve}" && readlink -f "${1:-$ROOT/bench/out/serve}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
THREADS=${THREADS:-2}
DURATION=${DURATION:-60}
PORT=${PORT:-18181}
VENV=${VENV:-$ROOT/.venv-bench}
BIN=$ROOT/target/release/recforge
command -v wrk >/dev/null || { echo "wrk not found (Debian: apt-get install wrk)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --locked -q)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.15.0
fi

# the model: DeepFM_frappe as FuxiCTR configures it, 3 epochs (speed does not depend on them)
if [ ! -f "$OUT/run/model.safetensors" ]; then
  mkdir -p "$OUT/config"
  "$BIN" data split --data-dir "$DATA" --out "$OUT/data" >/dev/null
  sed "s#\./data/#$OUT/data/#g" "$ROOT/configs/fuxictr/dataset_config.yaml" > "$OUT/config/dataset_config.yaml"
  cp "$ROOT/configs/fuxictr/model_config.yaml" "$OUT/config/model_config.yaml"
  (cd "$OUT" && "$BIN" --threads "$THREADS" train --config config --expid DeepFM_frappe --set epochs=3 --run-dir run >/dev/null 2>&1)
fi

# one request: the first test row's user/context fields, the items and costs of 500 test rows
python3 - "$OUT/data/frappe/test.csv" "$OUT/rank500.json" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))[:500]
item_fields = ["f1", "f6"]  # Frappe libFM columns: f1 = item, f6 = cost
context = {k: v for k, v in rows[0].items() if k not in item_fields and k != "label"}
cands = [{k: r[k] for k in item_fields} for r in rows]
json.dump({"context": context, "candidates": cands}, open(sys.argv[2], "w"))
PY

"$BIN" --threads "$THREADS" serve --model "$OUT/run" --addr "127.0.0.1:$PORT" 2> "$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/v1/models" > "$OUT/model_info.json"
curl -sf -X POST -H 'content-type: application/json' --data-binary @"$OUT/rank500.json" \
  "http://127.0.0.1:$PORT/v1/rank" | python3 -c "import json,sys; r=json.load(sys.stdin); assert len(r['ranked'])==500, r"

for c in ${CONNECTIONS:-1 4}; do
  line=$(BODY="$OUT/rank500.json" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 5s -s "$ROOT/bench/wrk_post.lua" \
    "http://127.0.0.1:$PORT/v1/rank" | grep '^JSON' | sed 's/^JSON //')
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['impl']='recforge serve /v1/rank'; r['connections']=$c; r['requests_per_sec']=round(r['requests']/r['seconds'],1); print(json.dumps(r))" "$line"
done
rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SERVER/status")
echo "{\"impl\": \"recforge serve\", \"peak_rss_mb\": $rss}"
kill $SERVER; wait $SERVER 2>/dev/null || true; trap - EXIT

"$ROOT/target/release/recforge-bench" predict-latency --model "$OUT/run" --batch 500 --seconds 20
"$VENV/bin/python" "$ROOT/bench/torch_serving.py" "$OUT/model_info.json" --emb 10 --hidden 400,400,400 \
  --batch-norm --batch 500 --seconds 20 --threads "$THREADS"
