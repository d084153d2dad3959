"""Markdown table of bench/recbole.sh's results.jsonl: test metrics, epochs, median seconds per
epoch and their ratio, peak RSS, recforge beside RecBole per model."""
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["system"], r["model"]): r for r in rows}
models = list(dict.fromkeys(r["model"] for r in rows))
print("| model | system | R@10 | R@20 | N@10 | N@20 | R@20 vs RecBole | epochs | s/epoch (median) | RecBole s / recforge s | peak RSS MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    rf, rb = by.get(("recforge", m)), by.get(("recbole", m))
    for r in (rf, rb):
        if r is None:
            continue
        t = r["test"]
        rel = ""
        if r is rf and rb:
            rel = f"{100 * (t['recall@20'] / rb['test']['recall@20'] - 1):+.1f}%"
        ratio = ""
        if r is rf and rb and rf["median_epoch_s"] and rb["median_epoch_s"]:
            ratio = f"{rb['median_epoch_s'] / max(rf['median_epoch_s'], 1e-3):.1f}×"
        s = r["median_epoch_s"]
        print(f"| {m} | {r['system']} | {t['recall@10']:.4f} | {t['recall@20']:.4f} | {t['ndcg@10']:.4f} | "
              f"{t['ndcg@20']:.4f} | {rel} | {r['epochs_trained']} | {s if s is None else round(s, 3)} | {ratio} | {r['peak_rss_mb']} |")
