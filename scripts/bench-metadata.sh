#!/usr/bin/env bash
# Benchmark of metadata scale: a node with a deep history (many snapshots, millions of tiny
# files), and how long the read-only commands and a compaction take on it, with their peak
# memory and how many lines they print.
#
#   scripts/bench-metadata.sh                  # 50,112 snapshots, 2,004,480 file entries
#   META_DAYS=10 scripts/bench-metadata.sh     # a quicker run (5,760 snapshots, 230,400 files)
#
# Environment (all optional):
#   META_DAYS=87           days of history: snapshots = days x 144 x META_FILES
#   META_DBS=4 META_TABLES=10
#                          databases and tables per database: file entries = snapshots x
#                          META_DBS x META_TABLES (one file per table and snapshot, 1 row each)
#   META_FILES=4           files per table and 10-minute window (one snapshot each)
#   META_COMPACT=1         also time full compactions (0: leave them out; each on a fresh
#                          hard-linked copy; the merge reads every file, so they take long; the
#                          report's phases show the rest)
#   META_ARGS              extra arguments of every kompactor command (e.g. "--load-window 1000")
#   META_COMPACT_RUNS=1    compactions of each build (on a fresh hard-linked copy each time)
#   META_READ_RUNS=1       runs of each read-only command by each build (0: none)
#   META_BASELINE          another kompactor binary (copied out of the target dir after building
#                          an older revision): its runs alternate with this build's, the medians
#                          of both builds are printed side by side with their ratio, and the
#                          outputs of the read-only commands are compared
#   BENCH_DIR=~/.cache/kompactor-bench   where the node is generated (kept, reused)
#
# Each command runs under /usr/bin/time -v, the read-only ones META_READ_RUNS times, a
# compaction META_COMPACT_RUNS times; printed: wall time, peak RSS, and lines of output
# (stdout and stderr together). The first run of a command may find less of the node in the
# page cache than the later ones: with a baseline, the builds take turns, so both see that.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "bench-metadata.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
esac
/usr/bin/time -v true >/dev/null 2>&1 || { echo "bench-metadata.sh: GNU time (/usr/bin/time -v) is needed" >&2; exit 1; }

days="${META_DAYS:-87}" dbs="${META_DBS:-4}" tables="${META_TABLES:-10}" files="${META_FILES:-4}"
bench_dir="${BENCH_DIR:-$HOME/.cache/kompactor-bench}"
node=node0
# Word-split on purpose: extra arguments from the environment.
# shellcheck disable=SC2206
extra=(${META_ARGS:-})

echo "== building (release)"
cargo build --release --quiet --features dev-tools
K="$CARGO_TARGET_DIR/release/kompactor"
G="$CARGO_TARGET_DIR/release/kompactor-gen"

gen_args=(--days "$days" --dbs "$dbs" --tables "$tables" --files-per-window "$files"
    --series "$files" --interval 10m --overwrite-every 0 --seed 42)
gen_hash="$(cat src/bin/kompactor-gen/*.rs | sha256sum | cut -c1-10)"
ds="$bench_dir/meta-d$days-b$dbs-t$tables-f$files-g$gen_hash"
mkdir -p "$bench_dir"
if [ ! -e "$ds.complete" ]; then
    rm -rf "$ds"
    echo "== generating $ds"
    start=$(date +%s)
    "$G" "$ds" --node "$node" --quiet "${gen_args[@]}"
    sync
    touch "$ds.complete"
    echo "   generated in $(($(date +%s) - start)) s"
else
    echo "== reusing $ds"
fi
snapshots=$(find "$ds/$node/snapshots" -name '*.info.json' | wc -l)
parquet=$(find "$ds/$node/dbs" -name '*.parquet' | wc -l)
meta_mb=$(du -sm "$ds/$node/snapshots" "$ds/$node/snapshot-checkpoints" 2>/dev/null | awk '{ s += $1 } END { print s }')
echo "   $snapshots snapshots, $parquet Parquet files, ${meta_mb} MB of snapshots and checkpoints"

logs="$(mktemp -d "${TMPDIR:-/tmp}/kompactor-bench-metadata.XXXXXX")"
field() { sed -n "s/^[[:space:]]*$2: //p" "$1" | head -1; }
to_secs() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }' <<<"$1"; }

# measure <name> <command...>: one line of figures; the output is kept in $logs/<name>.out.
measure() {
    local name="$1" rc=0
    shift
    /usr/bin/time -v -o "$logs/$name.time" "$@" >"$logs/$name.out" 2>&1 || rc=$?
    local wall rss lines
    wall="$(to_secs "$(field "$logs/$name.time" 'Elapsed (wall clock) time (h:mm:ss or m:ss)')")"
    rss="$(awk -v k="$(field "$logs/$name.time" 'Maximum resident set size (kbytes)')" 'BEGIN { print k / 1024 }')"
    lines="$(wc -l <"$logs/$name.out")"
    printf '%-28s %9s s %9.1f MiB %8d lines   exit %d\n' "$name" "$wall" "$rss" "$lines" "$rc"
    last_figures="$wall $rss"
}

# median: the median of the numbers on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

builds=(this)
if [ -n "${META_BASELINE:-}" ]; then
    [ -x "$META_BASELINE" ] || { echo "bench-metadata.sh: META_BASELINE=$META_BASELINE is not an executable" >&2; exit 1; }
    builds=(baseline this)
