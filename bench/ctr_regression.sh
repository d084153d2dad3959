#!/usr/bin/env bash
# CTR training throughput of two recforge binaries (e.g. before and after a refactor) on one
# synthetic log, runs alternating old/new so that machine noise falls on both, same threads,
# one epoch each. Prints the median samples/s per binary and model and the new/old ratio.
#   usage: bench/ctr_regression.sh OLD_BIN NEW_BIN [OUT_DIR]
#          (env: ROWS=1000000 THREADS=2 REPS=3 MODELS="DeepFM DCNv2")
set -euo pipefail
OLD=$(readlink -f "$1"); NEW=$(readlink -f "$2")
OUT=$(mkdir -p "${3:-bench/out/ctr-regression}" && readlink -f "${3:-bench/out/ctr-regression}")
ROWS=${ROWS:-1000000}; THREADS=${THREADS:-2}; REPS=${REPS:-3}
# the older binary writes the data, so both read a format the older one knows
[ -f "$OUT/syn/train.csv" ] || "$OLD" data generate --out "$OUT/syn" --rows "$ROWS" --criteo-like 1000000 > /dev/null
"$NEW" data inspect --config "$OUT/syn" --expid DeepFM_synthetic > /dev/null 2>&1   # encode once
: > "$OUT/runs.tsv"
for rep in $(seq "$REPS"); do
  for m in ${MODELS:-DeepFM DCNv2}; do
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      rm -rf "$OUT/run"
      "$bin" --threads "$THREADS" train --config "$OUT/syn" --expid "${m}_synthetic" --set epochs=1 \
        --run-dir "$OUT/run" > /dev/null 2>&1
      # the samples/s column of the epoch's row, found by its header
      sps=$(python3 -c "import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); k=[c for c in r[0] if 'samples' in c][0]; print(r[-1][k])" "$OUT/run/metrics.csv")
      printf '%s\t%s\t%s\t%s\n' "$rep" "$m" "$which" "$sps" | tee -a "$OUT/runs.tsv"
    done
  done
done
python3 - "$OUT/runs.tsv" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for _, m, w, s in rows:
    med.setdefault((m, w), []).append(float(s))
for m in dict.fromkeys(r[1] for r in rows):
    o, n = statistics.median(med[(m, "old")]), statistics.median(med[(m, "new")])
    print(f"{m}: old {o:,.0f} samples/s, new {n:,.0f} samples/s, new/old {n / o:.3f} (medians of {len(med[(m, 'old')])})")
PY
