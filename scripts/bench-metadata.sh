#!/usr/bin/env bash
# Benchmark of metadata scale: a node with a deep history (many snapshots, millions of tiny
# files), and how long the read-only commands and a compaction take on it, with their peak
# memory and how many lines they print; optionally beside another build (META_BASELINE), the
# two taking turns. Builds and runs `kompactor-bench metadata` (src/bin/kompactor-bench/).
#
#   scripts/bench-metadata.sh                  # 50,112 snapshots, 2,004,480 file entries
#   META_DAYS=10 scripts/bench-metadata.sh     # a quicker run (5,760 snapshots, 230,400 files)
#   META_BASELINE=/tmp/kompactor-old scripts/bench-metadata.sh   # beside another build
#   scripts/bench-metadata.sh --help           # every option, and the META_* variable it reads
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
echo "== building (release)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --features dev-tools
exec "$CARGO_TARGET_DIR/release/kompactor-bench" metadata "$@"
