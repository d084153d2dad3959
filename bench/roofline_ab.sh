#!/usr/bin/env bash
# The roofline (`recforge-bench roofline`) of two recforge-bench binaries, alternating old/new
# so that a shared host's noise falls on both. Appends one JSON line per run (with "binary" and
# "rep" added) to OUT and prints each run's step, GEMM-alone time and fraction.
#   usage: bench/roofline_ab.sh OLD_BENCH_BIN NEW_BENCH_BIN [OUT]
#          (env: REPS=2 ROUNDS=5 MODELS="DeepFM DCNv2")
set -euo pipefail
OLD=$(realpath "$1"); NEW=$(realpath "$2")
OUT=$(realpath -m "${3:-bench/out/roofline-ab.jsonl}"); mkdir -p "$(dirname "$OUT")"
for rep in $(seq "${REPS:-2}"); do
  for m in ${MODELS:-DeepFM DCNv2}; do
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      "$bin" roofline --model "$m" --rounds "${ROUNDS:-5}" | grep '^{' \
        | sed "s/^{/{\"binary\":\"$which\",\"rep\":$rep,/" | tee -a "$OUT" \
        | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d["binary"], d["model"], "step", d["step_ms_median"], "ms, GEMM alone", d["gemm_ms"], "ms, fraction", d["fraction_of_gemm_bound"], d["fraction_each_round"])'
    done
  done
done
