#!/usr/bin/env bash
# Benchmark: kompactor against the floor (kompactor-baseline: a bare DuckDB sort-and-write of
# the same groups, no dedup, no verification, no commit) on a generated data dir, and the
# server's downtime with prepare + commit. Builds and runs `kompactor-bench merge`
# (src/bin/kompactor-bench/), which alternates the tools, each run on a fresh copy of the
# dataset, and prints medians and ratios.
#
#   scripts/bench.sh                       # 10M rows, window 1h, 3 runs of each
#   BENCH_ROWS=2000000 scripts/bench.sh    # a quicker run
#   scripts/bench.sh --bigwindow           # (or BENCH_BIGWINDOW=1) one 1d window of >= 20M
#                                          # rows, both tools under --memory-limit 256MB
#   scripts/bench.sh --help                # every option, and the BENCH_* variable it reads
#
# Exit status 1 when a run failed (the figures then are the medians of the successful runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
echo "== building (release)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --features dev-tools
exec "$CARGO_TARGET_DIR/release/kompactor-bench" merge "$@"
