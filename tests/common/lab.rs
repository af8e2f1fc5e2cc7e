//! A node written and served by a real server, for the tests that build their own data:
//! each write persisted before the next, answers read with every file readable.

use super::server::{passed, Serve, Server, ServerBin, ServerLogs, LARGE_FILE_LIMIT};
use super::{kompactor, text};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The database the tests write.
pub const DB: &str = "prec";
pub const MIN: i64 = 60_000_000_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// 2025-11-10T00:00:00Z: the first window of the written data.
pub const T0: i64 = 1_762_732_800_000_000_000;
pub const PERSIST_TIMEOUT: Duration = Duration::from_secs(180);

/// A node written and served by one server binary, with its logs in one directory.
pub struct Lab {
    pub test: &'static str,
    bin: ServerBin,
    logs: ServerLogs,
    /// Extra `serve` flags for every start.
    flags: Vec<String>,
}

impl Lab {
    pub fn new(test: &'static str, v3_0: bool, flags: &[&str]) -> Option<Lab> {
        let bin = ServerBin::release(v3_0)?;
        Some(Lab {
            test,
            bin,
            logs: ServerLogs::new(test),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn start(&self, dir: &Path, stage: &str, opts: Serve) -> Server {
        let log = self.logs.next(stage, "node0");
        let opts = Serve {
            extra: [opts.extra, self.flags.clone()].concat(),
            ..opts
        };
        Server::start(&self.bin, dir, "node0", &opts, &log)
            .unwrap_or_else(|e| panic!("{}: {stage}: the server did not start: {e}", self.test))
    }

    /// Starts the server to write: snapshots forced, so that writes reach Parquet files
    /// within seconds.
    pub fn start_writing(&self, dir: &Path, stage: &str) -> Server {
        self.start(
            dir,
            stage,
            Serve {
                file_limit: Some(LARGE_FILE_LIMIT),
                fast_snapshots: true,
                extra: Vec::new(),
            },
        )
    }

    /// Starts the server to read, every file readable, with `extra` flags.
    pub fn start_reading(&self, dir: &Path, stage: &str, extra: &[&str]) -> Server {
        self.start(
            dir,
            stage,
            Serve {
                file_limit: Some(LARGE_FILE_LIMIT),
                fast_snapshots: false,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    /// Writes each batch of line protocol in turn, each persisted before the next is sent,
    /// so that each lands in snapshots of its own; `table` is the table they write.
    pub fn write_rounds(&self, dir: &Path, stage: &str, table: &str, rounds: &[String]) {
        let s = self.start_writing(dir, stage);
        for (i, lines) in rounds.iter().enumerate() {
            let before = files(&s, table);
            s.write_lp(DB, lines).unwrap_or_else(|e| {
                panic!("{}: {stage}: round {i}: {e}\n{}", self.test, s.log_tail(30))
            });
            // Every chunk the round wrote gets a file of its own. Waiting for only the first
            // let a round's later chunks stay in the WAL, mixed with the next round's, and the
            // node's answers then depended on when the server happened to snapshot.
            let want = before + chunks(lines);
            let deadline = Instant::now() + PERSIST_TIMEOUT;
            while files(&s, table) < want {
                assert!(
                    Instant::now() < deadline,
                    "{}: {stage}: round {i} was not persisted ({} of {want} files)\n{}",
                    self.test,
                    files(&s, table),
                    s.log_tail(30)
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        s.stop();
    }

    /// The server's answers for `table`: every row in order, the row count, and each field's
    /// count and sum, with every file readable.
    pub fn answers(&self, dir: &Path, stage: &str, table: &str, fields: &[&str]) -> Vec<Value> {
        self.answers_within(dir, stage, table, fields, Some(LARGE_FILE_LIMIT))
    }

    /// `answers`, under the server's `--query-file-limit` `file_limit` (`None`: its default).
    pub fn answers_within(
        &self,
        dir: &Path,
        stage: &str,
        table: &str,
        fields: &[&str],
        file_limit: Option<u64>,
    ) -> Vec<Value> {
        let s = self.start(
            dir,
            stage,
            Serve {
                file_limit,
                fast_snapshots: false,
                extra: Vec::new(),
            },
        );
        let q = |sql: &str| {
            s.query(DB, sql).unwrap_or_else(|e| {
                panic!("{}: {stage}: {sql}: {e}\n{}", self.test, s.log_tail(30))
            })
        };
        let mut out = q(&format!("SELECT * FROM \"{table}\" ORDER BY host, time"));
        let aggregates: Vec<String> = fields
            .iter()
            .map(|f| format!("count({f}) AS c_{f}, sum({f}) AS s_{f}"))
            .collect();
        out.extend(q(&format!(
            "SELECT count(*) AS n, {} FROM \"{table}\"",
            aggregates.join(", ")
        )));
        s.stop();
        out
    }

    /// Runs kompactor on node0 of `dir` with `args`.
    pub fn kompactor(&self, dir: &Path, args: &[&str]) -> Value {
        let mut all = vec![dir.to_str().unwrap(), "--hosts", "node0", "--json"];
        all.extend(args);
        let out = kompactor(&all);
        assert!(
            out.status.success(),
            "{}: kompactor {args:?}:\n{}",
            self.test,
            text(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn passed(&self) {
        passed(self.test, &format!("served {} times", self.logs.starts()));
    }
}

/// The 10-minute chunks (`--gen1-duration 10m`) that line protocol with nanosecond
/// timestamps writes to.
fn chunks(lines: &str) -> i64 {
    let chunk = 10 * MIN;
    let starts: std::collections::BTreeSet<i64> = lines
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.parse::<i64>().ok())
        .map(|t| t - t.rem_euclid(chunk))
        .collect();
    starts.len() as i64
}

/// How many Parquet files the server lists for `table` of the test database.
pub fn files(s: &Server, table: &str) -> i64 {
    files_of(s, DB, table)
}

/// How many Parquet files the server lists for `table` of `db`.
pub fn files_of(s: &Server, db: &str, table: &str) -> i64 {
    let rows = s
        .query(
            db,
            &format!("SELECT count(*) AS n FROM system.parquet_files WHERE table_name = '{table}'"),
        )
        .unwrap_or_default();
    rows.first().and_then(|r| r["n"].as_i64()).unwrap_or(0)
}

pub fn assert_same(test: &str, stage: &str, want: &[Value], got: &[Value]) {
    if want != got {
        let first = want
            .iter()
            .zip(got)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(got.len()));
        panic!(
            "{test}: {stage}: the answers differ (rows {} before, {} now); first difference at row {first}:\n  before: {:?}\n  now:    {:?}",
            want.len(),
            got.len(),
            want.get(first),
            got.get(first)
        );
    }
}

pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("node0"))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(st.success());
    to
}
