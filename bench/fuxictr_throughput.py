#!/usr/bin/env python3
"""Training throughput of FuxiCTR 2.3.10 (PyTorch, CPU) on a recforge synthetic log.

Reads the same train.csv recforge trains on (`label,f0..f38`, integer ids), builds FuxiCTR's
FeatureMap for it, and runs one epoch of FuxiCTR's own `BaseModel.train_step` (forward, BCE +
regularization, backward, clip_grad_norm_(10), Adam) over shuffled batches held in memory
(FuxiCTR's Ray loader is slow on 2 cores; see ../shared/anchors/FUXICTR.md).

The PyPI wheel ships neither DeepFM nor the plain DCNv2 (its model_zoo.LongCTR.DCNv2 is the
long-sequence variant), so both are assembled here from FuxiCTR's public blocks as FuxiCTR's
model zoo defines them: DeepFM = FeatureEmbedding + FactorizationMachine (own first-order
table) + MLP_Block on the flattened embeddings; DCNv2 (parallel) = FeatureEmbedding +
CrossNetV2 ‖ MLP_Block, then one Linear.

Any other model (the CTR zoo: AutoInt, xDeepFM, FiBiNET, ...) is FuxiCTR's own class from a
checkout of reczoo/FuxiCTR (`--fuxictr-src`, its model_zoo/<MODEL>/src), built with the
hyper-parameters of `--config FILE`'s entry `--expid` (bench/run.sh passes the entry recforge
trains, so both sides run the same model).

usage: fuxictr_throughput.py TRAIN_CSV MODEL [--batch 4096] [--dim 16] [--threads 2] [--limit N]
                             [--fuxictr-src DIR --config MODEL_CONFIG.yaml --expid ID]
prints one JSON line: {"model", "rows", "seconds", "samples_per_sec", "peak_rss_mb"}
"""
import argparse, json, os, resource, sys, time

import numpy as np
import polars as pl
import torch
from torch import nn
from fuxictr.features import FeatureMap
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block, FactorizationMachine, CrossNetV2

p = argparse.ArgumentParser()
p.add_argument("train_csv")
p.add_argument("model")
p.add_argument("--batch", type=int, default=4096)
p.add_argument("--dim", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--limit", type=int, default=0)
p.add_argument("--fuxictr-src")
p.add_argument("--config")
p.add_argument("--expid")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(2024)

df = pl.read_csv(a.train_csv)
if a.limit:
    df = df.head(a.limit)
fields = [c for c in df.columns if c != "label"]
fmap = FeatureMap("synthetic", "/tmp")
fmap.labels = ["label"]
for f in fields:
    # ids 0..V-1 → 1..V (0 = padding), plus an OOV row, as FuxiCTR's tokenizer lays them out
    fmap.features[f] = {"source": "", "type": "categorical", "vocab_size": int(df[f].max()) + 3, "padding_idx": 0}
fmap.num_fields = len(fields)
fmap.input_length = len(fields)
fmap.column_index = {f: i for i, f in enumerate(fields)}
fmap.default_emb_dim = a.dim

common = dict(model_root="/tmp/fuxictr_ckpt", verbose=0, metrics=["logloss", "AUC"], gpu=-1)


class DeepFM(BaseModel):
    def __init__(self, feature_map, embedding_dim=16, hidden_units=(400, 400, 400), **kw):
        super().__init__(feature_map, model_id="DeepFM", **kw)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.num_fields * embedding_dim,
                             output_dim=1, hidden_units=list(hidden_units), hidden_activations="ReLU",
                             output_activation=None, dropout_rates=0, batch_norm=False)
        self.compile("adam", "binary_crossentropy", 1e-3)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb)
        y_pred += self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


class DCNv2(BaseModel):
    def __init__(self, feature_map, embedding_dim=16, hidden_units=(400, 400, 400), num_cross_layers=3, **kw):
        super().__init__(feature_map, model_id="DCNv2", **kw)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.num_fields * embedding_dim
        self.crossnet = CrossNetV2(input_dim, num_cross_layers)
        self.parallel_dnn = MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=list(hidden_units),
                                      hidden_activations="ReLU", output_activation=None, dropout_rates=0, batch_norm=False)
        self.fc = nn.Linear(input_dim + hidden_units[-1], 1)
        self.compile("adam", "binary_crossentropy", 1e-3)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_out = self.crossnet(feature_emb)
        dnn_out = self.parallel_dnn(feature_emb)
        y_pred = self.fc(torch.cat([cross_out, dnn_out], dim=-1))
        return {"y_pred": self.output_activation(y_pred)}


if a.model == "DeepFM":
    model = DeepFM(fmap, embedding_dim=a.dim, **common)
elif a.model == "DCNv2":
    model = DCNv2(fmap, embedding_dim=a.dim, **common)
else:
    import yaml
    if not (a.fuxictr_src and a.config and a.expid):
        sys.exit(f"{a.model}: pass --fuxictr-src, --config and --expid for a model_zoo model")
    zoo = os.path.join(a.fuxictr_src, "model_zoo", a.model)
    sys.path.insert(0, next(d for d in [os.path.join(zoo, "src"), os.path.join(zoo, f"{a.model}_torch", "src")]
                            if os.path.isdir(d)))
    Zoo = getattr(__import__(a.model), a.model)
    with open(a.config) as f:
        params = yaml.safe_load(f)[a.expid]
    params.update(common)
    params["embedding_dim"] = a.dim
    fmap.default_emb_dim = a.dim
    model = Zoo(fmap, **params)
model.train()
model._max_gradient_norm = 10.0  # set by BaseModel.fit, which this loop replaces

cols = {f: torch.from_numpy(df[f].to_numpy().astype(np.int64) + 1) for f in fields}
labels = torch.from_numpy(df["label"].to_numpy().astype(np.float32))
n = len(df)
order = torch.randperm(n, generator=torch.Generator().manual_seed(2024))
t0 = time.perf_counter()
for lo in range(0, n, a.batch):
    idx = order[lo:lo + a.batch]
    batch = {f: c[idx] for f, c in cols.items()}
    batch["label"] = labels[idx]
    model.train_step(batch)
secs = time.perf_counter() - t0
print(json.dumps({"model": a.model, "rows": n, "seconds": round(secs, 2), "samples_per_sec": round(n / secs),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
