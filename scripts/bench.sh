#!/usr/bin/env bash
# Benchmark: kompactor against the floor (kompactor-baseline: a bare DuckDB sort-and-write of
# the same groups, no dedup, no verification, no commit), on a generated data dir.
#
#   scripts/bench.sh                       # 10M rows, window 1h, 3 runs of each
#   BENCH_ROWS=2000000 scripts/bench.sh    # a quicker run
#   BENCH_BIGWINDOW=1 scripts/bench.sh     # (or: scripts/bench.sh --bigwindow) one 1d window
#                                          # of >= 20M rows, kompactor --memory-limit 256MB
#
# Environment (all optional):
#   BENCH_ROWS=10000000    rows to generate (normal scenario: 1 db, 2 tables, 2 days)
#   BENCH_RUNS=3           runs of each tool (big-window scenario: default 1)
#   BENCH_WINDOW=1h        --window of the normal scenario
#   BENCH_SEED=42          generator seed
#   BENCH_DIR=~/.cache/kompactor-bench   where datasets (kept, reused) and scratch copies live
#   BENCH_REGEN=1          regenerate the dataset even if it exists
#   BENCH_KEEP_LOGS=1      keep the per-run logs (/usr/bin/time -v and output; always kept
#                          when a run fails)
#   BENCH_KOMPACTOR_ARGS   extra kompactor arguments (e.g. "--threads 2")
#   BENCH_BASELINE_ARGS    extra kompactor-baseline arguments (e.g. "--threads 2")
#   BENCH_BIGWINDOW=1      run the big-window scenario instead
#   BENCH_BIG_ROWS=20000000  rows of the big-window dataset (1 table, 1 day: one 1d window)
#   BENCH_MEMORY_LIMIT=256MB --memory-limit of both tools in the big-window scenario
#   BENCH_THREADS          --threads of both tools in the big-window scenario (unset: not passed)
#   BENCH_PREPARE=1        normal scenario: also time `kompactor prepare` and the compaction
#                          that commits what it prepared (the server's downtime), on one copy
#
# Each measured command runs on its own fresh `cp -a` copy of the dataset (copy and `sync` are
# not measured; the copies are deleted at the end, so BENCH_DIR needs room for 2 x BENCH_RUNS
# copies) under /usr/bin/time -v. Medians over the runs are printed. The copies are in the
# page cache when measured, for both tools alike. Nothing is installed. Exit status 1 when a
# run failed (the table then shows the medians of the successful runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh

