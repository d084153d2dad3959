#!/usr/bin/env python3
"""A history-free reference for BENCHMARKS.md's AdvKT table: each question's accuracy among
the training students (one pseudo-answer at the overall rate), scored on the same test
positions as recforge's evaluators (non-overlapping windows of 200, each window's first
interaction not predicted, one-interaction remainders dropped). Statics' three-line files.

    bench/kt_difficulty.py [DATA_ROOT]   (default $RECFORGE_DATA/kt_akt/statics)
"""
import os
import sys


def read(path):
    lines = open(path).read().split("\n")
    out = []
    for i in range(0, len(lines) - 2, 3):
        if lines[i].strip():
            ids = lambda s: [int(x) for x in s.strip().rstrip(",").split(",")]
            out.append((ids(lines[i + 1]), ids(lines[i + 2])))
    return out


def auc(labels, scores):
    """Mann-Whitney AUC, ties counted one half."""
    pairs = sorted(zip(scores, labels))
    pos = sum(labels)
    neg = len(labels) - pos
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(p[1] for p in pairs[i:j])
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("RECFORGE_DATA", "../shared/data"), "kt_akt", "statics")
train = read(os.path.join(root, "statics_train1.csv"))
test = read(os.path.join(root, "statics_test1.csv"))
for name, frac in [("statics", 1.0), ("statics_sparse", 0.1)]:
    keep = train[: max(1, round(len(train) * frac))]
    right, seen = {}, {}
    for qs, rs in keep:
        for q, r in zip(qs, rs):
            right[q] = right.get(q, 0) + r
            seen[q] = seen.get(q, 0) + 1
    rate = sum(right.values()) / sum(seen.values())
    labels, scores = [], []
    for qs, rs in test:
        for w in range(0, len(qs), 200):
            win_q, win_r = qs[w:w + 200], rs[w:w + 200]
            if len(win_q) < 2:
                continue
            for q, r in zip(win_q[1:], win_r[1:]):
                labels.append(r)
                scores.append((right.get(q, 0) + rate) / (seen.get(q, 0) + 1))
    print(f"{name}: {len(keep)} training students, question-difficulty test AUC "
          f"{auc(labels, scores):.4f} over {len(labels)} positions")
