"""Runs RecBole 1.2.1's sequential models on a `user item item ...` file (Amazon Beauty from
amazon_seq_gram) with the settings of configs/seq and prints one JSON line: test metrics of the
best-valid checkpoint, epochs, median seconds per training epoch, RecBole's training instances.

usage: recbole_seq_run.py USER_SEQUENCE_FILE WORK_DIR MODEL [EPOCHS]
Leave-one-out as recforge does it (RecBole's `LS: valid_and_test`, order kept by a timestamp
column that numbers each user's items), full ranking, CE over all items, histories of 50.
"""
import json, os, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recbole_shims import epoch_times, train_losses, valid_scores  # noqa: E402
from recbole.quick_start import run_recbole  # noqa: E402

source, work, model = sys.argv[1], sys.argv[2], sys.argv[3]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 300
ds = os.path.join(work, "beauty")
os.makedirs(ds, exist_ok=True)
inter = os.path.join(ds, "beauty.inter")
if not os.path.exists(inter):
    with open(source) as f, open(inter, "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in f:
            user, *items = line.split()
            for t, item in enumerate(items):
                out.write(f"{user}\t{item}\t{t}\n")

config = {
    "data_path": work, "seed": 2020, "reproducibility": True, "use_gpu": False,
    "learning_rate": 1e-3, "epochs": epochs, "train_batch_size": 256,
    "metrics": ["Hit", "NDCG", "MRR"], "topk": [10, 20], "valid_metric": "NDCG@10",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "eval_batch_size": 1 << 22, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": 50, "train_neg_sample_args": None, "loss_type": "CE",
    "checkpoint_dir": os.path.join(work, "saved"), "show_progress": False,
    "eval_step": 1, "stopping_step": 10,
}
per_model = {
    "SASRec": {"n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
               "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
               "layer_norm_eps": 1e-12, "initializer_range": 0.02},
    "GRU4Rec": {"embedding_size": 64, "hidden_size": 64, "num_layers": 1, "dropout_prob": 0.3},
}
t0 = time.time()
result = run_recbole(model=model, dataset="beauty", config_dict={**config, **per_model[model]})
print(json.dumps({
    "model": model, "epochs_trained": len(epoch_times),
    "median_epoch_s": statistics.median(epoch_times) if epoch_times else None,
    "wall_s": round(time.time() - t0, 1), "valid_ndcg@10_per_epoch": valid_scores,
    "train_loss_sum_per_epoch": train_losses,
    "valid": {k.lower(): v for k, v in result["best_valid_result"].items()},
    "test": {k.lower(): v for k, v in result["test_result"].items()},
}), flush=True)