big="${BENCH_BIGWINDOW:-0}"
for a in "$@"; do
    case "$a" in
        --bigwindow | --big-window) big=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument \`$a\` (see --help)" >&2; exit 2 ;;
    esac
done

if [ ! -x /usr/bin/time ] || ! /usr/bin/time -v true >/dev/null 2>&1; then
    echo "bench.sh: GNU time (/usr/bin/time -v) is needed and missing." >&2
    echo "  Debian/Ubuntu: sudo apt-get install time    (check: apt list --installed | grep -w time)" >&2
    exit 1
fi

seed="${BENCH_SEED:-42}"
bench_dir="${BENCH_DIR:-$HOME/.cache/kompactor-bench}"
node=node0
if [ "$big" = 1 ]; then
    scenario="big window"
    rows="${BENCH_BIG_ROWS:-20000000}"
    runs="${BENCH_RUNS:-1}"
    window=1d
    gen_args=(--rows "$rows" --dbs 1 --tables 1 --days 1 --seed "$seed")
    mem="${BENCH_MEMORY_LIMIT:-256MB}"
    k_extra=(--memory-limit "$mem")
    b_extra=(--memory-limit "$mem")
    if [ -n "${BENCH_THREADS:-}" ]; then
        k_extra+=(--threads "$BENCH_THREADS")
        b_extra+=(--threads "$BENCH_THREADS")
    fi
else
    scenario="normal"
    rows="${BENCH_ROWS:-10000000}"
    runs="${BENCH_RUNS:-3}"
    window="${BENCH_WINDOW:-1h}"
    gen_args=(--rows "$rows" --dbs 1 --tables 2 --days 2 --seed "$seed")
    k_extra=()
    b_extra=()
fi
two_step=0
if [ "$big" != 1 ] && [ "${BENCH_PREPARE:-1}" = 1 ]; then two_step=1; fi
# Word-split on purpose: extra arguments from the environment.
# shellcheck disable=SC2206
k_extra+=(${BENCH_KOMPACTOR_ARGS:-})
# shellcheck disable=SC2206
b_extra+=(${BENCH_BASELINE_ARGS:-})

echo "== building (release)"
cargo build --release --quiet --features dev-tools
K="$CARGO_TARGET_DIR/release/kompactor"
B="$CARGO_TARGET_DIR/release/kompactor-baseline"
G="$CARGO_TARGET_DIR/release/kompactor-gen"

# The dataset is generated once per (options, generator source) and reused.
mkdir -p "$bench_dir"
gen_hash="$(cat src/bin/kompactor-gen/*.rs | sha256sum | cut -c1-10)"
key="$(echo "${gen_args[*]}" | tr -c 'a-zA-Z0-9\n' '_' | tr -s '_')"
ds="$bench_dir/data${key}-g$gen_hash"
if [ "${BENCH_REGEN:-0}" = 1 ] || [ ! -e "$ds.complete" ]; then
    rm -rf "$ds" "$ds.complete"
    echo "== generating $ds"
    "$G" "$ds" --node "$node" "${gen_args[@]}"
    sync
    touch "$ds.complete"
else
    echo "== reusing $ds"
fi

# What both tools are given: the groups of the plan (window, --min-age 0).
plan="$("$B" "$ds" --node "$node" --window "$window" --plan-only)"
in_groups="$(sed -n 's/.*groups=\([0-9]*\).*/\1/p' <<<"$plan")"
in_files="$(sed -n 's/.*files=\([0-9]*\).*/\1/p' <<<"$plan")"
in_rows="$(sed -n 's/.*rows=\([0-9]*\).*/\1/p' <<<"$plan")"
in_bytes="$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$plan")"
echo "== plan (window $window, --min-age 0): $in_groups groups, $in_files input files, $in_rows rows, $in_bytes bytes"
if [ "$in_groups" = 0 ]; then
    echo "bench.sh: nothing to merge in $ds" >&2
    exit 1
fi

logs="$(mktemp -d "$bench_dir/logs-XXXXXX")"
work="$bench_dir/work-$$"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    rm -rf "$work"
    if [ "${BENCH_KEEP_LOGS:-0}" != 1 ]; then rm -rf "$logs"; fi
}
trap cleanup EXIT

# field <time -v file> <label>: the value after "<label>: ".
field() { sed -n "s/^[[:space:]]*$2: //p" "$1" | head -1; }
# Wall clock "h:mm:ss" or "m:ss.xx" to seconds.
to_secs() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.3f", s }' <<<"$1"; }

# measure <name> <run> <command...>: a fresh copy of the dataset, then the command (with
# @DIR@ standing for the copy) under /usr/bin/time -v. Appends "exit wall cpu rss_kb" to
# $logs/<name>.tsv; returns the command's exit status.
#
# Every run gets its own copy and no copy is deleted before the end: ext4 allocates inodes
# slowly for about half a minute after thousands were freed, which would charge the
# harness's own clean-up to whichever tool creates more files (kompactor's trash and staged
# metadata) rather than measure the tools.
measure() {
    local name="$1" run="$2"
    shift 2
    local dir="$work/$name-$run"
    cp -a "$ds" "$dir"
    sync
    measure_on "$dir" "$name" "$run" "$@"
}

# measure_on <dir> <name> <run> <command...>: like measure, on the copy <dir> as it is.
measure_on() {
    local dir="$1" name="$2" run="$3"
    shift 3
    local args=("${@//@DIR@/$dir}")
    local t="$logs/$name-$run.time" out="$logs/$name-$run.log" rc=0
    /usr/bin/time -v -o "$t" "${args[@]}" >"$out" 2>&1 || rc=$?
    local wall user sys rss
    wall="$(to_secs "$(field "$t" 'Elapsed (wall clock) time (h:mm:ss or m:ss)')")"
    user="$(field "$t" 'User time (seconds)')"
    sys="$(field "$t" 'System time (seconds)')"
    rss="$(field "$t" 'Maximum resident set size (kbytes)')"
    echo "$rc $wall $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') $rss" >>"$logs/$name.tsv"
    printf '   %-10s run %d: wall %7.2fs  user %7.2fs  sys %6.2fs  peak RSS %7.1f MB  exit %d\n' \
        "$name" "$run" "$wall" "$user" "$sys" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$rc"
    if [ "$rc" != 0 ]; then
        echo "   $name run $run FAILED (exit $rc); last lines of $out:"
        { grep -m 3 -iE 'error|warn|skipped' "$out" || tail -n 4 "$out"; } | cut -c1-240 | sed 's/^/     | /'
    fi
    return "$rc"
}

mkdir -p "$work"
k_cmd=("$K" @DIR@ --hosts "$node" --window "$window" --min-age 0 --writer-reach 0)
b_cmd=("$B" @DIR@ --node "$node" --window "$window")
echo "== $scenario scenario: $runs run(s) each, alternating; logs in $logs"
echo "   kompactor: kompactor <copy> --hosts $node --window $window --min-age 0 --writer-reach 0 ${k_extra[*]:-}"
echo "   baseline:  kompactor-baseline <copy> --node $node --window $window ${b_extra[*]:-}"
k_note=""
failed=0
for i in $(seq 1 "$runs"); do
    rc=0
    measure kompactor "$i" "${k_cmd[@]}" "${k_extra[@]}" || rc=$?
    if [ "$rc" = 2 ] && grep -qE "unexpected argument|unrecognized|invalid value" "$logs/kompactor-$i.log"; then
        k_note="kompactor rejected: ${k_extra[*]} ($(grep -m1 -E "unexpected argument|unrecognized|invalid value" "$logs/kompactor-$i.log" | sed 's/^error: //')); it ran WITHOUT them, so its peak RSS is not bounded by a memory limit."
        echo "   NOTE: $k_note"
        k_extra=()
        sed -i '$d' "$logs/kompactor.tsv"
        rc=0
        measure kompactor "$i" "${k_cmd[@]}" || rc=$?
    fi
    [ "$rc" = 0 ] || failed=1
    rc=0
    measure baseline "$i" "${b_cmd[@]}" "${b_extra[@]}" || rc=$?
    [ "$rc" = 0 ] || failed=1
    if [ "$two_step" = 1 ]; then
        # prepare (server running: not downtime), then the compaction that commits it, on the
        # same copy.
        rc=0
        measure prepare "$i" "$K" prepare @DIR@ --hosts "$node" --window "$window" --min-age 0 --writer-reach 0 "${k_extra[@]}" || rc=$?
        [ "$rc" = 0 ] || failed=1
        rc=0
        measure_on "$work/prepare-$i" commit "$i" "${k_cmd[@]}" "${k_extra[@]}" || rc=$?
        [ "$rc" = 0 ] || failed=1
    fi
done

# After the full run and after prepare + commit, every table must hold the same: per table,
# its live files' count, rows and time range (`kompactor status --json`); the tests compare
# the rows themselves.
tables_after() {
    "$K" status "$1" --hosts "$node" --json >"$2.json" &&
        python3 - "$2.json" >"$2" <<'EOF_PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for n in doc["nodes"]:
    for t in n["tables"]:
        print(n["node"], t["table"], t["files"], t["rows_in_files"], t["min_time"], t["max_time"])
EOF_PY
}
same_rows=""
if [ "$two_step" = 1 ] && [ "$failed" = 0 ]; then
    if tables_after "$work/kompactor-1" "$logs/full.tables" &&
        tables_after "$work/prepare-1" "$logs/two-step.tables" &&
        [ -s "$logs/full.tables" ] &&
        diff "$logs/full.tables" "$logs/two-step.tables" >"$logs/rows.diff"; then
        same_rows="identical"
    else
        same_rows="DIFFERENT or not read (see $logs/rows.diff)"
        failed=1
    fi
fi

# median <name> <column 2..4>: over the runs that exited 0; "nan" if none did.
median() {
    awk -v c="$2" '$1 == 0 { print $c }' "$logs/$1.tsv" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) print "nan"
            else if (NR % 2) print v[(NR + 1) / 2]
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
# failures <name>: "N of M run(s) failed (exit X)" or nothing.
failures() {
    awk '$1 != 0 { n++; e = $1 } END { if (n) printf "%d of %d run(s) failed (last exit %s)", n, NR, e }' "$logs/$1.tsv"
}

kw="$(median kompactor 2)"; kc="$(median kompactor 3)"; kr="$(median kompactor 4)"
bw="$(median baseline 2)"; bc="$(median baseline 3)"; br="$(median baseline 4)"
if rev="$(git rev-parse --short HEAD 2>/dev/null)"; then
    git diff --quiet HEAD 2>/dev/null || rev="$rev+dirty"
else
    rev="?"
fi
echo
echo "== medians of $runs run(s): $scenario scenario, window $window, $in_files files / $in_rows rows / $(awk -v b="$in_bytes" 'BEGIN { printf "%.1f", b / 1e6 }') MB in $in_groups groups"
echo "   (kompactor $rev, $(nproc) CPU(s), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM)"
awk -v kw="$kw" -v kc="$kc" -v kr="$kr" -v bw="$bw" -v bc="$bc" -v br="$br" \
    -v rows="$in_rows" -v bytes="$in_bytes" '
    function num(x, f) { return x == "nan" ? "failed" : sprintf(f, x) }
    function ratio(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.2fx", a / b) }
    function div(a, b, f) { return (a == "nan" || b == "nan") ? "failed" : sprintf(f, a / b) }
    BEGIN {
    fmt = "%-28s %14s %14s %12s\n"
    printf fmt, "", "kompactor", "baseline", "k/b"
    printf fmt, "wall time (s)", num(kw, "%.2f"), num(bw, "%.2f"), ratio(kw, bw)
    printf fmt, "CPU time user+sys (s)", num(kc, "%.2f"), num(bc, "%.2f"), ratio(kc, bc)
    printf fmt, "rows/s (input rows / wall)", div(rows, kw, "%.0f"), div(rows, bw, "%.0f"), ratio(bw, kw)
    printf fmt, "input MB/s", div(bytes / 1e6, kw, "%.1f"), div(bytes / 1e6, bw, "%.1f"), ratio(bw, kw)
    printf fmt, "peak RSS (MB)", div(kr, 1024, "%.1f"), div(br, 1024, "%.1f"), ratio(kr, br)
}'
if [ "$two_step" = 1 ]; then
    pw="$(median prepare 2)"; cw="$(median commit 2)"; pr="$(median prepare 4)"; cr="$(median commit 4)"
    echo
    echo "== downtime: the server is stopped for the whole full run, or only for the commit after prepare"
    awk -v kw="$kw" -v pw="$pw" -v cw="$cw" -v kr="$kr" -v pr="$pr" -v cr="$cr" '
        function num(x, f) { return x == "nan" ? "failed" : sprintf(f, x) }
        function ratio(a, b) { return (a == "nan" || b == "nan" || b == 0) ? "-" : sprintf("%.3f", a / b) }
        BEGIN {
        fmt = "%-40s %12s %14s %16s\n"
        printf fmt, "", "wall (s)", "peak RSS (MB)", "x full run wall"
        printf fmt, "full offline run (all downtime)", num(kw, "%.2f"), num(kr / 1024, "%.1f"), "1"
        printf fmt, "prepare (server running)", num(pw, "%.2f"), num(pr / 1024, "%.1f"), ratio(pw, kw)
        printf fmt, "commit after prepare (all downtime)", num(cw, "%.2f"), num(cr / 1024, "%.1f"), ratio(cw, kw)
    }'
    echo "   per table (live files, rows, min and max time), full run vs prepare + commit: ${same_rows:-not compared (a run failed)}"
fi
for n in kompactor baseline prepare commit; do
    [ -e "$logs/$n.tsv" ] || continue
    f="$(failures "$n")"
    if [ -n "$f" ]; then echo "FAILED: $n: $f; medians are over the successful runs (logs: $logs)"; fi
done
if [ -n "$k_note" ]; then
    echo
    echo "NOTE: $k_note"
fi
if [ "${BENCH_KEEP_LOGS:-0}" = 1 ] || [ "$failed" = 1 ]; then
    trap - EXIT
    rm -rf "$work"
    echo "logs: $logs"
fi
exit "$failed"
