"""Runs RecBole 1.2.1 on DiffRec's ML-1M clean split with recforge's configs' settings and
prints one JSON line per model: test metrics, epochs, median seconds per training epoch and per
validation pass.

usage: recbole_run.py DATA_DIR WORK_DIR MODEL [EPOCHS]
RecBole 1.2.1 needs shims for numpy 2, scipy >= 1.15, torch >= 2.6 and a missing tensorboard
(bench/recbole_shims.py); they change no computation.
"""
import json, os, statistics, sys, time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recbole_shims import epoch_times as times, eval_times, trainable_params  # noqa: E402
from recbole.quick_start import run_recbole  # noqa: E402

data_dir, work, model = sys.argv[1], sys.argv[2], sys.argv[3]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 300
ds = os.path.join(work, "ml1m")
os.makedirs(ds, exist_ok=True)
for split in ["train", "valid", "test"]:
    out = os.path.join(ds, f"ml1m.{split}.inter")
    if not os.path.exists(out):
        pairs = np.load(os.path.join(data_dir, f"{split}_list.npy"))
        with open(out, "w") as f:
            f.write("user_id:token\titem_id:token\n")
            for u, i in pairs:
                f.write(f"{u}\t{i}\n")

common = {
    "data_path": work, "benchmark_filename": ["train", "valid", "test"], "seed": 2020,
    "reproducibility": True, "use_gpu": False, "learning_rate": 1e-3, "epochs": epochs,
    "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [10, 20], "valid_metric": "Recall@20",
    "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "order": "RO", "group_by": "user", "mode": "full"},
    "eval_batch_size": 1 << 22, "load_col": {"inter": ["user_id", "item_id"]},
    "checkpoint_dir": os.path.join(work, "saved"), "show_progress": False,
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
}
per_model = {
    "Pop": {},
    "BPR": {"embedding_size": 64, "train_batch_size": 2048, "eval_step": 2, "stopping_step": 5},
    "LightGCN": {"embedding_size": 64, "n_layers": 2, "reg_weight": 1e-5, "train_batch_size": 2048, "eval_step": 2, "stopping_step": 5},
    "MultiVAE": {"train_batch_size": 500, "mlp_hidden_size": [600], "latent_dimension": 128, "dropout_prob": 0.5,
                 "anneal_cap": 0.2, "total_anneal_steps": 200000, "eval_step": 5, "stopping_step": 4, "train_neg_sample_args": None},
    "EASE": {"reg_weight": 250.0, "train_neg_sample_args": None},
    # DiffRec's tuned ML-1M-clean values; RecBole's default schedule is `linear`: set linear-var
    "DiffRec": {"train_batch_size": 400, "steps": 40, "noise_schedule": "linear-var", "noise_scale": 5e-3,
                "noise_min": 5e-3, "noise_max": 1e-2, "sampling_noise": False, "sampling_steps": 0,
                "reweight": True, "mean_type": "x0", "dims_dnn": [600, 200, 600], "embedding_size": 10,
                "mlp_act_func": "tanh", "eval_step": 5, "stopping_step": 4, "train_neg_sample_args": None},
    # L-DiffRec's ML-1M-clean values (L-DiffRec/inference.py; one optimizer at 1e-3 as RecBole has)
    "LDiffRec": {"train_batch_size": 400, "n_cate": 2, "in_dims": [300], "out_dims": [], "ae_act_func": "tanh",
                 "reparam": True, "lamda": 0.03, "anneal_cap": 0.005, "anneal_steps": 500, "vae_anneal_cap": 0.3,
                 "vae_anneal_steps": 200, "steps": 40, "noise_schedule": "linear-var", "noise_scale": 5e-3,
                 "noise_min": 5e-3, "noise_max": 2e-2, "sampling_noise": False, "sampling_steps": 0, "reweight": True,
                 "mean_type": "x0", "dims_dnn": [300], "embedding_size": 10, "mlp_act_func": "tanh",
                 "eval_step": 5, "stopping_step": 4, "train_neg_sample_args": None},
}
if model == "LDiffRec":
    # RecBole reads <dataset>/item_emb.npy, one row per internal item id 1..n: reorder the rows of
    # recforge's vectors (row k = item token k) by RecBole's id → token map
    from recbole.config import Config  # noqa: E402
    from recbole.data import create_dataset  # noqa: E402
    ds = create_dataset(Config(model=model, dataset="ml1m", config_dict={**common, **per_model[model]}))
    emb = np.load(os.environ["ITEM_EMB"])
    np.save(os.path.join(ds.dataset_path, "item_emb.npy"), emb[[int(t) for t in ds.field2id_token["item_id"][1:]]])
t0 = time.time()
result = run_recbole(model=model, dataset="ml1m", config_dict={**common, **per_model[model]})
print(json.dumps({
    "model": model, "epochs_trained": len(times),
    "median_epoch_s": statistics.median(times) if times else None,
    "median_eval_s": statistics.median(eval_times) if eval_times else None,
    "wall_s": round(time.time() - t0, 1),
    "parameters": trainable_params[-1] if trainable_params else None,
    "test": {k.lower(): v for k, v in result["test_result"].items()},
}), flush=True)
