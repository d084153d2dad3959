#!/usr/bin/env python3
"""BENCHMARKS.md's AdvKT table from bench/advkt-results.jsonl: per dataset and model, the
mean ± standard deviation over seeds of the test metrics (the last line of each
(model, dataset, seed) counts)."""
import json
import statistics
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "bench/advkt-results.jsonl"
runs = {}
for line in open(path):
    r = json.loads(line)
    runs[(r["dataset"], r["model"], r["seed"])] = r
cols = ["auc", "multistep_auc", "multistep_auc@5", "multistep_auc@10",
        "multistep_teacher_forced_auc", "freerun_auc"]
print("| data | model | seeds | " + " | ".join(cols) + " | epochs (best) |")
print("|---" * (len(cols) + 4) + "|")
order = {"DKT": 0, "SAKT": 1, "AKT": 2, "DKVMN": 3, "AdvKT": 4}
for data in dict.fromkeys(k[0] for k in runs):
    models = sorted({k[1] for k in runs if k[0] == data}, key=lambda m: order.get(m, 9))
    for model in models:
        rs = [r for k, r in sorted(runs.items()) if k[:2] == (data, model)]
        cells = []
        for c in cols:
            v = [r["test"][c] for r in rs if c in r["test"]]
            if not v:
                cells.append("—")
            elif len(v) == 1:
                cells.append(f"{v[0]:.4f}")
            else:
                cells.append(f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}")
        ep = ", ".join(f"{r['epochs']} ({r.get('best_epoch')})" for r in rs)
        print(f"| {data} | {model} | {len(rs)} | " + " | ".join(cells) + f" | {ep} |")
