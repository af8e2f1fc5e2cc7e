#!/usr/bin/env bash
# Builds kompactor and runs every test (unit, end-to-end on the fixtures, and the ones that
# need a real InfluxDB 3 Core server or root).
#
# A real server is taken from $INFLUXDB3_BIN (3.10 line), else from `influxdb3` on PATH, and
# $INFLUXDB3_BIN_3_0 (3.0.x). The tests that need what this machine lacks fail unless told to go
# without it (KOMPACTOR_TESTS_SKIP, see tests/common/prereq.rs): this script says so only for
# what it cannot find, and ends with one line saying how many tests did not run, and why.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

skip=()
if [[ -z ${INFLUXDB3_BIN:-} ]] && command -v influxdb3 >/dev/null; then
    INFLUXDB3_BIN=$(command -v influxdb3)
    export INFLUXDB3_BIN
fi
[[ -n ${INFLUXDB3_BIN:-} ]] || skip+=(real-server)
[[ -n ${INFLUXDB3_BIN_3_0:-} ]] || skip+=(real-server-3.0)
[[ $(id -u) == 0 ]] || skip+=(root)
if [[ -n ${KOMPACTOR_TESTS_SKIP:-} ]]; then
    skip+=("$KOMPACTOR_TESTS_SKIP")
fi
if ((${#skip[@]})); then
    KOMPACTOR_TESTS_SKIP=$(IFS=,; echo "${skip[*]}")
    export KOMPACTOR_TESTS_SKIP
fi
skipped=$(mktemp "${TMPDIR:-/tmp}/kompactor-skipped.XXXXXX")
trap 'rm -f "$skipped"' EXIT
export KOMPACTOR_SKIPPED="$skipped"

rc=0
cargo test --release --features failpoints,dev-tools "$@" || rc=$?
n=$(sort -u "$skipped" | wc -l)
if ((n > 0)); then
    echo "$n test(s) did not run: no ${KOMPACTOR_TESTS_SKIP//,/, no } on this machine (see tests/common/prereq.rs)"
else
    echo "every test ran"
fi
exit "$rc"
