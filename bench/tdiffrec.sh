#!/usr/bin/env bash
# T-DiffRec against DiffRec on MovieLens-100K (real timestamps; per user 80/10/10 in time order),
# the same settings but the time-aware rows, over seeds. Writes one JSON line per (model, seed)
# with the test metrics of the restored best checkpoint into OUT_DIR/results.jsonl, then the
# per-seed differences.
#   usage: bench/tdiffrec.sh [OUT_DIR]   (env: SEEDS="2020 2021 2022" THREADS=2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/out-tdiffrec}
SEEDS=${SEEDS:-"2020 2021 2022"}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
cargo build --release --locked -q --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/recforge
: > "$OUT/results.jsonl"
for seed in $SEEDS; do
  for expid in DiffRec_ml100k TDiffRec_ml100k; do
    "$BIN" --threads "$THREADS" train --config "$ROOT/configs/topk" --expid "$expid" --set "seed=$seed" \
      --run-dir "$OUT/$expid-$seed" --metrics-json "$OUT/$expid-$seed.json" 2> "$OUT/$expid-$seed.log" > /dev/null
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({'expid': sys.argv[2], 'seed': int(sys.argv[3]), 'test': m['test'], 'valid': m['valid']}))" \
      "$OUT/$expid-$seed.json" "$expid" "$seed" >> "$OUT/results.jsonl"
  done
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for metric in ["recall@20", "ndcg@20", "recall@10", "ndcg@10"]:
    by = {}
    for r in rows:
        by.setdefault(r["expid"], {})[r["seed"]] = r["test"][metric]
    d, t = by["DiffRec_ml100k"], by["TDiffRec_ml100k"]
    diffs = [t[s] - d[s] for s in sorted(d)]
    print(f"{metric}: DiffRec {statistics.mean(d.values()):.4f} ± {statistics.stdev(d.values()):.4f}, "
          f"T-DiffRec {statistics.mean(t.values()):.4f} ± {statistics.stdev(t.values()):.4f}, "
          f"per-seed T − D {[round(x, 4) for x in diffs]}")
PY
