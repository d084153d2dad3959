#!/usr/bin/env python3
"""Summarizes bench/din.sh's results.jsonl: per implementation and experiment, test AUC and
logloss as mean ± std over seeds, epochs run and seconds per epoch (medians)."""
import json, statistics as st, sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        runs[(r["expid"], r["impl"])].append(r)
print("| experiment | implementation | seeds | test AUC | test logloss | epochs | s/epoch |")
print("|---|---|---|---|---|---|---|")
for (expid, impl), rs in sorted(runs.items()):
    auc = [r["test"]["auc"] for r in rs]
    ll = [r["test"]["logloss"] for r in rs]
    sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
    per_epoch = st.median(r["seconds"] / max(r["epochs"], 1) for r in rs)
    print(f"| {expid} | {impl} | {len(rs)} | {st.mean(auc):.4f} ± {sd(auc):.4f} | "
          f"{st.mean(ll):.4f} ± {sd(ll):.4f} | {st.median(r['epochs'] for r in rs)} | {per_epoch:.1f} |")
