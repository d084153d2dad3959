"""sentence-transformers' side of bench/minilm.sh: the same texts, batch size and timing
rules as `recforge-bench text-encode|text-finetune`; prints one JSON line.

usage: minilm_st.py encode|finetune --model DIR --texts FILE [--column text] [--n 256]
       [--batch 32] [--reps 5] [--pairs 16] [--steps 10] [--threads 2]
"""
import argparse
import json
import resource
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer


def read_texts(path, column, n):
    with open(path) as f:
        return [json.loads(line)[column] for line in f if line.strip()][:n]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=["encode", "finetune"])
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--column", default="text")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    texts = read_texts(a.texts, a.column, a.n)
    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if a.task == "encode":
        model.encode(texts, batch_size=a.batch)
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            model.encode(texts, batch_size=a.batch)
            times.append(time.perf_counter() - t)
        print(json.dumps({"engine": "sentence-transformers", "task": "encode", "sentences": len(texts),
                          "batch": a.batch, "sentences_per_sec": round(len(texts) / statistics.median(times), 1),
                          "peak_rss_mb": rss()}))
    else:
        # MultipleNegativesRankingLoss by hand (scale 20), Adam over every parameter, train mode
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-5)
        anchors, positives = texts[: a.pairs], texts[1: a.pairs + 1]
        fa, fp = model.tokenize(anchors + positives), None

        def step():
            emb = model(dict(fa))["sentence_embedding"]
            x = torch.nn.functional.normalize(emb[: a.pairs], dim=-1)
            y = torch.nn.functional.normalize(emb[a.pairs:], dim=-1)
            loss = torch.nn.functional.cross_entropy(20.0 * x @ y.T, torch.arange(a.pairs))
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        times = []
        for _ in range(a.steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        print(json.dumps({"engine": "sentence-transformers", "task": "finetune", "pairs": a.pairs,
                          "step_ms": round(statistics.median(times) * 1000, 1), "peak_rss_mb": rss()}))


if __name__ == "__main__":
    main()
