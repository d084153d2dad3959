#!/usr/bin/env python3
"""Summarizes bench/map.sh: test AUC / logloss mean ± std over seeds per experiment, label
fraction and method, with the change against training from scratch."""
import statistics as st
import sys

runs = {}
for line in open(sys.argv[1]):
    e, seed, method, frac, auc, ll = line.rstrip("\n").split("\t")
    if auc:
        runs.setdefault((e, frac, method), []).append((float(auc), float(ll)))


def fmt(xs):
    sd = st.stdev(xs) if len(xs) > 1 else 0.0
    return f"{st.mean(xs):.4f} ± {sd:.4f}"


print("| expid | labels | method | test AUC | Δ AUC vs scratch | test logloss | seeds |")
print("|---|---|---|---|---|---|---|")
for (e, frac, method), r in sorted(runs.items(), key=lambda k: (k[0][0], -float(k[0][1]), ["scratch", "mfp", "rfd"].index(k[0][2]))):
    aucs, lls = [x[0] for x in r], [x[1] for x in r]
    base = runs.get((e, frac, "scratch"))
    delta = st.mean(aucs) - st.mean(x[0] for x in base) if base and method != "scratch" else None
    label = "100%" if float(frac) >= 1 else f"{float(frac) * 100:.0f}%"
    d = f"{delta:+.4f}" if delta is not None else ""
    print(f"| {e} | {label} | {method.upper() if method != 'scratch' else 'scratch'} | {fmt(aucs)} | {d} | {fmt(lls)} | {len(r)} |")
