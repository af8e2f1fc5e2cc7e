#!/usr/bin/env bash
# The maintenance routine around kompactor: measure every table on the running InfluxDB 3 Core
# server, merge while it runs (kompactor prepare), stop it, check the data dir and commit, start
# it again, measure again and compare.
# Run it with --help for the options. Needs bash, curl and python3.
set -euo pipefail

PROG=${0##*/}

usage() {
    cat <<EOF
Usage: $PROG --data-dir DIR --hosts NODE[,NODE...]
         (--systemd-unit NAME | --pid-file FILE --start-cmd 'CMD')
         [--url URL] [--token TOKEN] [--kompactor PATH] [--timeout SECONDS]
         [--no-prepare] [-- KOMPACTOR-ARGS...]

Compacts the data dir of an InfluxDB 3 Core server with kompactor, with the server stopped,
and checks that every table answers the same afterwards as before:

  1. measures every table of every database (except _internal) on the running server: row
     count, min and max time, and per field the number of values (not null) and, for
     integer and float fields, their sum. A table over the server's query file limit is
     measured in time slices that each touch at most that many files (from the files' time
     ranges in system.parquet_files), added up. A table that cannot be measured stops the
     maintenance here (nothing changed). Also writes DIR/.kompactor/names.json (database
     and table names, with their ids when the server shows them)
  2. runs 'kompactor prepare DIR --hosts NODES [KOMPACTOR-ARGS]' while the server runs: the
     merging, which is nearly all of the work, done before the server stops (it writes only
     under DIR/.kompactor/). If it fails, the compaction in step 5 merges everything itself
  3. stops the server and waits until its process has exited
  4. runs 'kompactor verify DIR --hosts NODES'; if it fails, starts the server again and
     stops: nothing was compacted
  5. runs 'kompactor DIR --hosts NODES [KOMPACTOR-ARGS]': it commits the prepared windows
     whose inputs are unchanged and merges the others
  6. starts the server and waits until GET URL/health answers 200, then reports the
     downtime (from the stop to /health answering 200) next to the total time
  7. measures every table again and compares: every table must be there with the same row
     count, min and max time, value counts and sums (integers exactly; floats within the
     rounding error that adding them in another order can cause); a table missing, new or
     not measurable afterwards is a failure. The last line is 'VERDICT: OK (what was
     compared)' or 'VERDICT: FAILED (which tables differ, how)'

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
  --no-prepare           skip step 2: merge with the server stopped (a longer downtime)
  -- KOMPACTOR-ARGS      passed to the compaction run, e.g. -- --window 1d --min-age 1h
  -h, --help             this help

Stop the writers first: rows written between the first measurement and the stop make the
tables differ. The measurements (before.json, after.json), kompactor's output and the
comparison are kept in DIR/.kompactor/maintenance/<time>/.

Exit status:
  0  VERDICT: OK; every table compared and equal (compacted, partially compacted or nothing
     to do; the output says which)
  1  not compacted, nothing changed: a check before the compaction failed (server not
     running, a table could not be measured, the server did not stop in time, 'kompactor
     verify' failed, or kompactor refused); a server this script had stopped is started
     again, and the verdict says whether it runs
  2  invalid command line
  3  compacted, but the check afterwards failed (the server did not come back, or a table
     differs or could not be measured), or kompactor ended abnormally (the server is then
     left stopped): everything is left in place and the output says how to undo the run

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
URL=http://127.0.0.1:8181 KOMPACTOR=kompactor TIMEOUT=120 PREPARE=1
EXTRA=()
while (($#)); do
    opt=$1
    if [[ $opt == --*=* ]]; then
        set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
        opt=$1
    fi
    case $opt in
    -h | --help) usage; exit 0 ;;
    --no-prepare) PREPARE=0; shift; continue ;;
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
STARTED=$(date +%s.%N)
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
import datetime, http.client, json, math, os, re, sys, time
import urllib.error, urllib.parse, urllib.request

# What is measured per table, on the running server, before and after:
#   rows                 count(*)
#   min_time, max_time   min(time), max(time), as integer nanoseconds
#   per field            count(field) (values that are not null), and for Int64, UInt64 and
#                        Float64 fields sum(field); for Float64 also sum(abs(field)), which
#                        bounds the rounding error of the sum (see compare_sum)
# A table over the server's query file limit is measured in time slices: its files' time
# ranges (system.parquet_files) are cut so that no slice touches more files than the limit,
# and the slices' aggregates are added up.

NUMERIC = ("Int64", "UInt64", "Float64")
MOD64 = 1 << 64
LIMIT_RE = re.compile(r"exceed(?:ing|s)?\s+(?:the\s+)?file\s+limit", re.I)
LIMIT_N_RE = re.compile(r"(\d+)\s+parquet\s+files", re.I)


class NoAnswer(Exception):
    pass


class QueryError(Exception):
    def __init__(self, status, text):
        super().__init__(f"HTTP {status}: {' '.join(text.split())[:300]}")
        self.status, self.text = status, text

    def file_limit(self):
        """The server's query file limit if this is the file-limit error, else None (0 if the
        message does not say the number)."""
        if not LIMIT_RE.search(self.text):
            return None
        m = LIMIT_N_RE.search(self.text)
        return int(m.group(1)) if m else 0


class Unsliceable(Exception):
    pass


class Http:
    def __init__(self, url, token, timeout):
        self.url, self.timeout = url, timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.requests = 0

    def get(self, path, params):
        """(status, body text). A refused or reset connection is tried 3 times, a second
        apart; a request that gets no answer within the timeout is not repeated."""
        url = self.url + path + "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, headers=self.headers)
        for attempt in range(3):
            self.requests += 1
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return r.status, r.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode("utf-8", "replace")
            except http.client.HTTPException as e:  # the answer broke off, or is not HTTP
                raise NoAnswer(f"the answer from {self.url} broke off ({type(e).__name__}; "
                               "the server's log may say why)")
            except (TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    raise NoAnswer(f"no answer from {self.url} within {self.timeout}s")
                last = f"no answer from {self.url} ({reason})"
            if attempt < 2:
                time.sleep(1)
        raise NoAnswer(last)

    def rows(self, path, params):
        status, text = self.get(path, params)
        if status != 200:
            raise QueryError(status, text)
        text = text.strip()
        v = json.loads(text) if text else []
        if not isinstance(v, list):
            raise QueryError(status, "expected a JSON array, got: " + text[:200])
        return v

    def query(self, db, sql):
        return self.rows("/api/v3/query_sql", {"db": db, "q": sql, "format": "json"})


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def ts_lit(ns):
    """Integer nanoseconds -> an exact RFC 3339 literal the server compares with `time`."""
    s, frac = divmod(ns, 10**9)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=s)
    return lit(t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % frac)


def fmt_ns(ns):
    if ns is None:
        return "-"
    s, frac = divmod(ns, 10**9)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=s)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (".%09d" % frac).rstrip("0").rstrip(".") + "Z"


def plan_slices(files, budget):
    """Cut time into slices [lo, hi) (None: unbounded) so that no slice touches more than
    `budget` of `files` ([(min_time, max_time)]), the first and last slices open-ended so that
    rows outside every file (the server's write buffer) are counted too. A file touches
    [lo, hi) if min_time < hi and max_time >= lo (checked on 3.0.3 and 3.10); the cut is one
    nanosecond earlier than needed, so a server that also counted a file starting exactly at
    hi would still be within the budget."""
    slices, lo = [], None
    while True:
        live = sorted(mn for mn, mx in files if lo is None or mx >= lo)
        if len(live) <= budget:
            slices.append((lo, None))
            return slices
        hi = live[budget] - 1  # the files starting before it: at most `budget`
        if lo is not None and hi <= lo:
            n = sum(1 for mn, mx in files if mn <= lo + 1 and mx >= lo)
            raise Unsliceable(
                f"{n} files overlap the time {fmt_ns(lo)}, more than the query file limit "
                f"allows in one query")
        slices.append((lo, hi))
        lo = hi


def agg_sql(table, fields, lo, hi):
    cols = ["count(*) AS n", "CAST(min(time) AS BIGINT) AS t0", "CAST(max(time) AS BIGINT) AS t1"]
    for i, (name, typ) in enumerate(fields):
        f = ident(name)
        cols.append(f"count({f}) AS c{i}")
        if typ in NUMERIC:
            cols.append(f"sum({f}) AS s{i}")
        if typ == "Float64":
            cols.append(f"sum(abs({f})) AS a{i}")
    where = []
    if lo is not None:
        where.append(f"time >= {ts_lit(lo)}")
    if hi is not None:
        where.append(f"time < {ts_lit(hi)}")
    return (f"SELECT {', '.join(cols)} FROM {ident(table)}"
            + (f" WHERE {' AND '.join(where)}" if where else ""))


def num(v):
    """A JSON number (the server may write big integers or decimals as strings)."""
    if v is None or isinstance(v, (int, float)):
        return v
    try:
        return int(v)
    except ValueError:
        return float(v)


def measure_table(srv, db, table):
    res = {"db": db, "table": table, "error": None, "files": None, "slices": None,
           "limit": None, "ids": None}
    cols = srv.query(db, "SELECT column_name, data_type FROM information_schema.columns "
                          f"WHERE table_schema = 'iox' AND table_name = {lit(table)}")
    fields = sorted((c["column_name"], c["data_type"]) for c in cols
                    if c["column_name"] != "time" and not c["data_type"].startswith("Dictionary"))
    # Always filter system.parquet_files by table_name: unfiltered, 3.10 labels other
    # databases' files with this database's table names.
    files = srv.query(db, "SELECT min_time, max_time, path FROM system.parquet_files "
                           f"WHERE table_name = {lit(table)}")
    res["files"] = len(files)
    if files:
        segs = files[0].get("path", "").split("/")
        if "dbs" in segs and len(segs) > segs.index("dbs") + 2:
            i = segs.index("dbs")
            ids = [re.fullmatch(r"(?:.*-)?(\d+)", p) for p in segs[i + 1:i + 3]]
            if all(ids):
                res["ids"] = [int(m.group(1)) for m in ids]
    spans = [(int(f["min_time"]), int(f["max_time"])) for f in files]

    slices, budget = [(None, None)], None
    while True:
        try:
            parts = [srv.query(db, agg_sql(table, fields, lo, hi)) for lo, hi in slices]
            break
        except QueryError as e:
            limit = e.file_limit()
            if limit is None:
                raise
            if budget is None:  # the whole table is over the limit: slice it
                res["limit"] = limit or None
                budget = limit if limit > 0 else max(1, len(spans) // 2)
            elif budget > 1 and len(slices) > 1:  # new files since the listing? narrower
                budget //= 2
            else:
                raise Unsliceable(f"a slice of at most {budget} file(s) still exceeds the "
                                  f"query file limit: {e}")
            slices = plan_slices(spans, budget)
    res["slices"] = len(slices)

    rows, t0, t1 = 0, None, None
    acc = {name: {"type": typ, "count": 0, "sum": [], "abs": []} for name, typ in fields}
    for part in parts:
        r = part[0] if part else {}
        n = num(r.get("n")) or 0
        rows += n
        if n == 0:
            continue
        v0, v1 = num(r.get("t0")), num(r.get("t1"))
        if v0 is not None:
            t0 = v0 if t0 is None else min(t0, v0)
        if v1 is not None:
            t1 = v1 if t1 is None else max(t1, v1)
        for i, (name, typ) in enumerate(fields):
            a = acc[name]
            c = num(r.get(f"c{i}")) or 0
            a["count"] += c
            if typ in NUMERIC and c:
                a["sum"].append(num(r.get(f"s{i}")))
                if typ == "Float64":
                    a["abs"].append(num(r.get(f"a{i}")))
    out = {}
    for name, a in acc.items():
        f = {"type": a["type"], "count": a["count"]}
        if a["type"] in ("Int64", "UInt64"):
            # The server's integer sums wrap around, modulo 2^64, and so does the total of
            # the slices here: exact, and the same in any order.
            v = None if None in a["sum"] else sum(int(v) for v in a["sum"]) % MOD64
            if v is not None and a["type"] == "Int64" and v >= MOD64 // 2:
                v -= MOD64
            f["sum"] = v
        elif a["type"] == "Float64":
            # null: the sum is not finite (the server writes inf and NaN as null)
            f["sum"] = None if None in a["sum"] else math.fsum(a["sum"])
            f["abs"] = None if None in a["abs"] else math.fsum(a["abs"])
        out[name] = f
    res.update(rows=rows, min_time=t0, max_time=t1, fields=out)
    return res


def measure(url, token, timeout, out_path, names_path):
    """Measures every table of every database; writes out_path; exit 0 if every table was
    measured, 1 if some were not (each has its error), 2 if the listing failed."""
    srv = Http(url, token, timeout)
    started = time.monotonic()
    results, dbs_seen = [], []
    try:
        dbs = set()
        for r in srv.rows("/api/v3/configure/database", {"format": "json"}):
            name = r.get("iox::database") if isinstance(r, dict) else r
            if not isinstance(name, str):
                raise QueryError(200, "no iox::database in " + json.dumps(r))
            deleted = isinstance(r, dict) and str(r.get("deleted", "")).lower() == "true"
            if name != "_internal" and not deleted:
                dbs.add(name)
        for db in sorted(dbs):
            tables = srv.query(db, "SELECT table_name FROM information_schema.tables "
                                    "WHERE table_schema = 'iox'")
            dbs_seen.append(db)
            for t in sorted({r["table_name"] for r in tables}):
                try:
                    res = measure_table(srv, db, t)
                except (QueryError, NoAnswer, Unsliceable) as e:
                    res = {"db": db, "table": t, "error": str(e)}
                except Exception as e:  # an answer of an unexpected shape, say
                    res = {"db": db, "table": t, "error": f"{type(e).__name__}: {e}"}
                results.append(res)
                # One line for each table that took more than one query or failed.
                label = f"{db}.{t}"
                if res["error"]:
                    print(f"  {label}: NOT MEASURED: {res['error']}", flush=True)
                elif res["slices"] > 1:
                    print(f"  {label}: {res['rows']} rows, over the query file limit "
                          f"({res['files']} files, limit {res['limit'] or '?'}): measured in "
                          f"{res['slices']} time slices", flush=True)
    except Exception as e:
        print(f"error: listing the databases and tables: {e}", file=sys.stderr)
        return 2
    seconds = round(time.monotonic() - started, 1)
    ok = [r for r in results if not r["error"]]
    print(f"  {len(ok)} of {len(results)} table(s) in {len(dbs_seen)} database(s) measured: "
          f"{sum(r['rows'] for r in ok)} rows, {srv.requests} requests, {seconds} s",
          flush=True)
    doc = {"url": url, "seconds": seconds, "requests": srv.requests,
           "databases": dbs_seen, "tables": results}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    if names_path:
        write_names(doc, names_path)
    return 1 if any(r["error"] for r in results) else 0


def write_names(doc, out):
    dbs = {db: {"id": None, "tables": {}} for db in doc["databases"]}
    for r in doc["tables"]:
        d = dbs.setdefault(r["db"], {"id": None, "tables": {}})
        ids = r.get("ids")
        if ids and d["id"] is None:
            d["id"] = ids[0]
        d["tables"][r["table"]] = {"id": ids[1] if ids else None}
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format_version": 1,
                   "url": doc["url"],
                   "written_at": datetime.datetime.now(datetime.timezone.utc)
                   .strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "databases": dbs}, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)


