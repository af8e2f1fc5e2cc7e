#!/usr/bin/env bash
# Builds kompactor-gen and writes a deterministic synthetic InfluxDB 3 Core data dir (3.10 layout).
#
#   scripts/gen.sh <out-dir> [kompactor-gen options]
#   scripts/gen.sh /tmp/data --rows 10000000                  # ~10M rows: 2 tables, 2 days, node0
#   scripts/gen.sh /tmp/data --tables 1 --days 1 --rows 20000000
#   scripts/gen.sh --help                                     # every option
#
# The same options give the same bytes. Then, e.g.:
#   ~/.cache/kompactor-target/release/kompactor /tmp/data --hosts node0 --dry-run --window 1h --min-age 0
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --features dev-tools --bin kompactor-gen
exec "$CARGO_TARGET_DIR/release/kompactor-gen" "$@"
