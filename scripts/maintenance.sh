#!/usr/bin/env bash
# The maintenance routine around kompactor: count every table's rows on the running InfluxDB 3
# Core server, stop it, check and compact its data dir, start it again, count again and compare.
# Run it with --help for the options. Needs bash, curl and python3.
set -euo pipefail

PROG=${0##*/}

usage() {
    cat <<EOF
Usage: $PROG --data-dir DIR --hosts NODE[,NODE...]
         (--systemd-unit NAME | --pid-file FILE --start-cmd 'CMD')
         [--url URL] [--token TOKEN] [--kompactor PATH] [--timeout SECONDS]
         [-- KOMPACTOR-ARGS...]

Compacts the data dir of an InfluxDB 3 Core server with kompactor, with the server stopped,
and checks that every table returns as many rows afterwards as before:

  1. counts the rows of every table of every database (except _internal) on the running
     server, and writes DIR/.kompactor/names.json (database and table names, with their ids
     when the server shows them); a table over the query file limit is noted "over-limit"
  2. stops the server and waits until its process has exited
  3. runs 'kompactor verify DIR --hosts NODES'; if it fails, starts the server again and
     stops: nothing was compacted
  4. runs 'kompactor DIR --hosts NODES [KOMPACTOR-ARGS]'
  5. starts the server and waits until GET URL/health answers 200
  6. counts again and compares; the last line is 'VERDICT: OK' or 'VERDICT: FAILED (...)'

Options:
  --data-dir DIR         the server's --data-dir (each node in DIR/<node-id>/)
  --hosts NODE[,NODE]    node id(s) to compact: the server's --node-id (list another node
                         only if its server is stopped too: this script stops only one)
  --systemd-unit NAME    stop and start the server with systemctl
  --pid-file FILE        stop the server with SIGTERM to the pid in FILE ...
  --start-cmd 'CMD'      ... and start it with CMD (run by bash, in the background, with
                         nohup; output appended to DIR/.kompactor/server.log). If CMD does
                         not write FILE itself, the pid of the started process is written.
  --url URL              the server's HTTP address (default http://127.0.0.1:8181)
  --token TOKEN          API token, sent as 'Authorization: Bearer' (default:
                         \$INFLUXDB3_AUTH_TOKEN, which other users cannot see in ps)
  --kompactor PATH       the kompactor executable (default: kompactor on PATH)
  --timeout SECONDS      how long to wait for the server to stop, to answer /health after a
                         start, and for each HTTP request (default 120)
  -- KOMPACTOR-ARGS      passed to the compaction run, e.g. -- --window 1d --min-age 1h
  -h, --help             this help

Stop the writers first: rows written between the first count and the stop make the counts
differ. The counts, kompactor's output and the comparison are kept in
DIR/.kompactor/maintenance/<time>/.

Exit status:
  0  VERDICT: OK; every table has as many rows as before (compacted, partially compacted
     or nothing to do; the output says which)
  1  not compacted, nothing changed: a check before the compaction failed (server not
     running, a count failed, the server did not stop in time, 'kompactor verify' failed,
     or kompactor refused); a server this script had stopped is started again, and the
     verdict says whether it runs
  2  invalid command line
  3  compacted, but the check afterwards failed (the server did not come back, or the counts
     differ), or kompactor ended abnormally (the server is then left stopped): everything is
     left in place and the output says how to undo the run

Examples:
  INFLUXDB3_AUTH_TOKEN=\$(cat /etc/influxdb3/token) \\
  $PROG --data-dir /var/lib/influxdb3 --hosts node0 --systemd-unit influxdb3 \\
      -- --window 1d --min-age 1h

  $PROG --data-dir /srv/influxdb3 --hosts node0 --pid-file /run/influxdb3.pid \\
      --start-cmd 'influxdb3 serve --node-id node0 --object-store file --data-dir /srv/influxdb3' \\
      --kompactor ~/.cache/kompactor-target/release/kompactor
EOF
}

