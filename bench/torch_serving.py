"""The same DeepFM as a served recforge model, scored in PyTorch (inference_mode): batches of
`--batch` rows of random ids, for `--seconds`. Shape from recforge's /v1/models JSON
(field vocabulary sizes) plus --emb/--hidden/--batch-norm. Prints one JSON line."""
import argparse, json, time
import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("model_info")
p.add_argument("--emb", type=int, default=10)
p.add_argument("--hidden", default="400,400,400")
p.add_argument("--batch-norm", action="store_true")
p.add_argument("--batch", type=int, default=500)
p.add_argument("--seconds", type=float, default=20)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
info = json.load(open(a.model_info))["models"][0]
vocab = [f["vocabulary_size"] for f in info["fields"]]


class DeepFM(nn.Module):
    """FuxiCTR's DeepFM at inference: LR + FM on field embeddings + MLP (Linear, BN, ReLU)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.ModuleList(nn.Embedding(v, a.emb) for v in vocab)
        self.lr = nn.ModuleList(nn.Embedding(v, 1) for v in vocab)
        self.bias = nn.Parameter(torch.zeros(1))
        layers, d = [], a.emb * len(vocab)
        for h in map(int, a.hidden.split(",")):
            layers += [nn.Linear(d, h)] + ([nn.BatchNorm1d(h)] if a.batch_norm else []) + [nn.ReLU(), nn.Dropout(0.2)]
            d = h
        self.mlp = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x):
        e = torch.stack([t(x[:, i]) for i, t in enumerate(self.emb)], 1)
        lr = sum(t(x[:, i]) for i, t in enumerate(self.lr)) + self.bias
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)
        return torch.sigmoid(lr + fm + self.mlp(e.flatten(1)))


model = DeepFM().eval()
g = torch.Generator().manual_seed(3)
pool = [torch.stack([torch.randint(0, v, (a.batch,), generator=g) for v in vocab], 1) for _ in range(16)]
times = []
with torch.inference_mode():
    for x in pool:
        model(x)
    start = time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        t = time.perf_counter()
        model(pool[len(times) % len(pool)])
        times.append((time.perf_counter() - t) * 1e3)
    total = time.perf_counter() - start
times.sort()
n = len(times)
print(json.dumps({"impl": f"PyTorch {torch.__version__}", "batch": a.batch, "batches_per_sec": round(n / total, 3),
                  "p50_ms": round(times[n // 2], 3), "p99_ms": round(times[n * 99 // 100], 3)}))
