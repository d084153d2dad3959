#!/usr/bin/env python3
"""One FuxiCTR 2.3.10 model (its model_zoo, from a checkout of reczoo/FuxiCTR) on one of our
splits, with the same configs recforge reads (configs/fuxictr; experiment DIN_ml100k_behaviour
by default, any `<Model>_<dataset>` of that file works).

FuxiCTR's own FeatureProcessor fits and encodes the CSVs (its tokenizer, padding, truncation and
share_embedding vocabulary); batches come from an in-memory loader with a seeded shuffle, as
for ../shared/anchors (FuxiCTR's Ray loader is slow on 2 cores and unseeded); training is
FuxiCTR's BaseModel.fit (BCE, gradient clipping at 10, Adam, reduce-LR-on-plateau, early
stopping), and the best-valid checkpoint is restored before the test.

usage: fuxictr_run.py CONFIG_DIR DATA_DIR FUXICTR_SRC [--expid ID] [--seed S] [--threads 2]
prints one JSON line: {"expid", "seed", "valid": {...}, "test": {...}, "epochs", "seconds",
"curve": [validation AUC after each epoch], "lr": [learning rate after each epoch]}
"""
import argparse, json, logging, os, sys, tempfile, time

import numpy as np
import polars as pl
import torch
import yaml

from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor
from fuxictr.pytorch.torch_utils import seed_everything

p = argparse.ArgumentParser()
p.add_argument("config_dir")
p.add_argument("data_dir", help="folder with the split's train/valid/test.csv")
p.add_argument("fuxictr_src", help="a checkout of reczoo/FuxiCTR (for model_zoo/<Model>/src)")
p.add_argument("--expid", default="DIN_ml100k_behaviour")
p.add_argument("--seed", type=int, default=2024)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
logging.basicConfig(level=logging.WARNING)

with open(os.path.join(a.config_dir, "model_config.yaml")) as f:
    models = yaml.safe_load(f)
with open(os.path.join(a.config_dir, "dataset_config.yaml")) as f:
    datasets = yaml.safe_load(f)
params = dict(models.get("Base", {}))
params.update(models[a.expid])
params["seed"] = a.seed
ds = datasets[params["dataset_id"]]
model_name = params["model"]
# model_zoo/<Model>/src, or model_zoo/<Model>/<Model>_torch/src where a TF twin exists
zoo = os.path.join(a.fuxictr_src, "model_zoo", model_name)
sys.path.insert(0, next(d for d in [os.path.join(zoo, "src"), os.path.join(zoo, f"{model_name}_torch", "src")]
                        if os.path.isdir(d)))
Model = getattr(__import__(model_name), model_name)

work = tempfile.mkdtemp(prefix="fuxictr_run_")
fp = FeatureProcessor(feature_cols=ds["feature_cols"], label_col=ds["label_col"],
                      dataset_id=params["dataset_id"], data_root=work)


def read(split):
    # FuxiCTR's read_data passes polars' removed `dtypes=`; the same scan with its new name
    ddf = pl.scan_csv(os.path.join(a.data_dir, f"{split}.csv"), schema_overrides=fp.dtype_dict,
                      low_memory=False)
    return fp.preprocess(ddf)


fp.fit(read("train"), min_categr_count=ds.get("min_categr_count", 1), rebuild_dataset=True)
# as FuxiCTR's scripts do: the feature map the processor saved, loaded with the run's params
fmap = FeatureMap(params["dataset_id"], fp.data_dir)
fmap.load(fp.json_file, params)


def encode(split):
    df = read(split).collect()
    cols = list(fmap.features) + fmap.labels
    batch = fp.transform({c: df[c].to_list() for c in cols})
    out = {}
    for c in cols:
        v = np.asarray(batch[c])
        if c in fmap.labels or fmap.features[c]["type"] == "numeric":
            out[c] = torch.from_numpy(v.astype(np.float32))
        else:
            out[c] = torch.from_numpy(v.astype(np.int64))
    return out, len(df)


class Loader:
    """Batches of one split held in memory; the train split reshuffles every epoch."""

    def __init__(self, data, n, batch_size, shuffle, seed):
        self.data, self.n, self.bs, self.shuffle = data, n, batch_size, shuffle
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return (self.n + self.bs - 1) // self.bs

    def __iter__(self):
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        for s in range(0, self.n, self.bs):
            idx = torch.from_numpy(order[s:s + self.bs])
            yield {k: v[idx] for k, v in self.data.items()}


seed_everything(seed=a.seed)
splits = {s: encode(s) for s in ["train", "valid", "test"]}
bs = params["batch_size"]
train = Loader(*splits["train"], bs, True, a.seed)
valid = Loader(*splits["valid"], bs, False, a.seed)
test = Loader(*splits["test"], bs, False, a.seed)

params.update(model_root=os.path.join(work, "ckpt"), gpu=-1, verbose=0,
              early_stop_patience=params.get("early_stop_patience", 2),
              save_best_only=True, eval_steps=None)
model = Model(fmap, **params)
os.makedirs(os.path.dirname(model.checkpoint), exist_ok=True)
epochs_run = [0]
train_epoch = model.train_epoch


def counted(gen):
    epochs_run[0] += 1
    return train_epoch(gen)


model.train_epoch = counted
# the monitor's validation metrics after every epoch, and the learning rate its plateau rule left
curve, lrs = [], []
checkpoint_and_earlystop = model.checkpoint_and_earlystop


def recorded(logs, **kw):
    curve.append(float(logs.get("AUC", float("nan"))))
    out = checkpoint_and_earlystop(logs, **kw)
    lrs.append(model.optimizer.param_groups[0]["lr"])
    return out


model.checkpoint_and_earlystop = recorded
t0 = time.time()
model.fit(train, validation_data=valid, epochs=params["epochs"])
seconds = time.time() - t0
model.load_weights(model.checkpoint)
lower = lambda d: {k.lower(): float(v) for k, v in d.items()}
print(json.dumps({"impl": "FuxiCTR", "expid": a.expid, "seed": a.seed,
                  "valid": lower(model.evaluate(valid)), "test": lower(model.evaluate(test)),
                  "epochs": epochs_run[0], "seconds": round(seconds, 1), "curve": curve, "lr": lrs}))
