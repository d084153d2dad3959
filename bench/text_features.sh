#!/usr/bin/env bash
# ID-only vs ID+text DeepFM on MovieLens-100K CTR (FuxiCTR's DeepFM_ml100k settings), test AUC
# over three seeds, overall and on the test rows whose item the training split never had. The text field is "title. genres" of the item, encoded by all-MiniLM-L6-v2.
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
    "$BIN" predict --model "runs/$variant-$seed" --input data/ml100k/test.csv --output "runs/$variant-$seed/test_scores.csv" 2>/dev/null
    cold=$(python3 - data/ml100k/train.csv data/ml100k/test.csv "runs/$variant-$seed/test_scores.csv" <<'PY'
import csv, sys
seen = {r["item_id"] for r in csv.DictReader(open(sys.argv[1]))}
test = list(csv.DictReader(open(sys.argv[2])))
scores = [float(r["score"]) for r in csv.DictReader(open(sys.argv[3]))]
pairs = [(s, int(r["label"])) for r, s in zip(test, scores) if r["item_id"] not in seen]
pos = [s for s, y in pairs if y]; neg = [s for s, y in pairs if not y]
# AUC as the Mann-Whitney statistic, ties counted half
auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
print(f"{auc:.6f}\t{len(pairs)}")
PY
)
    printf '%s\t%s\t%s\t%s\n' "$variant" "$seed" "$auc" "$cold" | tee -a results.tsv
  done
done
python3 - results.tsv <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
for v in ["ids", "text"]:
    a = [float(r[2]) for r in rows if r[0] == v]
    c = [float(r[3]) for r in rows if r[0] == v]
    n = rows[0][4]
    print(f"DeepFM ML-100K {v:4s}: test AUC {statistics.mean(a):.4f} ± {statistics.stdev(a):.4f}; "
          f"on the {n} test rows of items unseen in training {statistics.mean(c):.4f} ± {statistics.stdev(c):.4f} "
          f"(seeds: {a}, cold: {c})")
PY
