#!/usr/bin/env bash
# Shows that training data larger than the memory a process may use still trains: generates a
# click log whose encoded cache is several times larger than a memory cgroup's limit, then
# encodes it and trains one epoch of LR inside that cgroup (needs root and cgroup v1 or v2).
#   usage: bench/out_of_core.sh [OUT_DIR]     (env: ROWS=5000000 LIMIT_MB=400)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out/out_of_core}" && readlink -f "${1:-$ROOT/bench/out/out_of_core}")
ROWS=${ROWS:-5000000}
LIMIT_MB=${LIMIT_MB:-400}
BIN=$ROOT/target/release/recforge
(cd "$ROOT" && cargo build --release --locked -q)
[ -f "$OUT/syn/train.csv" ] || "$BIN" data generate --out "$OUT/syn" --rows "$ROWS" --criteo-like 1000000 > /dev/null
rm -rf "$OUT/syn/processed" "$OUT/run"
if [ -d /sys/fs/cgroup/memory ]; then            # cgroup v1
  CG=/sys/fs/cgroup/memory/recforge-ooc; mkdir -p $CG
  echo $((LIMIT_MB * 1024 * 1024)) > $CG/memory.limit_in_bytes; echo 0 > $CG/memory.max_usage_in_bytes || true
  PEAK=$CG/memory.max_usage_in_bytes
else                                             # cgroup v2
  CG=/sys/fs/cgroup/recforge-ooc; mkdir -p $CG
  echo $((LIMIT_MB * 1024 * 1024)) > $CG/memory.max; PEAK=$CG/memory.peak
fi
bash -c "echo \$\$ > $CG/cgroup.procs 2>/dev/null || echo \$\$ > $CG/tasks; exec /usr/bin/time -f '%M' -o '$OUT/rss.txt' '$BIN' --threads 2 train --config '$OUT/syn' --expid LR_synthetic --set epochs=1 --set shuffle_block_rows=65536 --run-dir '$OUT/run'" > "$OUT/train.log" 2>&1
echo "rows: $ROWS; CSV: $(du -m "$OUT/syn/train.csv" | cut -f1) MB train; encoded cache: $(du -cm "$OUT"/syn/processed/synthetic/*.bin | tail -1 | cut -f1) MB"
echo "memory limit: $LIMIT_MB MB; cgroup peak (RSS + page cache): $(( $(cat $PEAK) / 1024 / 1024 )) MB; process peak RSS: $(( $(cat "$OUT/rss.txt") / 1024 )) MB"
grep '^test' "$OUT/train.log"
