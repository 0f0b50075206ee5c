#!/usr/bin/env bash
# Regenerates every table of benches/README.md in one run, printing each bench's summary.
# Run it on a quiet machine: nothing else building or running. 10-15 minutes on a
# 2-core machine, plus the build. `latency` (through a latency relay, plain and HTTPS) is
# built and run with `--features rustls`; `requests` (the criterion twin of `paired`) is
# not run. Output is also kept in target/bench-logs/<bench>.log.
#
#   bash benches/run-all.sh            # the README's round counts
#   QUICK=1 bash benches/run-all.sh    # a few rounds of each: checks the script, not the figures
set -euo pipefail
cd "$(dirname "$0")/.."

logs=target/bench-logs
mkdir -p "$logs"

if [[ -n "${QUICK:-}" ]]; then
  paired=100 sharing=10 multi_thread=10 task_runner=10 close=2 carry=1 latency=2
  criterion=(--warm-up-time 0.2 --measurement-time 0.5)
else
  paired=10000 sharing=500 multi_thread=1000 task_runner=1500 close=60 carry=20 latency=200
  criterion=()
fi

load() { echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "== building the benches (not timed)"
cargo bench --no-run 2>&1 | tail -n 1
cargo bench --no-run --features rustls --bench latency 2>&1 | tail -n 1
cargo test --test alloc --no-run 2>&1 | tail -n 1

start=$SECONDS
echo "== $(date -u '+%F %T') UTC; $(nproc) CPUs; $(load)"
if awk '{ exit !($1 > 0.5) }' /proc/loadavg; then
  echo "warning: the machine is not quiet; the figures will be noisy"
fi

run() {
  local bench=$1
  shift
  # HTTPS rows need rtlocal's rustls feature; the other benches build without it.
  local features=()
  if [[ $bench == latency ]]; then
    features=(--features rustls)
  fi
  echo
  echo "== $bench ($(load))"
  local t=$SECONDS
  # A hang guard only: every bench normally takes a few minutes at most.
  timeout 1800 cargo bench "${features[@]}" --bench "$bench" -- "$@" > "$logs/$bench.log" 2>&1 || {
    echo "$bench failed:"
    tail -n 30 "$logs/$bench.log"
    exit 1
  }
  echo "   ($((SECONDS - t)) s, full output in $logs/$bench.log)"
}

# `client()` on an unchanged runtime and close_all over 1,000 slots (criterion).
run client "${criterion[@]}"
# (criterion's comparison with its previous run, the lines with %, left out)
grep -E '^[a-z_0-9]+/[^ ]*\s+time:|^\s+time:|^\s+thrpt:|^[a-z_0-9/]+$' "$logs/client.log" |
  grep -v '%' || true

# Memory retained per thread slot (a test that measures and prints it).
echo
echo "== memory per retired thread slot ($(load))"
timeout 600 cargo test --test alloc -- --nocapture > "$logs/alloc.log" 2>&1 || {
  tail -n 30 "$logs/alloc.log"
  exit 1
}
grep -E 'bytes per slot' "$logs/alloc.log" || true

# The interleaved benches print their own summaries: show everything after the build.
for spec in "paired $paired" "sharing $sharing" "multi_thread $multi_thread" \
  "task_runner $task_runner" "close $close" "carry $carry" "latency $latency"; do
  set -- $spec
  run "$1" "$2"
  sed -n '/Running/,$p' "$logs/$1.log" | tail -n +2
done

echo
echo "== done in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s; $(load)"
