#!/usr/bin/env python3
"""A fake InfluxDB 3 Core server for tests/maintenance.rs (python3 standard library only).

It answers only what scripts/maintenance.sh asks, the way the real server does:

  GET /health                                       200 "OK"
  GET /api/v3/configure/database?format=json        [{"iox::database": "_internal"}, ...]
  GET /api/v3/query_sql?db=DB&format=json&q=...     one of:
      SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'
      SELECT count(*) AS n FROM "TABLE"
      SELECT path FROM system.parquet_files WHERE table_name = 'TABLE' LIMIT 1

The answers come from a JSON state file read once at startup, so a state file changed while
the server is stopped is what the restarted server serves:

  {"metrics": {"cpu": 100, "mem": 20}, "events": {"log": {"count": 6061, "files": 448}}}

A table is either a row count or {"count": N, "files": F}; a count query on a table with more
files than --query-file-limit (default 432) fails like the real server's does.

It binds to 127.0.0.1 only, writes its pid to --pid-file, and exits cleanly on SIGTERM.
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def load_state(path):
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    dbs = {}
    for db, tables in state.items():
        dbs[db] = {}
        for table, v in tables.items():
            if isinstance(v, dict):
                dbs[db][table] = {"count": int(v["count"]), "files": int(v.get("files", 1))}
            else:
                dbs[db][table] = {"count": int(v), "files": 1}
    return dbs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--state", required=True, help="JSON state file: {db: {table: count}}")
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every request")
    ap.add_argument("--query-file-limit", type=int, default=432)
    ap.add_argument("--start-delay", type=float, default=0.0,
                    help="seconds to wait before listening (a server loading its catalog)")
    args = ap.parse_args()

    dbs = load_state(args.state)
    with open(args.pid_file, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    print(f"fake influxdb3 pid {os.getpid()} state {args.state}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if stop.wait(args.start_delay):
        return 0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("fake influxdb3: " + (fmt % a) + "\n")

        def send(self, status, body, ctype="application/json"):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status, message):
            self.send(status, json.dumps({"error": message, "data": None}))

        def do_GET(self):
            if args.token is not None and \
                    self.headers.get("Authorization") != f"Bearer {args.token}":
                return self.error(401, "Unauthorized")
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if url.path == "/health":
                return self.send(200, "OK", "text/plain; charset=utf-8")
            if url.path == "/api/v3/configure/database":
                if params.get("format") != "json":
                    return self.error(400, "this fake answers only format=json")
                rows = [{"iox::database": "_internal"}] + [{"iox::database": d} for d in dbs]
                return self.send(200, json.dumps(rows))
            if url.path == "/api/v3/query_sql":
                return self.query(params)
            return self.error(404, f"not found: {url.path}")

        def query(self, params):
            if params.get("format") != "json":
                return self.error(400, "this fake answers only format=json")
            db, q = params.get("db"), " ".join(params.get("q", "").split())
            if db not in dbs:
                return self.error(404, f"database not found: {db}")
            tables = dbs[db]
            if re.fullmatch(r"SELECT table_name FROM information_schema\.tables "
                            r"WHERE table_schema ?= ?'iox'", q, re.I):
                return self.send(200, json.dumps([{"table_name": t} for t in tables]))
            m = re.fullmatch(r'SELECT count\(\*\) AS n FROM "((?:[^"]|"")+)"', q, re.I)
            if m:
                t = tables.get(m.group(1).replace('""', '"'))
                if t is None:
                    return self.error(400, f"table '{m.group(1)}' not found")
                if t["files"] > args.query_file_limit:
                    return self.error(400, (
                        f"error while planning query: External error: Query would scan "
                        f"{args.query_file_limit} Parquet files, exceeding the file limit. "
                        f"InfluxDB 3 Core caps queries to the --query-file-limit"))
                return self.send(200, json.dumps([{"n": t["count"]}]))
            m = re.fullmatch(r"SELECT path FROM system\.parquet_files "
                             r"WHERE table_name ?= ?'((?:[^']|'')+)' LIMIT 1", q, re.I)
            if m:
                name = m.group(1).replace("''", "'")
                if name not in tables:
                    return self.send(200, "[]")
                db_id, table_id = list(dbs).index(db) + 1, list(tables).index(name)
                path = f"node0/dbs/{db_id}/{table_id}/2026-11-16/00-00/0000000001.parquet"
                return self.send(200, json.dumps([{"path": path}]))
            return self.error(400, f"this fake does not understand: {q}")

    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=lambda: (stop.wait(), httpd.shutdown()), daemon=True).start()
    print(f"fake influxdb3 listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    httpd.serve_forever(poll_interval=0.1)
    httpd.server_close()
    print("fake influxdb3 stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
