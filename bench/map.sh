#!/usr/bin/env bash
# MAP pretraining (issue 3): scratch vs MFP→finetune vs RFD→finetune, FuxiCTR's configs for
# DeepFM and DCNv2 on the Frappe, MovieLens-100K and Criteo-slice splits, 3 seeds, test AUC and
# logloss; and a low-label regime (finetune on 10% of the training labels — the same rows for
# every method — with pretraining on all training rows). Results: OUT/results.tsv, then a
# table (bench/summarize_map.py).
#   usage: bench/map.sh [OUT_DIR]
#   env: RECFORGE_DATA, SEEDS="2024 2025 2026", EXPIDS="DeepFM_frappe …", PT_EPOCHS=3 (MAP's
#        own setting), EPOCHS=10 (cap on supervised epochs, same for every method; early
#        stopping as configured), FRACTIONS="1 0.1", THREADS=2
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/map}" && readlink -f "${1:-$ROOT/bench/out/map}")
DATA=${RECFORGE_DATA:-$ROOT/../shared/data}
SEEDS=${SEEDS:-"2024 2025 2026"}
EXPIDS=${EXPIDS:-"DeepFM_frappe DCNv2_frappe DeepFM_ml100k DCNv2_ml100k DeepFM_criteo DCNv2_criteo"}
PT_EPOCHS=${PT_EPOCHS:-3}
FRACTIONS=${FRACTIONS:-"1 0.1"}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-10}
(cd "$ROOT" && cargo build --release --locked -q)
# a copy: rebuilding the tree while this runs must not change the binary mid-way
mkdir -p "$OUT/bin" && cp "$ROOT/target/release/recforge" "$OUT/bin/recforge"
BIN=$OUT/bin/recforge
mkdir -p "$OUT/config"
[ -d "$OUT/data/frappe" ] || "$BIN" data split --data-dir "$DATA" --out "$OUT/data" >/dev/null
sed "s#\./data/#$OUT/data/#g" "$ROOT/configs/fuxictr/dataset_config.yaml" > "$OUT/config/dataset_config.yaml"
cp "$ROOT/configs/fuxictr/model_config.yaml" "$OUT/config/model_config.yaml"
mkdir -p "$OUT/pt"
touch "$OUT/results.tsv"
run_train() { # expid seed method fraction [init]
  local e=$1 s=$2 m=$3 f=$4 init=${5:-}
  local key="$e	$s	$m	$f"
  grep -q "^$key	" "$OUT/results.tsv" && return 0   # resumable
  local dir="runs/$e-$s-$m-$f"
  line=$(cd "$OUT" && "$BIN" --threads "$THREADS" train --config config --expid "$e" --set seed=$s --set epochs=$EPOCHS \
      --set label_fraction=$f ${init:+--init-from "$init"} --run-dir "$dir" 2>/dev/null | grep '^test')
  auc=$(echo "$line" | awk '{for(i=1;i<NF;i++) if($i=="AUC") print $(i+1)}')
  ll=$(echo "$line" | awk '{for(i=1;i<NF;i++) if($i=="logloss") print $(i+1)}')
  printf "%s\t%s\t%s\n" "$key" "$auc" "$ll" | tee -a "$OUT/results.tsv"
}
for e in $EXPIDS; do
  for s in $SEEDS; do
    for f in $FRACTIONS; do run_train "$e" "$s" scratch "$f"; done
    for m in mfp rfd; do
      pt="pt/$e-$s-$m"
      if [ ! -f "$OUT/$pt/model.safetensors" ]; then
        (cd "$OUT" && "$BIN" --threads "$THREADS" pretrain --config config --expid "$e" --method $m \
          --set seed=$s --set pt_epochs=$PT_EPOCHS --out "$pt" 2> "$OUT/$pt.log" >/dev/null)
      fi
      for f in $FRACTIONS; do run_train "$e" "$s" $m "$f" "$pt"; done
    done
  done
done
python3 "$ROOT/bench/summarize_map.py" "$OUT/results.tsv"