fi
bin_of() { if [ "$1" = baseline ]; then echo "$META_BASELINE"; else echo "$K"; fi; }

reads="${META_READ_RUNS:-1}"
if [ "$reads" -gt 0 ]; then
    echo "== read-only commands on $ds, $reads run(s) of each of: ${builds[*]} (logs in $logs)"
    printf '%-28s %11s %12s %14s\n' "" "wall" "peak RSS" "output"
    for i in $(seq 1 "$reads"); do
        for b in "${builds[@]}"; do
            bin="$(bin_of "$b")"
            measure "dry run $b $i" "$bin" "$ds" --hosts "$node" --dry-run "${extra[@]}"
            echo "$b dry-run $last_figures" >>"$logs/reads"
            measure "status $b $i" "$bin" status "$ds" --hosts "$node" "${extra[@]}"
            echo "$b status $last_figures" >>"$logs/reads"
            measure "verify $b $i" "$bin" verify "$ds" --hosts "$node" "${extra[@]}"
            echo "$b verify $last_figures" >>"$logs/reads"
        done
    done
    echo "== medians of $reads run(s): wall seconds and peak RSS MiB (GNU time counts KiB)"
    printf '%-10s' command
    for b in "${builds[@]}"; do printf '%12s %10s' "$b s" "$b MiB"; done
    [ ${#builds[@]} = 2 ] && printf '%10s %10s' "ratio s" "ratio MiB"
    echo
    for c in dry-run status verify; do
        printf '%-10s' "$c"
        figures=()
        for b in "${builds[@]}"; do
            s="$(awk -v b="$b" -v c="$c" '$1 == b && $2 == c { print $3 }' "$logs/reads" | median)"
            m="$(awk -v b="$b" -v c="$c" '$1 == b && $2 == c { print $4 }' "$logs/reads" | median)"
            printf '%12.2f %10.1f' "$s" "$m"
            figures+=("$s" "$m")
        done
        if [ ${#builds[@]} = 2 ]; then
            awk -v a="${figures[0]}" -v b="${figures[2]}" -v c="${figures[1]}" -v d="${figures[3]}" \
                'BEGIN { printf "%9.2fx %9.2fx", b / a, d / c }'
        fi
        echo
    done
    if [ ${#builds[@]} = 2 ]; then
        # The dry run's disk line gives the free space, which moves between runs.
        for c in "dry run" status verify; do
            if diff <(grep -v ' free on ' "$logs/$c baseline 1.out") <(grep -v ' free on ' "$logs/$c this 1.out") >/dev/null; then
                echo "   $c: both builds print the same output"
            else
                echo "   $c: the outputs DIFFER (see $logs/$c baseline 1.out and $logs/$c this 1.out)"
            fi
        done
    fi
fi

if [ "${META_COMPACT:-1}" = 1 ]; then
    runs="${META_COMPACT_RUNS:-1}"
    copy="$bench_dir/meta-copy-$$"
    trap 'rm -rf "$copy"' EXIT
    echo "== full compactions (defaults) on hard-linked copies: $runs of each of: ${builds[*]}"
    for i in $(seq 1 "$runs"); do
        for b in "${builds[@]}"; do
            bin="$(bin_of "$b")"
            # Hard links: kompactor never writes into a file it did not create (new files and
            # metadata are written under new names and renamed), so the dataset stays as it was.
            rm -rf "$copy"
            cp -al "$ds" "$copy"
            sync
            measure "compaction $b $i" "$bin" "$copy" --hosts "$node" "${extra[@]}"
            python3 - "$b" "$copy"/.kompactor/runs/*/report.json >>"$logs/phases" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[2]))
p = doc["phases"]
files = [sum(t[k] for n in doc["nodes"] for t in n["tables"]) for k in ("files_before", "files_after")]
worst = max(t["files_after"] for n in doc["nodes"] for t in n["tables"])
rewritten = sum((n["committed"] or {}).get("snapshots_rewritten", 0) for n in doc["nodes"])
print(sys.argv[1], p["read_and_plan"], p["merge"], p["commit"], files[0], files[1], worst, rewritten)
EOF
            tail -1 "$logs/phases" | awk '{
                printf "   phases: read and plan %.1f s, merge %.1f s, commit %.1f s; non-merge work %.1f s\n", $2, $3, $4, $2 + $4
                printf "   files %d -> %d (largest table %d files); %d snapshot(s) rewritten\n", $5, $6, $7, $8 }'
        done
    done
    # phase <build> <column of $logs/phases, or 0 for read and plan + commit>: its median.
    phase() {
        awk -v b="$1" -v c="$2" '$1 == b { print (c == 0 ? $2 + $4 : $c) }' "$logs/phases" | median
    }
    echo "== medians of $runs compaction(s) of each build, in seconds"
    printf '%-10s %14s %10s %10s %16s\n' build "read and plan" merge commit "non-merge work"
    for b in "${builds[@]}"; do
        printf '%-10s %14.2f %10.2f %10.2f %16.2f\n' "$b" "$(phase "$b" 2)" "$(phase "$b" 3)" "$(phase "$b" 4)" "$(phase "$b" 0)"
    done
fi