def compare_sum(typ, b, a):
    """Integer sums: exactly equal (modulo 2^64). Float sums: DataFusion adds in no fixed
    order (partitions, row groups, and here slices), so two correct sums of the same values
    can differ in the last bits. Any order of adding n values is within (n-1)*u*S of the
    exact sum (u = 2^-53, S = the sum of the absolute values), so two correct sums differ by
    less than 2*n*u*S; we accept twice that, 4*n*u*S. That is far below any real change
    (for a million values, 4.4e-10 of S), while a lost or changed row also shows in the
    count."""
    if typ != "Float64":
        return b["sum"] == a["sum"]
    if b["sum"] is None or a["sum"] is None:  # not finite: the same only if both are not
        return b["sum"] is None and a["sum"] is None
    s = max(b.get("abs") or 0.0, a.get("abs") or 0.0)
    n = max(b["count"], a["count"])
    return abs(b["sum"] - a["sum"]) <= 4 * n * 2.0**-53 * s


def show_sum(v):
    return "not finite" if v is None else repr(v)


def compare(before_path, after_path, reason_path):
    with open(before_path, encoding="utf-8") as f:
        before = {(r["db"], r["table"]): r for r in json.load(f)["tables"]}
    with open(after_path, encoding="utf-8") as f:
        after = {(r["db"], r["table"]): r for r in json.load(f)["tables"]}
    lines, bad, sliced = [], [], []
    totals = {"fields": 0, "sums_int": 0, "sums_float": 0}
    for key in sorted(set(before) | set(after)):
        name = ".".join(key)
        b, a = before.get(key), after.get(key)
        diffs = []
        if b is None:
            diffs.append("NEW table after the restart (written during the maintenance?)")
        elif a is None:
            diffs.append("MISSING after the restart")
        elif b.get("error"):
            diffs.append(f"NOT MEASURED before: {b['error']}")
        elif a.get("error"):
            diffs.append(f"NOT MEASURED after: {a['error']}")
        else:
            if b["rows"] != a["rows"]:
                diffs.append(f"rows {b['rows']} -> {a['rows']} ({a['rows'] - b['rows']:+d})")
            if b["min_time"] != a["min_time"]:
                diffs.append(f"min time {fmt_ns(b['min_time'])} -> {fmt_ns(a['min_time'])}")
            if b["max_time"] != a["max_time"]:
                diffs.append(f"max time {fmt_ns(b['max_time'])} -> {fmt_ns(a['max_time'])}")
            bf, af = b["fields"], a["fields"]
            for fname in sorted(set(bf) | set(af)):
                if fname not in af or fname not in bf:
                    diffs.append(f"field {fname} only {'before' if fname in bf else 'after'}")
                    continue
                fb, fa = bf[fname], af[fname]
                if fb["type"] != fa["type"]:
                    diffs.append(f"field {fname} type {fb['type']} -> {fa['type']}")
                    continue
                if fb["count"] != fa["count"]:
                    diffs.append(f"count({fname}) {fb['count']} -> {fa['count']}")
                if "sum" in fb and not compare_sum(fb["type"], fb, fa):
                    diffs.append(f"sum({fname}) {show_sum(fb['sum'])} -> "
                                 f"{show_sum(fa['sum'])}")
            nsum = sum(1 for f in bf.values() if "sum" in f)
            totals["fields"] += len(bf)
            totals["sums_int"] += sum(1 for f in bf.values() if f["type"] in ("Int64", "UInt64"))
            totals["sums_float"] += sum(1 for f in bf.values() if f["type"] == "Float64")
            if b["slices"] > 1:
                sliced.append(name)
        if diffs:
            bad.append((name, diffs))

        def col(r, k):
            return "-" if r is None or r.get(k) is None else str(r[k])

        lines.append((name, col(b, "rows"), col(a, "rows"),
                      f"{col(b, 'files')} -> {col(a, 'files')}",
                      f"{col(b, 'slices')} -> {col(a, 'slices')}",
                      "ok" if not diffs else "FAILED: " + "; ".join(diffs)))
    head = ("table", "rows before", "rows after", "files", "queries", "result")
    widths = [max(len(l[i]) for l in lines + [head]) for i in range(5)]
    for l in [head] + lines:
        print("  " + "  ".join(v.rjust(w) if i in (1, 2) else v.ljust(w)
                               for i, (v, w) in enumerate(zip(l, widths))) + "  " + l[5])
    n = len(lines)
    names = ", ".join(l[0] for l in lines[:8]) + (", ..." if n > 8 else "")
    if bad:
        first = "; ".join(f"{nm}: {ds[0]}" + (f" and {len(ds) - 1} more" if len(ds) > 1 else "")
                          for nm, ds in bad[:3])
        reason = (f"{len(bad)} of {n} table(s) not equal after the compaction: {first}"
                  + (f"; and {len(bad) - 3} more table(s)" if len(bad) > 3 else ""))
    elif n == 0:
        reason = "no tables to compare: the server lists none"
    else:
        reason = (f"{n} table(s) compared and equal ({names})"
                  + (f", {len(sliced)} of them counted in time slices under the query file "
                     f"limit ({', '.join(sliced[:8])}{', ...' if len(sliced) > 8 else ''})"
                     if sliced else "")
                  + f": row count, min and max time, non-null count of {totals['fields']} "
                  f"field(s), sum of {totals['sums_int']} integer field(s) (exact) and "
                  f"{totals['sums_float']} float field(s) (within the rounding bound)")
    with open(reason_path, "w", encoding="utf-8") as f:
        f.write(reason)
    return 1 if bad else 0


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "measure":  # URL TIMEOUT OUT-JSON [NAMES-JSON]; token in $KOMPACTOR_MAINT_TOKEN
    sys.exit(measure(args[0], os.environ.get("KOMPACTOR_MAINT_TOKEN", ""), float(args[1]),
                     args[2], args[3] if len(args) > 3 else None))
