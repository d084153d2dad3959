#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 10^6) or MAX_SECONDS (default 600),
# whichever comes first, from the committed seeds; prints executions and crashes per target.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it
# pass libFuzzer's flags. Crashes land in fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-1000000}
MAX_SECONDS=${MAX_SECONDS:-600}
TARGETS=${TARGETS:-"rows config_yaml checkpoint http_bodies mcp_line"}
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none -O
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null
  log="$(mktemp)"
  cargo fuzz run --sanitizer none -O "$t" "corpus/$t" -- \
    -runs="$RUNS" -max_total_time="$MAX_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(grep -Eo "stat::number_of_executed_units: *[0-9]+" "$log" | grep -Eo "[0-9]+$")
  secs=$(grep -Eo "stat::.*time.*|Done [0-9]+ runs in [0-9]+ second" "$log" | grep -Eo "in [0-9]+ second" | grep -Eo "[0-9]+")
  crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  echo "$t: exit $rc, ${execs:-?} executions in ${secs:-?} s, $crashes crash artifacts"
  [ "$rc" = 0 ] || tail -30 "$log"
done
