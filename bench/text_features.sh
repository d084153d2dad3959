#!/usr/bin/env bash
# ID-only vs ID+text DeepFM on MovieLens-100K CTR (FuxiCTR's DeepFM_ml100k settings), test AUC
# over three seeds. The text field is "title. genres" of the item, encoded by all-MiniLM-L6-v2.
#   usage: bench/text_features.sh [OUT_DIR]     env: RECFORGE_DATA, RECFORGE_MODELS, SEEDS
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/text_features}" && readlink -f "${1:-$ROOT/bench/out/text_features}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
export RECFORGE_MODELS=${RECFORGE_MODELS:-$ROOT/models}
SEEDS=${SEEDS:-"2024 2025 2026"}
BIN=$ROOT/target/release/recforge
"$ROOT/scripts/fetch-minilm.sh" >/dev/null
(cd "$ROOT" && cargo build --release --locked -q)
cd "$OUT"
[ -f data/ml100k/train.csv ] || "$BIN" data split --data-dir "$DATA" --out data >/dev/null
rm -rf config && cp -r "$ROOT/configs/ml100k_text" config
: > results.tsv
for seed in $SEEDS; do
  for variant in ids text; do
    auc=$("$BIN" train --config config --expid "DeepFM_ml100k_$variant" --set "seed=$seed" \
           --run-dir "runs/$variant-$seed" 2>/dev/null | awk '/^test/ {print $3}')
    printf '%s\t%s\t%s\n' "$variant" "$seed" "$auc" | tee -a results.tsv
  done
done
python3 - results.tsv <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
for v in ["ids", "text"]:
    a = [float(r[2]) for r in rows if r[0] == v]
    print(f"DeepFM ML-100K {v:4s}: test AUC {statistics.mean(a):.4f} ± {statistics.stdev(a):.4f} over {len(a)} seeds {a}")
PY
