#!/usr/bin/env bash
# Builds kompactor and runs every test (unit and end-to-end on the fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --release --features failpoints,dev-tools "$@"
