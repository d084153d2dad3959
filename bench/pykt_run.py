"""pyKT 0.0.38's DKT, SAKT and AKT classes, unchanged, trained on recforge's KT splits with the
protocol of ../shared/anchors/EDU.md (and configs/kt): non-overlapping windows of <= 200,
windows of one interaction dropped, every position but a window's first predicted, Adam,
batch 64, BCE (+ AKT's Rasch term), stop after `patience` epochs without a valid AUC above the
best + 1e-3, the best-valid weights evaluated on test. Prints one JSON line per epoch and a
final one with the test metrics, seconds per epoch, predicted responses per second and the
process's peak resident memory.

usage: python bench/pykt_run.py --model DKT --dataset statics [--epochs 200] [--threads 2]
"""
import argparse, copy, json, os, resource, time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

DATA = os.environ.get("RECFORGE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
ASSIST = os.path.join(DATA, "kt_akt", "assist2009_pid")
STATICS = os.path.join(DATA, "kt_akt", "statics")


def read(path, four_line):
    """Records of a 3-line (header, concepts, responses) or 4-line (header, problems, concepts,
    responses) file as (problems, concepts, responses) lists."""
    lines = [l.strip() for l in open(path) if l.strip()]
    step = 4 if four_line else 3
    assert len(lines) % step == 0, f"{path}: {len(lines)} lines"
    ints = lambda l: [int(x) for x in l.split(",") if x.strip() != ""]
    out = []
    for i in range(0, len(lines), step):
        rows = [ints(l) for l in lines[i + 1 : i + step]]
        if four_line:
            p, c, r = rows
        else:
            c, r = rows
            p = [0] * len(c)
        out.append((p, c, r))
    return out


def splits(dataset):
    if dataset == "statics":
        f = lambda n: read(os.path.join(STATICS, f"statics_{n}1.csv"), False)
        return f("train"), f("valid"), f("test")
    train = []
    for k in (2, 3, 4, 5):
        train += read(os.path.join(ASSIST, f"assist2009_pid_test{k}.csv"), True)
    valid = [s for i, s in enumerate(train) if i % 10 == 0]
    train = [s for i, s in enumerate(train) if i % 10 != 0]
    return train, valid, read(os.path.join(ASSIST, "assist2009_pid_test1.csv"), True)


def windows(seqs, max_len=200):
    out = []
    for p, c, r in seqs:
        for s in range(0, len(c), max_len):
            if len(c[s : s + max_len]) >= 2:
                out.append((p[s : s + max_len], c[s : s + max_len], r[s : s + max_len]))
    return out


def tensors(ws):
    L = max(len(w[1]) for w in ws)
    p, c, r, m = (torch.zeros(len(ws), L, dtype=torch.long) for _ in range(4))
    for i, (pi, ci, ri) in enumerate(ws):
        n = len(ci)
        p[i, :n], c[i, :n], r[i, :n], m[i, :n] = torch.tensor(pi), torch.tensor(ci), torch.tensor(ri), 1
    return p, c, r, m.bool()


def build(model, num_c, num_p):
    if model == "DKT":
        from pykt.models.dkt import DKT
        return DKT(num_c, 200, dropout=0.1)
    if model == "SAKT":
        from pykt.models.sakt import SAKT
        return SAKT(num_c, 200, 256, 8, 0.2, num_en=2)
    from pykt.models.akt import AKT
    # the anchor's AKT (configs/kt AKT_*): n_pid = the largest problem id, as recforge's table
    return AKT(num_c, max(num_p - 1, 0), 256, 1, 0.05, d_ff=512, kq_same=1, final_fc_dim=512,
               num_attn_heads=8, l2=1e-5)


def predict(model, name, p, c, r):
    """Probabilities of positions 1.. of each window and the Rasch regulariser."""
    if name == "DKT":
        y = model(c, r)
        return (y[:, :-1] * F.one_hot(c[:, 1:], y.shape[-1])).sum(-1), 0.0
    if name == "SAKT":
        return model(c[:, :-1], r[:, :-1], c[:, 1:]), 0.0
    if model.n_pid > 0:
        y, reg = model(c, r, p)
    else:
        y, reg = model(c, r)
    return y[:, 1:], reg


def evaluate(model, name, ws, batch=64):
    model.eval()
    ys, ts = [], []
    with torch.no_grad():
        for i in range(0, len(ws), batch):
            p, c, r, m = tensors(ws[i : i + batch])
            y, _ = predict(model, name, p, c, r)
            sm = m[:, 1:]
            ys.append(torch.masked_select(y, sm).numpy())
            ts.append(torch.masked_select(r[:, 1:], sm).numpy())
    y, t = np.concatenate(ys), np.concatenate(ts)
    return {"auc": float(roc_auc_score(t, y)), "acc": float(((y >= 0.5) == t).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["DKT", "SAKT", "AKT"], required=True)
    ap.add_argument("--dataset", choices=["statics", "assist2009"], required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-batches", type=int, default=0, help="stop each epoch after this many batches (timing only)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, valid, test = splits(a.dataset)
    num_c = 1 + max(max(c) for _, c, _ in train + valid + test)
    num_p = 1 + max(max(p) for p, _, _ in train + valid + test) if a.dataset != "statics" else 0
    tw, vw, sw = windows(train), windows(valid), windows(test)
    model = build(a.model, num_c, num_p)
    lr = 1e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, best_epoch, epoch_secs, rates = -1.0, None, 0, [], []
    gen = torch.Generator().manual_seed(a.seed)
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(len(tw), generator=gen).tolist()
        start, scored, losses = time.time(), 0, []
        for b, i in enumerate(range(0, len(order), 64)):
            if a.max_batches and b >= a.max_batches:
                break
            p, c, r, m = tensors([tw[j] for j in order[i : i + 64]])
            y, reg = predict(model, a.model, p, c, r)
            sm = m[:, 1:]
            loss = F.binary_cross_entropy(torch.masked_select(y, sm).double(),
                                          torch.masked_select(r[:, 1:], sm).double()) + reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            scored += int(sm.sum())
            losses.append(loss.item())
        secs = time.time() - start
        epoch_secs.append(secs)
        rates.append(scored / secs)
        v = evaluate(model, a.model, vw)
        print(json.dumps({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_auc": v["auc"],
                          "seconds": secs, "samples_per_s": scored / secs}), flush=True)
        if v["auc"] > best + 1e-3:
            best, best_state, best_epoch = v["auc"], copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= a.patience:
            break
    model.load_state_dict(best_state)
    t = evaluate(model, a.model, sw)
    print(json.dumps({
        "final": True, "tool": "pykt-0.0.38", "model": a.model, "dataset": a.dataset, "seed": a.seed,
        "threads": a.threads, "best_epoch": best_epoch, "epochs": len(epoch_secs), "valid_auc": best,
        "test_auc": t["auc"], "test_acc": t["acc"],
        "median_epoch_seconds": float(np.median(epoch_secs)), "median_samples_per_s": float(np.median(rates)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }), flush=True)


if __name__ == "__main__":
    main()
