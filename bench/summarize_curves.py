#!/usr/bin/env python3
"""Summarizes bench/curves.sh: per experiment and seed, both implementations' test AUC, epochs
run, the epoch of the first learning-rate cut and the validation AUC at fixed epochs; then the
means over seeds and the gap of the mean validation curves (a run stopped early holds its last
value) at epochs 10, 50 and the last.

usage: summarize_curves.py RESULTS.jsonl
"""
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(dict)
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        runs[(r["expid"], r["seed"])][r["impl"]] = r


def first_cut(r):
    lr0 = r["lr"][0] if r["lr"] and r["lr"][0] is not None else None
    for i, lr in enumerate(r["lr"]):
        # recforge's list is shifted: entry i is the rate epoch i+2 trained at
        if lr is not None and lr0 is not None and lr < lr0 * 0.99:
            return i + 1
    return "-"


marks = [1, 5, 10, 25, 50, 100]
print("| experiment | seed | impl | test AUC | epochs | first LR cut after epoch | "
      + " | ".join(f"valid AUC @{m}" for m in marks) + " |")
print("|---|---|---|---|---|---|" + "---|" * len(marks))
by_exp = defaultdict(lambda: defaultdict(list))
for (expid, seed), impls in sorted(runs.items()):
    for impl in ("recforge", "FuxiCTR"):
        r = impls.get(impl)
        if r is None:
            continue
        by_exp[expid][impl].append(r)
        at = [f"{r['curve'][m - 1]:.4f}" if len(r["curve"]) >= m else "" for m in marks]
        print(f"| {expid} | {seed} | {impl} | {r['test']['auc']:.4f} | {r['epochs']} | {first_cut(r)} | "
              + " | ".join(at) + " |")
print()
print("| experiment | seeds | recforge test AUC (mean ± std) | FuxiCTR | diff of means | recforge − FuxiCTR mean valid AUC @10 / @50 / @last common epoch |")
print("|---|---|---|---|---|---|")
for expid, impls in by_exp.items():
    rs, fs = impls.get("recforge", []), impls.get("FuxiCTR", [])
    if not rs or not fs:
        continue
    ms = lambda xs: (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
    (rm, rsd), (fm, fsd) = ms([r["test"]["auc"] for r in rs]), ms([r["test"]["auc"] for r in fs])
    # runs stopped early keep their last value, so every seed counts at every epoch
    n = max(len(r["curve"]) for r in rs + fs)
    at = lambda r, i: r["curve"][min(i, len(r["curve"]) - 1)]
    mean_at = lambda xs, i: statistics.mean(at(r, i) for r in xs)
    gaps = " / ".join(f"{mean_at(rs, i) - mean_at(fs, i):+.4f}" for i in sorted({min(9, n - 1), min(49, n - 1), n - 1}))
    print(f"| {expid} | {len(rs)}/{len(fs)} | {rm:.4f} ± {rsd:.4f} | {fm:.4f} ± {fsd:.4f} | {rm - fm:+.4f} | {gaps} |")