usage_error() {
    echo "$PROG: $*" >&2
    echo "Try '$PROG --help'." >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Command line

DATA_DIR='' HOSTS='' UNIT='' PID_FILE='' START_CMD='' TOKEN=${INFLUXDB3_AUTH_TOKEN:-}
URL=http://127.0.0.1:8181 KOMPACTOR=kompactor TIMEOUT=120
EXTRA=()
while (($#)); do
    opt=$1
    if [[ $opt == --*=* ]]; then
        set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
        opt=$1
    fi
    case $opt in
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    --data-dir | --hosts | --systemd-unit | --pid-file | --start-cmd | --url | --token | \
        --kompactor | --timeout)
        (($# >= 2)) || usage_error "$opt needs a value"
        case $opt in
        --data-dir) DATA_DIR=$2 ;;
        --hosts) HOSTS=$2 ;;
        --systemd-unit) UNIT=$2 ;;
        --pid-file) PID_FILE=$2 ;;
        --start-cmd) START_CMD=$2 ;;
        --url) URL=$2 ;;
        --token) TOKEN=$2 ;;
        --kompactor) KOMPACTOR=$2 ;;
        --timeout) TIMEOUT=$2 ;;
        esac
        shift 2
        ;;
    *) usage_error "unexpected argument '$opt' (arguments for kompactor go after --)" ;;
    esac
done

[[ -n $DATA_DIR ]] || usage_error "--data-dir is required"
[[ -n $HOSTS ]] || usage_error "--hosts is required"
if [[ -n $UNIT ]]; then
    [[ -z $PID_FILE && -z $START_CMD ]] ||
        usage_error "give either --systemd-unit or --pid-file with --start-cmd, not both"
    MODE=systemd
elif [[ -n $PID_FILE || -n $START_CMD ]]; then
    [[ -n $PID_FILE ]] || usage_error "--start-cmd needs --pid-file (to stop the server)"
    [[ -n $START_CMD ]] || usage_error "--pid-file needs --start-cmd (to start the server again)"
    MODE=pid
else
    usage_error "say how to stop and start the server: --systemd-unit NAME, or --pid-file FILE with --start-cmd 'CMD'"
