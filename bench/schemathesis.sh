#!/usr/bin/env bash
# Conformance of `recforge serve` to its own OpenAPI document: the document is checked with
# openapi-spec-validator, then schemathesis (pinned) generates requests from it against a
# loopback server with a tiny model trained on generated data, with bounded examples, and
# checks every response (status documented, body and content type as documented, no 5xx).
#   usage: bench/schemathesis.sh [OUT_DIR]
#   env: BIN (a recforge binary; default: cargo build --release), MAX_EXAMPLES=50,
#        VENV=.venv-bench, PORT=18282, SCHEMATHESIS=4.32.5, SPEC_VALIDATOR=0.9.0
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/conformance}" && readlink -f "${1:-$ROOT/bench/out/conformance}")
MAX_EXAMPLES=${MAX_EXAMPLES:-50}
PORT=${PORT:-18282}
VENV=${VENV:-$ROOT/.venv-bench}
SCHEMATHESIS=${SCHEMATHESIS:-4.32.5}
SPEC_VALIDATOR=${SPEC_VALIDATOR:-0.9.0}
if [ -z "${BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked -q -p recforge)
  BIN=$ROOT/target/release/recforge
fi
if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/pip" show -q "schemathesis==$SCHEMATHESIS" >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS" "openapi-spec-validator==$SPEC_VALIDATOR"
fi

# a tiny model: 2,000 generated rows, one epoch of DeepFM
cd "$OUT"
if [ ! -f run/model.safetensors ]; then
  "$BIN" data generate --out gen --rows 2000 --fields 4 --vocab 20 >/dev/null
  "$BIN" --threads 2 train --config gen --expid DeepFM_synthetic --set epochs=1 \
    --set 'hidden_units=[16,16]' --run-dir run >/dev/null
fi
TOKEN=conformance-token
printf '%s\n' "$TOKEN" > token
"$BIN" --threads 2 serve --model run --addr "127.0.0.1:$PORT" --admin-token-file token 2> server.log &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/openapi.json" > openapi.json

echo "== openapi-spec-validator $SPEC_VALIDATOR"
"$VENV/bin/openapi-spec-validator" openapi.json | tee spec-validator.txt

echo "== schemathesis $SCHEMATHESIS, at most $MAX_EXAMPLES examples per operation"
set +e
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --max-examples "$MAX_EXAMPLES" --seed 1 \
  -H "Authorization: Bearer $TOKEN" --no-color 2>&1 | tee schemathesis.txt
STATUS=${PIPESTATUS[0]}
set -e
kill -TERM $SERVER
wait $SERVER && echo "server drained and exited 0"
trap - EXIT
exit "$STATUS"
