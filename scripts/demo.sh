#!/usr/bin/env bash
# Builds kompactor and runs it on a copy of the sample data dir in fixtures/:
# the plan (dry run), the compaction, and a second run that finds nothing left to do.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release
bin="$CARGO_TARGET_DIR/release/kompactor"
work="$(mktemp -d)"
cp -a fixtures/influxdb3-3.10/small/node0 "$work/"
echo "== copy of fixtures/influxdb3-3.10/small in $work"
echo
echo "== kompactor $work --hosts node0 --dry-run"
"$bin" "$work" --hosts node0 --dry-run
echo
echo "== kompactor $work --hosts node0"
"$bin" "$work" --hosts node0
echo
echo "== kompactor $work --hosts node0 (again: nothing left to do)"
"$bin" "$work" --hosts node0