elif cmd == "unmeasured":  # OUT-JSON -> "N table(s): db.t, ..." (those with an error)
    with open(args[0], encoding="utf-8") as f:
        bad = [f"{r['db']}.{r['table']}" for r in json.load(f)["tables"] if r.get("error")]
    print(f"{len(bad)} table(s): {', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}")
elif cmd == "compare":  # BEFORE-JSON AFTER-JSON REASON-FILE -> table on stdout, 0 if equal
    sys.exit(compare(*args))
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

healthy() { [[ $(HTTP_TRIES=1 http_get /health "$WORK/health" --max-time 5) == 200 ]]; }

# measure_tables OUT-JSON [NAMES-JSON]: measures every table on the running server (one line
# per table on stdout) into OUT-JSON; the token goes to python3 through its environment, never
# on a command line. Returns 0 if every table was measured, 1 if some were not (each has its
# error in OUT-JSON and on its line), 2 if the databases or tables could not be listed.
measure_tables() {
    KOMPACTOR_MAINT_TOKEN=$TOKEN py measure "$URL" "$TIMEOUT" "$@"
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
# else; returns CMD's status. While CMD runs, nothing of this script but the script itself
# holds a file under the data dir open (the log is written in $WORK and copied afterwards, the
# lock's descriptor is closed): kompactor takes any other process with a file open there for a
# server, and only its own ancestors and siblings are exempt, so a --kompactor that is a
# wrapper (nice, timeout, a script that does not exec) would otherwise refuse to run.
run_logged() {
    local log=$1 rc tmp=$WORK/${1##*/}
    shift
    say "\$ $*"
    set +e
    "$@" 2>&1 9>&- | tee "$tmp" 9>&- | sed 's/^/  | /' 9>&-
    rc=${PIPESTATUS[0]}
    set -e
    cp -- "$tmp" "$log" || warn "could not copy $tmp to $log"
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# The routine

say "kompactor maintenance of $DATA_DIR (nodes $HOSTS) at $STAMP"
say "server: $URL, $([[ $MODE == systemd ]] && echo "systemd unit $UNIT" || echo "pid file $PID_FILE")"
say "kompactor: $KOMPACTOR"

step "1/7 measuring every table on the running server"
server_running || not_compacted "the server is not running"
code=$(http_get /health "$WORK/h")
[[ $code == 200 ]] || not_compacted "$URL/health does not answer 200 ($(describe "$code" "$WORK/h"))"
rc=0
measure_tables "$RECORD/before.json" "$NAMES_FILE" || rc=$?
[[ -s $RECORD/before.json ]] || rc=2
case $rc in
0) say "names: $NAMES_FILE" ;;
1)
    say "A table that cannot be measured now cannot be compared after the compaction. If the"
    say "query file limit is the cause (more of the table's files overlap one moment than the"
    say "limit allows), start the server once with a higher --query-file-limit and run again."
    not_compacted "could not measure $(py unmeasured "$RECORD/before.json")"
    ;;
*) not_compacted "the databases and tables could not be listed, or the measurement failed (see above)" ;;
esac

