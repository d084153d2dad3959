#!/usr/bin/env python3
"""Summarizes bench/accuracy.sh results (mean ± std over seeds) next to FuxiCTR 2.3.10's."""
import statistics as st
import sys

# ../shared/anchors/FUXICTR.md: test AUC mean over seeds 2024-2026 (criteo: seed 2024), logloss
FUXICTR = {
    "LR_frappe": (0.9166, 0.4224), "FM_frappe": (0.8924, 0.6378), "DeepFM_frappe": (0.9550, 0.3153), "DCNv2_frappe": (0.9570, 0.3043),
    "LR_ml100k": (0.6818, 0.6323), "FM_ml100k": (0.7031, 0.6195), "DeepFM_ml100k": (0.7121, 0.6195), "DCNv2_ml100k": (0.7127, 0.6168),
    "LR_criteo": (0.7285, 0.4784), "FM_criteo": (0.7242, 0.4870), "DeepFM_criteo": (0.7078, 0.5059), "DCNv2_criteo": (0.6964, 0.5051),
}
rows = {}
for line in open(sys.argv[1]):
    e, seed, auc, ll, epochs = line.split("\t")
    rows.setdefault(e, []).append((float(auc), float(ll), int(epochs)))
print("| expid | recforge AUC | FuxiCTR AUC | Δ AUC | recforge logloss | FuxiCTR logloss | epochs |")
print("|---|---|---|---|---|---|---|")
for e, r in rows.items():
    aucs = [x[0] for x in r]
    lls = [x[1] for x in r]
    sd = st.stdev(aucs) if len(aucs) > 1 else 0.0
    ref_auc, ref_ll = FUXICTR.get(e, (float("nan"), float("nan")))
    m = st.mean(aucs)
    print(f"| {e} | {m:.4f} ± {sd:.4f} | {ref_auc:.4f} | {m - ref_auc:+.4f} | {st.mean(lls):.4f} | {ref_ll:.4f} | {'/'.join(str(x[2]) for x in r)} |")