fi
if ! [[ $TIMEOUT =~ ^[0-9]+$ ]] || ((10#$TIMEOUT == 0)); then
    usage_error "--timeout must be a whole number of seconds above 0, not '$TIMEOUT'"
fi
TIMEOUT=$((10#$TIMEOUT))
URL=${URL%/}
[[ $URL =~ ^https?://[^/]+ ]] || usage_error "--url must look like http://HOST:PORT, not '$URL'"
[[ $DATA_DIR == / ]] || DATA_DIR=${DATA_DIR%/}
[[ -d $DATA_DIR ]] || usage_error "--data-dir $DATA_DIR is not a directory"
IFS=, read -r -a HOST_LIST <<<"$HOSTS"
((${#HOST_LIST[@]})) || usage_error "--hosts is empty"
for h in "${HOST_LIST[@]}"; do
    [[ -n $h && -d $DATA_DIR/$h ]] || usage_error "no node directory $DATA_DIR/$h (--hosts $HOSTS)"
done
if [[ $KOMPACTOR == */* ]]; then
    [[ -f $KOMPACTOR && -x $KOMPACTOR ]] || usage_error "--kompactor $KOMPACTOR is not an executable file"
else
    KOMPACTOR_PATH=$(command -v -- "$KOMPACTOR") ||
        usage_error "'$KOMPACTOR' is not on PATH (give --kompactor PATH)"
    KOMPACTOR=$KOMPACTOR_PATH
fi
for tool in curl python3 $([[ $MODE == systemd ]] && echo systemctl); do
    command -v "$tool" >/dev/null || usage_error "$tool is needed but not on PATH"
done

# ---------------------------------------------------------------------------------------------
# Output, files and the lock

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
err() { printf 'error: %s\n' "$*" >&2; }
q() { printf '%q' "$1"; } # shell-quoted, for commands printed for the operator

STATE_DIR=$DATA_DIR/.kompactor
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RECORD=$STATE_DIR/maintenance/$STAMP
mkdir -p "$RECORD" || { err "cannot create $RECORD"; exit 1; }
SERVER_LOG=$STATE_DIR/server.log
NAMES_FILE=$STATE_DIR/names.json
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kompactor-maintenance.XXXXXX")
trap 'rm -rf "$WORK"' EXIT # until on_exit takes over

# One maintenance at a time per data dir (kompactor itself also locks .kompactor/lock).
if command -v flock >/dev/null; then
    exec 9>"$STATE_DIR/maintenance.lock"
    flock -n 9 || { err "another $PROG is running on $DATA_DIR ($STATE_DIR/maintenance.lock)"; exit 1; }
fi

# The state the exit trap looks at.
STOPPED_BY_US=0     # the server was stopped by this script and not started again
COMPACTION_STARTED=0
FINISHED=0
RUN_ID=

# ---------------------------------------------------------------------------------------------
# JSON handling (python3, standard library only)

PY=$(
    cat <<'PYEOF'
import json, re, sys

def rows(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace").strip()
    if not text:
        return []
    v = json.loads(text)
    if not isinstance(v, list):
        raise ValueError("expected a JSON array, got: " + text[:200])
    return v

def tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]

def dir_id(part):
    """'1' (3.6+ paths) or 'cpu-1' (older paths) -> 1."""
    m = re.fullmatch(r"(?:.*-)?(\d+)", part)
    return int(m.group(1)) if m else None

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "dbs":  # /api/v3/configure/database?format=json -> one name a line
    names = set()
    for r in rows(args[0]):
        name = r.get("iox::database") if isinstance(r, dict) else r
        if not isinstance(name, str):
            raise ValueError("no iox::database in " + json.dumps(r))
        deleted = isinstance(r, dict) and str(r.get("deleted", "")).lower() == "true"
        if name != "_internal" and not deleted:
            names.add(name)
    print("\n".join(sorted(names)))
elif cmd == "tables":  # information_schema.tables -> one name a line
    print("\n".join(sorted({r["table_name"] for r in rows(args[0])})))
elif cmd == "count":  # [{"n": 123}] -> 123
    r = rows(args[0])
    n = r[0].get("n", next(iter(r[0].values()))) if r and r[0] else None
    if isinstance(n, bool) or not isinstance(n, (int, str)) or not str(n).isdigit():
        raise ValueError("no row count in the answer")
    print(int(n))
elif cmd == "ids":  # a path of system.parquet_files -> "db_id TAB table_id" (or nothing)
    r = rows(args[0])
    path = r[0].get("path", "") if r and isinstance(r[0], dict) else ""
    parts = path.split("/")
    if "dbs" in parts and len(parts) > parts.index("dbs") + 2:
        i = parts.index("dbs")
        db_id, table_id = dir_id(parts[i + 1]), dir_id(parts[i + 2])
        if db_id is not None and table_id is not None:
            print(f"{db_id}\t{table_id}")
elif cmd == "names":  # names.tsv (db, db_id, table, table_id) url time -> names.json
    src, out, url, when = args
    dbs = {}
    for db, db_id, table, table_id in tsv(src):
        d = dbs.setdefault(db, {"id": None, "tables": {}})
        if db_id and d["id"] is None:
            d["id"] = int(db_id)
        if table:
            d["tables"][table] = {"id": int(table_id) if table_id else None}
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"url": url, "written_at": when, "databases": dbs}, f, indent=2)
        f.write("\n")
    import os
    os.replace(out + ".tmp", out)
elif cmd == "compare":  # before.tsv after.tsv reason-file -> table on stdout, exit 0 if equal
    before = {(d, t): v for d, t, v in tsv(args[0])}
    after = {(d, t): v for d, t, v in tsv(args[1])}
    lines, bad, notes = [], [], []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key, "(none)"), after.get(key, "(none)")
        name = ".".join(key)
        if a.startswith("error") or a == "over-limit":
            verdict = "FAILED: the count fails after the compaction"
        elif key not in after:
            verdict = "MISSING after the restart"
        elif key not in before:
            verdict = "NEW table (written during the maintenance?)"
        elif b == "over-limit":
            verdict = "accepted: not counted before (over the query file limit)"
            notes.append(name)
        elif a == b:
            verdict = "ok"
        else:
            verdict = f"DIFFERS ({int(a) - int(b):+d})"
        if verdict[0].isupper():
            bad.append(name)
        lines.append((name, b, a if not a.startswith("error") else "error", verdict))
    w = max([len("table")] + [len(l[0]) for l in lines])
    wb = max([len("before")] + [len(l[1]) for l in lines])
    wa = max([len("after")] + [len(l[2]) for l in lines])
    print(f"  {'table':<{w}}  {'before':>{wb}}  {'after':>{wa}}")
    for name, b, a, verdict in lines:
        print(f"  {name:<{w}}  {b:>{wb}}  {a:>{wa}}  {verdict}")
    for d, t, v in tsv(args[1]):
        if v.startswith("error"):
            print(f"  {d}.{t}: {v}")
    with open(args[2], "w", encoding="utf-8") as f:
        if bad:
            f.write(f"row counts differ for {len(bad)} table(s): {', '.join(bad[:5])}"
                    + (", ..." if len(bad) > 5 else ""))
        else:
            f.write(f"{len(lines) - len(notes)} table(s) with the same row count"
                    + (f", {len(notes)} over the query file limit before and counted now"
                       if notes else ""))
    sys.exit(1 if bad else 0)
else:
    sys.exit("unknown command " + cmd)
PYEOF
)
py() { python3 -c "$PY" "$@"; }

# ---------------------------------------------------------------------------------------------
# HTTP (curl); the token goes through curl's config on stdin, never on a command line

curl_auth() {
    if [[ -n $TOKEN ]]; then
        local t=${TOKEN//\\/\\\\}
        printf 'header = "Authorization: Bearer %s"\n' "${t//\"/\\\"}"
    fi
}

# http_get PATH BODY-FILE [curl args] -> prints the HTTP status, 000 if nothing answered
# (tried HTTP_TRIES times, default 3, a second apart, while nothing answers). curl's own error
# message is left in BODY-FILE.err.
http_get() {
    local path=$1 body=$2 code attempt
    shift 2
    for ((attempt = 1; ; attempt++)); do
        code=$(curl_auth | curl -sS -K - -G -o "$body" -w '%{http_code}' \
            --max-time "$TIMEOUT" "$@" "$URL$path" 2>"$body.err") || true
        [[ $code =~ ^[0-9]{3}$ ]] || code=000
        [[ $code == 000 && $attempt -lt ${HTTP_TRIES:-3} ]] || break
        sleep 1
    done
    printf '%s' "$code"
}

# describe CODE BODY-FILE -> one line saying what went wrong
describe() {
    if [[ $1 == 000 ]]; then
        printf 'no answer from %s (%s)' "$URL" "$(tr '\n\t' '  ' <"$2.err" | cut -c1-300)"
    else
        printf 'HTTP %s: %s' "$1" "$(tr '\n\t' '  ' <"$2" | cut -c1-300)"
    fi
}

query() { # query DB SQL BODY-FILE -> HTTP status
    http_get /api/v3/query_sql "$3" --data-urlencode "db=$1" --data-urlencode format=json \
        --data-urlencode "q=$2"
}

healthy() { [[ $(HTTP_TRIES=1 http_get /health "$WORK/health" --max-time 5) == 200 ]]; }

# collect_counts OUT-TSV before|after: one line per table, "db TAB table TAB count", where the
# count is a number, "over-limit" or "error: ..." (after only). Before, any failure other than
# the file limit returns 1; before, the names file is written too.
collect_counts() {
    local out=$1 pass=$2 body=$WORK/body code db t n sql ids
    : >"$out"
    : >"$WORK/names.tsv"
    code=$(http_get /api/v3/configure/database "$body" --data-urlencode format=json)
    if [[ $code != 200 ]]; then
        err "listing the databases: $(describe "$code" "$body")"
        return 1
    fi
    py dbs "$body" >"$WORK/dbs" || { err "listing the databases: unexpected answer"; return 1; }
    while IFS= read -r -u 3 db; do
        code=$(query "$db" "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'" "$body")
        if [[ $code != 200 ]] || ! py tables "$body" >"$WORK/tables"; then
            err "listing the tables of $db: $(describe "$code" "$body")"
            return 1
        fi
        [[ -s $WORK/tables ]] || printf '%s\t\t\t\n' "$db" >>"$WORK/names.tsv"
        while IFS= read -r -u 4 t; do
            sql="SELECT count(*) AS n FROM \"${t//\"/\"\"}\""
            code=$(query "$db" "$sql" "$body")
            if [[ $code == 200 ]] && n=$(py count "$body" 2>/dev/null); then
                :
            elif [[ $code != 000 ]] && grep -qiE 'exceed(ing)? (the )?file limit' "$body"; then
                n=over-limit
            elif [[ $pass == before ]]; then
                err "counting $db.$t: $(describe "$code" "$body")"
                return 1
            else
                n="error: $(describe "$code" "$body")"
            fi
            printf '%s\t%s\t%s\n' "$db" "$t" "$n" >>"$out"
            printf '  %-40s %s\n' "$db.$t" "${n%%:*}"
            if [[ $pass == before ]]; then
                ids=
                code=$(query "$db" "SELECT path FROM system.parquet_files WHERE table_name = '${t//\'/\'\'}' LIMIT 1" "$body")
                [[ $code != 200 ]] || ids=$(py ids "$body" 2>/dev/null) || ids=
                printf '%s\t%s\t%s\t%s\n' "$db" "${ids%%$'\t'*}" "$t" "${ids#*$'\t'}" >>"$WORK/names.tsv"
            fi
        done 4<"$WORK/tables"
    done 3<"$WORK/dbs"
    if [[ $pass == before ]]; then
        py names "$WORK/names.tsv" "$NAMES_FILE" "$URL" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" ||
            warn "could not write $NAMES_FILE"
    fi
    [[ -s $out ]] || say "  (no tables)"
}

# ---------------------------------------------------------------------------------------------
# Stopping and starting the server

pid_alive() { # a zombie (exited, not yet reaped by its parent) counts as gone
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    [[ $state != Z* ]]
}

unit_state() { systemctl show --property=ActiveState --value -- "$UNIT" 2>/dev/null || echo unknown; }

SERVER_PID=
server_running() { # sets SERVER_PID in pid mode; prints why not on stderr
    if [[ $MODE == systemd ]]; then
        local s
        s=$(unit_state)
        [[ $s == active ]] && return 0
        err "systemd unit $UNIT is $s, not active"
        return 1
    fi
    [[ -f $PID_FILE ]] || { err "no pid file $PID_FILE"; return 1; }
    SERVER_PID=$(tr -d '[:space:]' <"$PID_FILE")
    [[ $SERVER_PID =~ ^[0-9]+$ ]] || { err "$PID_FILE does not hold a pid: '$SERVER_PID'"; return 1; }
    pid_alive "$SERVER_PID" && return 0
    err "the pid in $PID_FILE, $SERVER_PID, is not running"
    return 1
}

stop_cmd_text() {
    if [[ $MODE == systemd ]]; then echo "systemctl stop $(q "$UNIT")"; else echo "kill -TERM \$(cat $(q "$PID_FILE"))"; fi
}
start_cmd_text() {
    if [[ $MODE == systemd ]]; then echo "systemctl start $(q "$UNIT")"; else echo "$START_CMD"; fi
}

stop_server() { # returns 1 if the server has not stopped within the timeout
    local deadline=$((SECONDS + TIMEOUT)) s
    if [[ $MODE == systemd ]]; then
        say "systemctl stop $UNIT"
        systemctl stop --no-block -- "$UNIT" 9>&- || { err "systemctl stop $UNIT failed"; return 1; }
        STOPPED_BY_US=1
        while :; do
            s=$(unit_state)
            [[ $s == inactive || $s == failed ]] && break
            ((SECONDS < deadline)) || { err "unit $UNIT is still $s after ${TIMEOUT}s"; return 1; }
            sleep 0.5
        done
        say "unit $UNIT is $s"
    else
        say "kill -TERM $SERVER_PID ($(ps -o args= -p "$SERVER_PID" 2>/dev/null | cut -c1-120))"
        kill -TERM "$SERVER_PID" || { err "could not signal pid $SERVER_PID"; return 1; }
        STOPPED_BY_US=1
        while pid_alive "$SERVER_PID"; do
            ((SECONDS < deadline)) || { err "pid $SERVER_PID is still running ${TIMEOUT}s after SIGTERM"; return 1; }
            sleep 0.2
        done
        say "pid $SERVER_PID has exited"
    fi
}

# start_server: starts the server and waits for /health; returns 1 (with the reason on stderr)
# if it does not answer 200 within the timeout.
start_server() {
    local deadline=$((SECONDS + TIMEOUT)) launched='' s rc
    if [[ $MODE == systemd ]]; then
        say "systemctl start $UNIT"
        systemctl start --no-block -- "$UNIT" 9>&- || { err "systemctl start $UNIT failed"; return 1; }
    else
        say "starting: $START_CMD"
        say "  (output appended to $SERVER_LOG)"
        printf '\n==== %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$START_CMD" >>"$SERVER_LOG"
        nohup bash -c "$START_CMD" </dev/null >>"$SERVER_LOG" 2>&1 9>&- &
        launched=$!
    fi
    STOPPED_BY_US=0
    say "waiting for $URL/health (up to ${TIMEOUT}s)"
    until healthy; do
        if [[ $MODE == systemd ]]; then
            s=$(unit_state)
            [[ $s != failed ]] || { err "unit $UNIT failed to start (journalctl -u $UNIT -n 50)"; return 1; }
        elif [[ -n $launched ]] && ! pid_alive "$launched"; then
            rc=0
            wait "$launched" || rc=$?
            launched=
            if ((rc != 0)); then
                err "the start command exited with status $rc; the end of $SERVER_LOG:"
                tail -n 20 "$SERVER_LOG" | sed 's/^/    /' >&2
                return 1
            fi # status 0: it may have daemonized; keep waiting for /health
        fi
        if ((SECONDS >= deadline)); then
            err "$URL/health did not answer 200 within ${TIMEOUT}s of the start"
            [[ $MODE == systemd ]] || { tail -n 20 "$SERVER_LOG" | sed 's/^/    /' >&2; }
            return 1
        fi
        sleep 1
    done
    say "the server answers $URL/health"
    if [[ $MODE == pid ]]; then
        local pid
        pid=$(tr -d '[:space:]' <"$PID_FILE" 2>/dev/null) || pid=
        if [[ $pid =~ ^[0-9]+$ && $pid != "$SERVER_PID" ]] && pid_alive "$pid"; then
            say "server pid $pid (from $PID_FILE)"
        elif [[ -n $launched ]] && pid_alive "$launched"; then
            echo "$launched" >"$PID_FILE"
            say "server pid $launched (written to $PID_FILE)"
        else
            warn "$PID_FILE does not name the new server process; fix it before the next maintenance"
        fi
    fi
}

# ---------------------------------------------------------------------------------------------
# The end: one verdict line, last

finish() { # finish EXIT-CODE VERDICT
    FINISHED=1
    say ""
    say "files: $RECORD/"
    say "VERDICT: $2"
    exit "$1"
}

undo_help() { # undo_help [WHAT-IF-NO-RUN]
    say ""
    if [[ -n $RUN_ID ]]; then
        say "The compacted data dir is left as it is. To undo kompactor run $RUN_ID:"
        say "  1. stop the server:   $(stop_cmd_text)"
        say "  2. undo the run:      $(q "$KOMPACTOR") undo $(q "$DATA_DIR") --run $(q "$RUN_ID")"
        say "  3. start the server:  $(start_cmd_text)"
    else
        say "kompactor recorded no new run under $STATE_DIR/runs/: there is no run to undo."
        say "${1:-Look for another cause (rows written during the maintenance?).}"
    fi
}

# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
    local rc=$?
    trap - EXIT
    if ((FINISHED)); then
        rm -rf "$WORK"
        exit "$rc"
    fi
    # An unexpected error or a signal: say what state things are in.
    err "$PROG stopped unexpectedly (status $rc)"
    if ((COMPACTION_STARTED)); then
        say "kompactor ran or was running; the server is left stopped. Check with:"
        say "  $(q "$KOMPACTOR") verify $(q "$DATA_DIR") --hosts $(q "$HOSTS")"
        RUN_ID=$(new_run_id 2>/dev/null) || RUN_ID=
        undo_help "It may have stopped before committing anything: run the verify above to find out."
        rm -rf "$WORK"
        say "VERDICT: FAILED (stopped unexpectedly after the compaction started; server left stopped)"
        exit 3
    fi
    if ((STOPPED_BY_US)); then
        say "nothing was compacted; starting the server again"
        if start_server; then
            say "VERDICT: FAILED (not compacted: stopped unexpectedly; server running again)"
        else
            say "VERDICT: FAILED (not compacted: stopped unexpectedly; the server did NOT come back: start it with: $(start_cmd_text))"
        fi
    else
        say "VERDICT: FAILED (not compacted: stopped unexpectedly before the server was stopped)"
    fi
    rm -rf "$WORK"
    exit 1
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# not_compacted REASON: nothing was changed; start the server again if we stopped it.
not_compacted() {
    if ((STOPPED_BY_US)); then
        step "starting the server again (nothing was compacted)"
        if start_server; then
            finish 1 "FAILED (not compacted: $1; nothing changed; server running again)"
        fi
        finish 1 "FAILED (not compacted: $1; nothing changed; the server did NOT come back: $(start_cmd_text))"
    fi
    finish 1 "FAILED (not compacted: $1; nothing changed)"
}

runs_list() { find "$STATE_DIR/runs" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | LC_ALL=C sort || true; }
new_run_id() { LC_ALL=C comm -13 "$WORK/runs.before" <(runs_list) | tail -n 1; }

# run_logged LOG CMD...: runs CMD, output to the terminal (indented) and to LOG; prints nothing
# else; returns CMD's status.
run_logged() {
    local log=$1 rc
    shift
    say "\$ $*"
    set +e
    "$@" 2>&1 | tee "$log" | sed 's/^/  | /'
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# The routine

say "kompactor maintenance of $DATA_DIR (nodes $HOSTS) at $STAMP"
say "server: $URL, $([[ $MODE == systemd ]] && echo "systemd unit $UNIT" || echo "pid file $PID_FILE")"
say "kompactor: $KOMPACTOR"

step "1/6 counting rows on the running server"
server_running || not_compacted "the server is not running"
code=$(http_get /health "$WORK/h")
[[ $code == 200 ]] || not_compacted "$URL/health does not answer 200 ($(describe "$code" "$WORK/h"))"
collect_counts "$RECORD/counts-before.tsv" before || not_compacted "the counts before failed"
say "names: $NAMES_FILE"
if grep -q $'\tover-limit$' "$RECORD/counts-before.tsv"; then
    say "(over-limit: the count failed on the query file limit; after compaction it must succeed)"
fi

step "2/6 stopping the server"
if ! stop_server; then
    say ""
    say "The server was asked to stop but has not exited; nothing was compacted. Check it, then"
    say "either wait for it to exit and run $PROG again, or start it: $(start_cmd_text)"
    finish 1 "FAILED (not compacted: the server did not stop within ${TIMEOUT}s)"
fi
if healthy; then
    STOPPED_BY_US=0 # something else answers: starting ours again would not help
    err "$URL/health still answers 200 although the server has stopped: another process serves $URL"
    say "The server is stopped; nothing was compacted. Find out what answers at $URL, then start"
    say "the server: $(start_cmd_text)"
    finish 1 "FAILED (not compacted: another server answers at $URL; this one is left stopped)"
fi

step "3/6 checking the data dir"
rc=0
run_logged "$RECORD/verify.log" "$KOMPACTOR" verify "$DATA_DIR" --hosts "$HOSTS" || rc=$?
case $rc in
0) say "consistent" ;;
4) not_compacted "kompactor verify found problems (exit 4, see above and $RECORD/verify.log)" ;;
*) not_compacted "kompactor verify failed with exit status $rc (see above and $RECORD/verify.log)" ;;
esac

step "4/6 compacting"
runs_list >"$WORK/runs.before"
COMPACTION_STARTED=1
rc=0
run_logged "$RECORD/compact.log" "$KOMPACTOR" "$DATA_DIR" --hosts "$HOSTS" "${EXTRA[@]}" || rc=$?
RUN_ID=$(new_run_id)
PARTIAL=
case $rc in
0) if [[ -n $RUN_ID ]]; then say "done (run $RUN_ID)"; else say "done (no new run: nothing to compact)"; fi ;;
3)
    PARTIAL=1
    say "partial${RUN_ID:+ (run $RUN_ID)}: some windows were skipped, see the summary above"
    ;;
1 | 2)
    COMPACTION_STARTED=0 # kompactor: 1 = error, nothing changed; 2 = bad command line
    [[ -z $RUN_ID ]] || warn "kompactor exited $rc but a new run directory appeared: $STATE_DIR/runs/$RUN_ID"
    not_compacted "kompactor exited with status $rc (see above and $RECORD/compact.log)"
    ;;
*)
    err "kompactor exited with unexpected status $rc: the data dir may be partly changed"
    say "The server is left stopped. Check the data dir first:"
    say "  $(q "$KOMPACTOR") verify $(q "$DATA_DIR") --hosts $(q "$HOSTS")"
    undo_help "It may have stopped before committing anything: run the verify above to find out."
    finish 3 "FAILED (kompactor exited with status $rc; server left stopped)"
    ;;
esac

step "5/6 starting the server"
if ! start_server; then
    undo_help
    finish 3 "FAILED (${RUN_ID:+compacted by run $RUN_ID, but }the server did not answer $URL/health within ${TIMEOUT}s of the start)"
fi

step "6/6 counting rows again and comparing"
if ! collect_counts "$RECORD/counts-after.tsv" after; then
    undo_help
    finish 3 "FAILED (${RUN_ID:+compacted by run $RUN_ID, but }the counts after the restart failed)"
fi
say ""
rc=0
py compare "$RECORD/counts-before.tsv" "$RECORD/counts-after.tsv" "$WORK/reason" | tee "$RECORD/comparison.txt" || rc=$?
reason=$(cat "$WORK/reason" 2>/dev/null || echo "the comparison failed")
if ((rc != 0)); then
    undo_help
    finish 3 "FAILED ($reason)"
fi
say ""
if [[ -n $RUN_ID ]]; then
    say "The replaced files are kept in $STATE_DIR/trash/$RUN_ID/."
    say "Delete that directory once you are satisfied with the result; until then the run can be"
    say "undone (server stopped): $(q "$KOMPACTOR") undo $(q "$DATA_DIR") --run $(q "$RUN_ID")"
fi
if [[ -n $RUN_ID ]]; then
    what="run $RUN_ID"
elif [[ -n $PARTIAL ]]; then
    what="no new run under $STATE_DIR/runs/"
else
    what="nothing to compact"
fi
finish 0 "OK ($reason${PARTIAL:+; partial: some windows were skipped}; $what)"