step "2/7 preparing: merging while the server runs"
if ((PREPARE)); then
    rc=0
    run_logged "$RECORD/prepare.log" "$KOMPACTOR" prepare "$DATA_DIR" --hosts "$HOSTS" "${EXTRA[@]}" || rc=$?
    case $rc in
    0) say "prepared" ;;
    3) say "partly prepared: the compaction merges the other windows itself" ;;
    *) warn "kompactor prepare exited with status $rc (see $RECORD/prepare.log): the compaction merges everything itself, with the server stopped" ;;
    esac
else
    say "skipped (--no-prepare): the compaction merges with the server stopped"
fi

step "3/7 stopping the server"
DOWN_FROM=$(date +%s.%N)
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

step "4/7 checking the data dir"
rc=0
run_logged "$RECORD/verify.log" "$KOMPACTOR" verify "$DATA_DIR" --hosts "$HOSTS" || rc=$?
case $rc in
0) say "consistent" ;;
4) not_compacted "kompactor verify found problems (exit 4, see above and $RECORD/verify.log)" ;;
*) not_compacted "kompactor verify failed with exit status $rc (see above and $RECORD/verify.log)" ;;
esac

step "5/7 compacting"
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

step "6/7 starting the server"
if ! start_server; then
    undo_help
    finish 3 "FAILED (${RUN_ID:+compacted by run $RUN_ID, but }the server did not answer $URL/health within ${TIMEOUT}s of the start)"
fi
DOWNTIME=$(awk -v a="$DOWN_FROM" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
say "downtime: ${DOWNTIME} s (from the stop to $URL/health answering 200); total so far: $(awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

step "7/7 measuring again and comparing"
rc=0
measure_tables "$RECORD/after.json" || rc=$?
if ((rc > 1)) || [[ ! -s $RECORD/after.json ]]; then
    undo_help
    finish 3 "FAILED (${RUN_ID:+compacted by run $RUN_ID, but }the databases and tables could not be listed after the restart, or the measurement failed: see above)"
fi
say ""
rc=0
py compare "$RECORD/before.json" "$RECORD/after.json" "$WORK/reason" | tee "$RECORD/comparison.txt" || rc=$?
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
