//! The real server in the loop: each fixture is served by a real InfluxDB 3 Core server before
//! and after kompactor, and the server must answer exactly as before.
//!
//! For every fixture (3.10 small and multi, and 3.5.0 and 3.8.3 as an upgrade, with the 3.10
//! server; 3.0.3 with the 3.0.3 server), the server first records its answers on a copy with
//! every file readable (per table: `count(*)`, min and max time, per-field counts and sums,
//! distinct series, and the full table ordered by its tags and time); they must be the ones
//! the fixture recorded. Then, each on a fresh copy:
//!
//! - `compaction_*`: `--window 1d --min-age 0`, `--window 10m --min-age 0` and `--window 1d`,
//!   each served under the **default** query file limit: every answer identical, no query
//!   over the limit. After the first, new points (a new series, newer times) are written,
//!   snapshotted and served again: exactly those rows more, ids still unique (`kompactor
//!   verify`); and once more after a second compaction;
//! - `undo_*`: a compaction, served, then undone: the original answers from the original files;
//! - `archive_*` (3.10 small, 3.0.3): exactly the rows from the first day kept; `restore`: all;
//! - `crash_*`: a crash at each failpoint of compaction (3.10 small, 3.8.3, 3.0.3), undo and
//!   archive (3.10 small): the server refuses to start (the guard file) or answers exactly as
//!   before or as after; after the next kompactor run, exactly as before (or as after);
//! - `prepare_while_serving_*` (3.10 small and multi): `kompactor prepare` while the server runs
//!   and persists new points, then the compaction that commits: the original answers and
//!   exactly the new points more.
//!
//! Retention is not here: the server prunes expired files by the database's retention period,
//! which lives in its binary catalog; files deleted without it make the server fail its
//! queries. `tests/retention.rs` checks retention through kompactor's own reader.
//!
//! The servers come from `$INFLUXDB3_BIN` and `$INFLUXDB3_BIN_3_0` (see `tests/common/server.rs`);
//! without them the tests fail, unless the run opts out (`KOMPACTOR_TESTS_SKIP`, see
//! `tests/common/prereq.rs`). Each test that ran to its end appends a line starting with its
//! name to the file `$KOMPACTOR_TEST_MARKER` (if set), which `.ci/run` checks. Server logs go to `$CARGO_TARGET_TMPDIR/real-server/<test>/`; a
//! failure prints the end of the log concerned.

mod common;

use common::server::{
    fixture_flags, log_tail, Serve, Server, ServerBin, ServerLogs, StartError, LARGE_FILE_LIMIT,
};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The file kompactor places in a node's `snapshots/` while its commit is in progress.
const GUARD: &str = "KOMPACTOR-COMMIT-IN-PROGRESS";

/// The compactions every fixture goes through, each on a fresh copy. Every window merged by
/// day: then new writes and a second run.
const DAILY_ALL: &[&str] = &["--window", "1d", "--min-age", "0", "--writer-reach", "0"];
/// Every window merged in the server's own 10-minute windows (432 files for 3 days: exactly
/// the default limit): then undone.
const TEN_MINUTES_ALL: &[&str] = &["--window", "10m", "--min-age", "0"];
/// The defaults: windows by age, 10 minutes wide where the writers still write (every
/// fixture's writers reached back over its whole history), `--min-age 1h`.
const DEFAULTS: &[&str] = &[];

/// Failpoints met by `undo`.
const UNDO_FAILPOINTS: &[&str] = &["undo-started", "undo-metadata-write"];

/// How long the server may take to persist newly written points.
const PERSIST_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// The tests: one per fixture and kind of check, so that one failure hides no other and the
// harness can run two at once. Each fixture's answers before kompactor are recorded once.

/// The fixtures and their servers: the 3.10 server reads the 3.10, 3.5.0 and 3.8.3 fixtures
/// (the latter two as an upgrade would), the 3.0.3 server the 3.0.3 fixture.
const SMALL_3_10: &str = "3.10/small";
const MULTI_3_10: &str = "3.10/multi";
const SMALL_3_5_0: &str = "3.5.0/small";
const SMALL_3_8_3: &str = "3.8.3/small";
const SMALL_3_0_3: &str = "3.0.3/small";

#[test]
fn compaction_3_10_small() {
    check("compaction_3_10_small", SMALL_3_10, Case::compactions);
}

#[test]
fn compaction_3_10_multi() {
    check("compaction_3_10_multi", MULTI_3_10, Case::compactions);
}

#[test]
fn compaction_3_5_0_small_upgraded_to_3_10() {
    check(
        "compaction_3_5_0_small_upgraded_to_3_10",
        SMALL_3_5_0,
        Case::compactions,
    );
}

#[test]
fn compaction_3_8_3_small_upgraded_to_3_10() {
    check(
        "compaction_3_8_3_small_upgraded_to_3_10",
        SMALL_3_8_3,
        Case::compactions,
    );
}

#[test]
fn compaction_3_0_3_small() {
    check("compaction_3_0_3_small", SMALL_3_0_3, Case::compactions);
}

#[test]
fn undo_3_10_small() {
    check("undo_3_10_small", SMALL_3_10, Case::compaction_then_undo);
}

#[test]
fn undo_3_10_multi() {
    check("undo_3_10_multi", MULTI_3_10, Case::compaction_then_undo);
}

#[test]
fn undo_3_5_0_small_upgraded_to_3_10() {
    check(
        "undo_3_5_0_small_upgraded_to_3_10",
        SMALL_3_5_0,
        Case::compaction_then_undo,
    );
}

#[test]
fn undo_3_8_3_small_upgraded_to_3_10() {
    check(
        "undo_3_8_3_small_upgraded_to_3_10",
        SMALL_3_8_3,
        Case::compaction_then_undo,
    );
}

#[test]
fn undo_3_0_3_small() {
    check("undo_3_0_3_small", SMALL_3_0_3, Case::compaction_then_undo);
}

#[test]
fn archive_3_10_small() {
    check("archive_3_10_small", SMALL_3_10, Case::archive_then_restore);
}

#[test]
fn archive_3_0_3_small() {
    check(
        "archive_3_0_3_small",
        SMALL_3_0_3,
        Case::archive_then_restore,
    );
}

#[test]
fn crash_compaction_3_10_small() {
    check(
        "crash_compaction_3_10_small",
        SMALL_3_10,
        Case::crash_during_compaction,
    );
}

#[test]
fn crash_compaction_3_8_3_small_upgraded_to_3_10() {
    check(
        "crash_compaction_3_8_3_small_upgraded_to_3_10",
        SMALL_3_8_3,
        Case::crash_during_compaction,
    );
}

#[test]
fn crash_compaction_3_0_3_small() {
    check(
        "crash_compaction_3_0_3_small",
        SMALL_3_0_3,
        Case::crash_during_compaction,
    );
}

#[test]
fn crash_undo_3_10_small() {
    check("crash_undo_3_10_small", SMALL_3_10, Case::crash_during_undo);
}

#[test]
fn crash_archive_3_10_small() {
    check(
        "crash_archive_3_10_small",
        SMALL_3_10,
        Case::crash_during_archive,
    );
}

#[test]
fn prepare_while_serving_3_10_small() {
    check(
        "prepare_while_serving_3_10_small",
        SMALL_3_10,
        Case::prepare_while_serving,
    );
}

#[test]
fn prepare_while_serving_3_10_multi() {
    check(
        "prepare_while_serving_3_10_multi",
        MULTI_3_10,
        Case::prepare_while_serving,
    );
}

#[test]
fn delete_3_10_small() {
    check("delete_3_10_small", SMALL_3_10, Case::deletes);
}

#[test]
fn delete_3_8_3_small_upgraded_to_3_10() {
    check(
        "delete_3_8_3_small_upgraded_to_3_10",
        SMALL_3_8_3,
        Case::deletes,
    );
}

#[test]
fn delete_3_0_3_small() {
    check("delete_3_0_3_small", SMALL_3_0_3, Case::deletes);
}

/// Runs test `test` on fixture `name` unless no server for it is configured, and records
/// that it ran to its end.
fn check(test: &'static str, name: &str, body: fn(&Case)) {
    if let Some(c) = Case::open(test, name) {
        body(&c);
        c.passed();
    }
}

// ---------------------------------------------------------------------------------------------
// What the server answers

/// A table of one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TableRef {
    node: String,
    db: String,
    table: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}.{}", self.node, self.db, self.table)
    }
}

/// A table's columns as the server describes them.
#[derive(Clone, Debug, Default)]
struct Columns {
    /// Tag columns, sorted by name.
    tags: Vec<String>,
    /// Field columns and their Arrow types, sorted by name.
    fields: Vec<(String, String)>,
}

/// What the server answers about one table.
#[derive(Clone, Debug)]
struct TableAnswers {
    columns: Columns,
    /// Named scalar answers (`count.n`, `count.max_time_ns`, `fields.sum_<f>`, `series.n`, ...).
    scalars: BTreeMap<String, Value>,
    /// Every row, ordered by the tags, then time.
    dump: Vec<Value>,
    /// How many Parquet files the server has loaded for the table (compaction changes it).
    files: u64,
}

impl TableAnswers {
    /// `count(*)`.
    fn count(&self) -> i64 {
        self.scalars["count.n"].as_i64().unwrap()
    }

    /// `max(time)` in nanoseconds.
    fn max_time_ns(&self) -> i64 {
        self.scalars["count.max_time_ns"].as_i64().unwrap()
    }
}

type Answers = BTreeMap<TableRef, TableAnswers>;

/// Which rows of each table the answers cover.
enum Rows<'a> {
    All,
    /// Rows at or after a time (`YYYY-MM-DDTHH:MM:SS`).
    From(&'a str),
    /// Per table, rows at or before a time.
    UpTo(&'a BTreeMap<TableRef, String>),
    /// Of one table, the rows a condition does not hold for (what a delete keeps); of the
    /// others, all.
    Except(&'a TableRef, &'a str),
}

impl Rows<'_> {
    /// The `WHERE` clause selecting the rows of `t` (empty for all of them).
    fn clause(&self, t: &TableRef) -> String {
        match self {
            Rows::All => String::new(),
            Rows::From(time) => format!(" WHERE time >= '{time}'"),
            Rows::UpTo(times) => format!(" WHERE time <= '{}'", times[t]),
            Rows::Except(table, cond) if *table == t => format!(" WHERE ({cond}) IS NOT TRUE"),
            Rows::Except(..) => String::new(),
        }
    }
}

/// A SQL identifier, double-quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs a query, panicking with the query, the error (saying so when it is the query file
/// limit) and the server's log.
fn query(s: &Server, ctx: &str, t: &TableRef, sql: &str) -> Vec<Value> {
    s.query(&t.db, sql)
        .unwrap_or_else(|e| panic!("{ctx}: {t}: query failed: {sql}\n{e}\n{}", s.log_tail(30)))
}

/// The tables of a database and their columns (`information_schema`).
fn tables(s: &Server, ctx: &str, db: &str) -> BTreeMap<String, Columns> {
    let t = TableRef {
        node: s.node.clone(),
        db: db.to_string(),
        table: "information_schema.columns".into(),
    };
    let rows = query(
        s,
        ctx,
        &t,
        "SELECT table_name, column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'iox' ORDER BY table_name, column_name",
    );
    let mut out: BTreeMap<String, Columns> = BTreeMap::new();
    for r in rows {
        let (table, column, ty) = (
            r["table_name"].as_str().unwrap(),
            r["column_name"].as_str().unwrap(),
            r["data_type"].as_str().unwrap(),
        );
        let cols = out.entry(table.to_string()).or_default();
        if ty.starts_with("Dictionary") {
            cols.tags.push(column.to_string());
        } else if column != "time" {
            cols.fields.push((column.to_string(), ty.to_string()));
        }
    }
    out
}

/// The aggregate of one field: its count, and its sum, number of trues or total characters.
fn field_aggregates(name: &str, ty: &str) -> Vec<String> {
    let id = ident(name);
    let mut out = vec![format!(
        "count({id}) AS {}",
        ident(&format!("count_{name}"))
    )];
    let extra = match ty {
        "Float64" | "Int64" | "UInt64" => Some(("sum", format!("sum({id})"))),
        "Boolean" => Some(("true", format!("sum(CASE WHEN {id} THEN 1 ELSE 0 END)"))),
        t if t.starts_with("Utf8") => Some(("chars", format!("sum(character_length({id}))"))),
        _ => None,
    };
    if let Some((prefix, expr)) = extra {
        out.push(format!("{expr} AS {}", ident(&format!("{prefix}_{name}"))));
    }
    out
}

/// The one row an aggregate query returns, its columns prefixed with `name.`.
fn scalar_row(s: &Server, ctx: &str, t: &TableRef, name: &str, sql: &str) -> Vec<(String, Value)> {
    let rows = query(s, ctx, t, sql);
    assert_eq!(rows.len(), 1, "{ctx}: {t}: {sql}: {rows:?}");
    rows[0]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("{name}.{k}"), v.clone()))
        .collect()
}

/// Every answer about one table, for the rows `rows` selects.
fn table_answers(s: &Server, ctx: &str, t: &TableRef, cols: &Columns, rows: &Rows) -> TableAnswers {
    let from = format!("FROM {}{}", ident(&t.table), rows.clause(t));
    let tags: Vec<String> = cols.tags.iter().map(|c| ident(c)).collect();
    let order: Vec<String> = tags.iter().cloned().chain(["time".into()]).collect();
    let dump_sql = format!("SELECT * {from} ORDER BY {}", order.join(", "));
    TableAnswers {
        columns: cols.clone(),
        scalars: scalar_answers(s, ctx, t, cols, &from),
        dump: query(s, ctx, t, &dump_sql),
        files: loaded_files(s, ctx, t),
    }
}

/// `count(*)` with min and max time, each field's aggregates, and the distinct series, of the
/// rows `from` (a `FROM ... [WHERE ...]` clause) selects.
fn scalar_answers(
    s: &Server,
    ctx: &str,
    t: &TableRef,
    cols: &Columns,
    from: &str,
) -> BTreeMap<String, Value> {
    let count = format!(
        "SELECT count(*) AS n, min(time) AS min_time, max(time) AS max_time, \
         CAST(min(time) AS BIGINT) AS min_time_ns, CAST(max(time) AS BIGINT) AS max_time_ns {from}"
    );
    let mut out: BTreeMap<String, Value> =
        scalar_row(s, ctx, t, "count", &count).into_iter().collect();
    let aggs: Vec<String> = cols
        .fields
        .iter()
        .flat_map(|(f, ty)| field_aggregates(f, ty))
        .collect();
    if !aggs.is_empty() {
        let sql = format!("SELECT {} {from}", aggs.join(", "));
        out.extend(scalar_row(s, ctx, t, "fields", &sql));
    }
    if !cols.tags.is_empty() {
        let tags: Vec<String> = cols.tags.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "SELECT count(*) AS n FROM (SELECT DISTINCT {} {from}) s",
            tags.join(", ")
        );
        out.extend(scalar_row(s, ctx, t, "series", &sql));
    }
    out
}

/// How many Parquet files the server has loaded for table `t`.
fn loaded_files(s: &Server, ctx: &str, t: &TableRef) -> u64 {
    let sql = format!(
        "SELECT count(*) AS n FROM system.parquet_files WHERE table_name = {}",
        literal(&t.table)
    );
    query(s, ctx, t, &sql)[0]["n"].as_u64().unwrap()
}

/// Every answer about every table of the server's node, for each row selection.
fn node_answers(s: &Server, ctx: &str, selections: &[Rows]) -> Vec<Answers> {
    let mut out = vec![Answers::new(); selections.len()];
    for db in s.databases() {
        for (table, cols) in tables(s, ctx, &db) {
            let t = TableRef {
                node: s.node.clone(),
                db: db.clone(),
                table,
            };
            for (rows, answers) in selections.iter().zip(out.iter_mut()) {
                answers.insert(t.clone(), table_answers(s, ctx, &t, &cols, rows));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Comparing answers

/// Whether two answers are the same; float sums may differ by summation order (1e-9 relative).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// The first difference between one table's answers, if any.
fn table_difference(want: &TableAnswers, got: &TableAnswers) -> Option<String> {
    for (k, w) in &want.scalars {
        match got.scalars.get(k) {
            Some(g) if same_value(w, g) => {}
            g => {
                return Some(format!(
                    "{k}: expected {w}, got {}",
                    g.map_or("nothing".into(), |g| g.to_string())
                ))
            }
        }
    }
    if let Some(k) = got.scalars.keys().find(|k| !want.scalars.contains_key(*k)) {
        return Some(format!("{k}: not expected, got {}", got.scalars[k]));
    }
    let rows = want.dump.iter().zip(&got.dump).enumerate();
    if let Some((i, (w, g))) = rows.clone().find(|(_, (w, g))| w != g) {
        return Some(format!(
            "dump row {i} of {} differs:\n  expected {w}\n  got      {g}",
            want.dump.len()
        ));
    }
    if want.dump.len() != got.dump.len() {
        let n = want.dump.len().min(got.dump.len());
        let (side, row) = if want.dump.len() > n {
            ("missing", &want.dump[n])
        } else {
            ("extra", &got.dump[n])
        };
        return Some(format!(
            "dump has {} rows, expected {}; first {side} row {n}: {row}",
            got.dump.len(),
            want.dump.len()
        ));
    }
    None
}

/// The first difference between two sets of answers: its table, and what differs.
struct Difference {
    table: TableRef,
    what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.table, self.what)
    }
}

/// The first difference between two sets of answers, if any.
fn difference(want: &Answers, got: &Answers) -> Option<Difference> {
    let at = |t: &TableRef, what: String| Difference {
        table: t.clone(),
        what,
    };
    for (t, w) in want {
        let Some(g) = got.get(t) else {
            return Some(at(t, "table missing".into()));
        };
        if let Some(d) = table_difference(w, g) {
            return Some(at(t, d));
        }
    }
    let extra = got.keys().find(|t| !want.contains_key(*t));
    extra.map(|t| at(t, "table not expected".into()))
}

/// The answers about the tables of one node.
fn on_node(a: &Answers, node: &str) -> Answers {
    a.iter()
        .filter(|(t, _)| t.node == node)
        .map(|(t, v)| (t.clone(), v.clone()))
        .collect()
}

/// Answers from one pass over a data dir (one server per node, one after the other).
struct Served {
    answers: Vec<Answers>,
    /// Each node's server log.
    logs: BTreeMap<String, PathBuf>,
}

impl Served {
    /// The answers for the first (or only) row selection.
    fn all(&self) -> &Answers {
        &self.answers[0]
    }

    /// Panics with the first difference, the stage and the server log, unless `got` = `want`.
    fn assert_same(&self, ctx: &str, what: &str, want: &Answers, got: &Answers) {
        if let Some(d) = difference(want, got) {
            let log = self.logs.get(&d.table.node).map(|p| log_tail(p, 20));
            let log = log.unwrap_or_default();
            panic!("{ctx}: the server does not answer {what}:\n{d}\n{log}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A fixture under test

/// A fixture with its server, and the answers the server gave before kompactor.
struct Case {
    test: &'static str,
    f: Fixture,
    bin: ServerBin,
    logs: ServerLogs,
    started: Instant,
    base: Arc<Base>,
}

/// What the server answers on the untouched fixture, every file readable.
#[derive(Default)]
struct Base {
    all: Answers,
    /// Only the rows from `archive_day` on.
    from_day: Answers,
    /// The first day `archive` keeps: the day after the fixture's first day.
    archive_day: String,
}

impl Case {
    /// Fixture `name` with its server and its answers before kompactor (recorded by the first
    /// test that needs them); `None` if no server for it is configured (the test is skipped).
    fn open(test: &'static str, name: &str) -> Option<Case> {
        let f = fixture(name);
        let bin = ServerBin::for_fixture(&f)?;
        let mut c = Case {
            test,
            f,
            bin,
            logs: ServerLogs::new(test),
            started: Instant::now(),
            base: Arc::default(),
        };
        c.base = c.shared_base();
        Some(c)
    }

    /// The fixture's `Base`, recorded once per test process.
    fn shared_base(&self) -> Arc<Base> {
        type Cache = Mutex<BTreeMap<String, Arc<OnceLock<Arc<Base>>>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let slot = CACHE
            .get_or_init(Cache::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.f.name.clone())
            .or_default()
            .clone();
        slot.get_or_init(|| Arc::new(self.record_base())).clone()
    }

    /// Serves a fresh copy of the fixture with every file readable and records its answers
    /// (checked against the fixture's own `expected/summary.json`), all rows and those from the
    /// archive day on, in one pass.
    fn record_base(&self) -> Base {
        let archive_day = day_after_first(&self.f);
        let copy = copy_fixture(&self.f);
        let selections = [Rows::All, Rows::From(&archive_day)];
        let served = self.serve(copy.path(), "before", Some(LARGE_FILE_LIMIT), &selections);
        let [all, from_day]: [Answers; 2] = served.answers.try_into().unwrap();
        self.check_against_summary(&all);
        Base {
            all,
            from_day,
            archive_day,
        }
    }

    /// The server's answers on the untouched copy must be those the fixture recorded: else the
    /// server or its flags do not fit the fixture.
    fn check_against_summary(&self, all: &Answers) {
        let summary = full_summary(&self.f);
        let mut recorded_tables = 0;
        for (node, dbs) in summary["answers"].as_object().unwrap() {
            for (db, tables) in dbs.as_object().unwrap() {
                for table in tables.as_object().unwrap().keys() {
                    recorded_tables += 1;
                    let t = TableRef {
                        node: node.clone(),
                        db: db.clone(),
                        table: table.clone(),
                    };
                    assert!(all.contains_key(&t), "{}: {t}: not served", self.f.name);
                }
            }
        }
        assert_eq!(all.len(), recorded_tables, "{}: tables served", self.f.name);
        for (t, a) in all {
            let recorded = &summary["answers"][&t.node][&t.db][&t.table];
            for part in ["count", "fields", "series"] {
                for (k, want) in recorded[part]["row"].as_object().unwrap() {
                    let got = &a.scalars[&format!("{part}.{k}")];
                    assert!(
                        same_value(want, got),
                        "{}: {t}: on the untouched fixture the server answers {part}.{k} = {got}, \
                         expected/summary.json says {want}",
                        self.f.name
                    );
                }
            }
            assert_eq!(
                a.dump.len() as i64,
                a.count(),
                "{}: {t}: dump rows",
                self.f.name
            );
        }
    }

    /// `--hosts` for every node of the fixture.
    fn hosts(&self) -> String {
        self.f.nodes().join(",")
    }

    /// "fixture: stage" for messages.
    fn ctx(&self, stage: &str) -> String {
        format!("{} ({}): {stage}", self.f.name, self.test)
    }

    /// How to serve this fixture: the file limit, fast snapshots or not, and its own flags.
    fn serve_opts(&self, file_limit: Option<u64>, fast_snapshots: bool) -> Serve {
        Serve {
            file_limit,
            fast_snapshots,
            extra: fixture_flags(&self.f),
        }
    }

    /// Starts the server on one node of `dir`, panicking with its log if it does not come up.
    fn start(&self, dir: &Path, node: &str, stage: &str, opts: &Serve) -> Server {
        let log = self.logs.next(stage, node);
        Server::start(&self.bin, dir, node, opts, &log).unwrap_or_else(|e| {
            panic!("{}: {node}: the server did not start: {e}", self.ctx(stage))
        })
    }

    /// Serves each node of `dir` in turn with the given file limit and records its answers.
    fn serve(
        &self,
        dir: &Path,
        stage: &str,
        file_limit: Option<u64>,
        selections: &[Rows],
    ) -> Served {
        let ctx = self.ctx(stage);
        let opts = self.serve_opts(file_limit, false);
        let mut served = Served {
            answers: vec![Answers::new(); selections.len()],
            logs: BTreeMap::new(),
        };
        for node in self.f.nodes() {
            let s = self.start(dir, &node, stage, &opts);
            served.logs.insert(node.clone(), s.log.clone());
            for (acc, a) in served
                .answers
                .iter_mut()
                .zip(node_answers(&s, &ctx, selections))
            {
                acc.extend(a);
            }
            s.stop();
        }
        served
    }

    /// Serves `dir` under the default file limit and asserts every answer is the original one.
    fn assert_serves_base(&self, dir: &Path, stage: &str) {
        let served = self.serve(dir, stage, None, &[Rows::All]);
        served.assert_same(&self.ctx(stage), "as before", &self.base.all, served.all());
        self.note_files(stage, served.all());
    }

    /// Notes, for a failure message or `--nocapture`, how many files each table has now.
    fn note_files(&self, stage: &str, now: &Answers) {
        for (t, a) in now {
            eprintln!(
                "{}: {t}: {} files (before: {})",
                self.ctx(stage),
                a.files,
                self.base.all[t].files
            );
        }
    }

    /// The command line of a quiet compaction of every node of `dir` with `args`.
    fn compaction_args(&self, dir: &Path, args: &[&str]) -> Vec<String> {
        let head = [dir.to_str().unwrap(), "--hosts", &self.hosts()].map(String::from);
        let tail = args.iter().copied().chain(["-q"]).map(String::from);
        head.into_iter().chain(tail).collect()
    }

    /// Compacts every node of `dir` with `args`, panicking with kompactor's output on failure.
    fn kompactor(&self, dir: &Path, args: &[&str], stage: &str) {
        let all = self.compaction_args(dir, args);
        self.run_ok(&all.iter().map(String::as_str).collect::<Vec<_>>(), stage);
    }

    /// `kompactor verify` must find the data dir consistent (ids unique, sizes right, ...).
    fn verify(&self, dir: &Path, stage: &str) {
        let hosts = self.hosts();
        let out = kompactor(&["verify", dir.to_str().unwrap(), "--hosts", &hosts]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: kompactor verify:\n{}",
            self.ctx(stage),
            text(&out)
        );
    }

    /// Compacts a fresh copy with `args` and serves it under the default limit: every answer
    /// as before. Returns the copy and the stage's name.
    fn compaction(&self, args: &[&str]) -> (tempfile::TempDir, String) {
        let copy = copy_fixture(&self.f);
        let stage = format!("after kompactor {}", args.join(" "));
        self.kompactor(copy.path(), args, &stage);
        self.assert_serves_base(copy.path(), &stage);
        (copy, stage)
    }

    /// A compaction with the default options, served with every file readable: the
    /// fixtures' writers reach back over their whole history, so the defaults keep 10-minute
    /// windows and a table can stay just over the limit (the plan says why).
    fn default_compaction(&self) {
        let copy = copy_fixture(&self.f);
        let stage = "after kompactor with the default options";
        self.kompactor(copy.path(), DEFAULTS, stage);
        let served = self.serve(copy.path(), stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
        served.assert_same(&self.ctx(stage), "as before", &self.base.all, served.all());
    }

    /// Every compaction on its own copy; the first is then written to and compacted again.
    fn compactions(&self) {
        self.compaction_then_writes(DAILY_ALL);
        self.compaction(TEN_MINUTES_ALL);
        self.default_compaction();
    }

    /// A compaction (see `compaction`), then new points written, served again, compacted
    /// again and served again.
    fn compaction_then_writes(&self, args: &[&str]) {
        let (copy, stage) = self.compaction(args);
        let dir = copy.path();
        let written = self.write_new_points(dir, &format!("{stage}, writing"));
        let stage = format!("{stage}, after new writes");
        self.verify(dir, &stage);
        self.assert_serves_base_and(dir, &stage, &written);

        let stage = format!("{stage}, compacted again");
        self.kompactor(dir, args, &stage);
        self.verify(dir, &stage);
        self.assert_serves_base_and(dir, &stage, &written);
    }

    /// `kompactor prepare` while the server runs and writes new points (snapshotting at once),
    /// then, the server stopped, the compaction that commits: every original answer, and
    /// exactly the new points more.
    fn prepare_while_serving(&self) {
        let copy = copy_fixture(&self.f);
        let dir = copy.path();
        let stage = "kompactor prepare while the server writes";
        let hosts = self.hosts();
        let mut prepare = vec!["prepare", dir.to_str().unwrap(), "--hosts", &hosts];
        prepare.extend(DAILY_ALL);
        let written = self.write_new_points_while(dir, stage, &|| self.run_ok(&prepare, stage));
        let stage = "after the compaction that commits what was prepared";
        self.kompactor(dir, DAILY_ALL, stage);
        self.verify(dir, stage);
        self.assert_serves_base_and(dir, stage, &written);
    }

    /// Compacts a fresh copy, serves it, undoes the run, and serves the original.
    fn compaction_then_undo(&self) {
        let (copy, stage) = self.compaction(TEN_MINUTES_ALL);
        let dir = copy.path();
        let stage = format!("{stage}, undone");
        let run = last_run(dir);
        self.run_ok(&["undo", dir.to_str().unwrap(), "--run", &run], &stage);
        self.assert_serves_original_files(dir, &stage);
    }

    /// Serves `dir` with every file readable: the original answers from the original files.
    fn assert_serves_original_files(&self, dir: &Path, stage: &str) {
        let served = self.serve(dir, stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
        let ctx = self.ctx(stage);
        served.assert_same(&ctx, "as before", &self.base.all, served.all());
        for (t, a) in served.all() {
            assert_eq!(
                a.files, self.base.all[t].files,
                "{ctx}: {t}: Parquet files loaded"
            );
        }
    }

    /// Runs kompactor with `args` as given, panicking with its output unless it succeeds.
    fn run_ok(&self, args: &[&str], stage: &str) {
        let out = kompactor(args);
        assert!(
            out.status.success(),
            "{}: kompactor {args:?} failed ({}):\n{}",
            self.ctx(stage),
            out.status,
            text(&out)
        );
    }

    /// The `archive` command line for a fresh copy `dir` and archive `to`.
    fn archive_args(&self, dir: &Path, to: &Path) -> Vec<String> {
        let cutoff = self.base.archive_day.replace("T00:00:00", "T05:00:00Z");
        [
            "archive",
            dir.to_str().unwrap(),
            "--hosts",
            &self.hosts(),
            "--older-than",
            &cutoff,
        ]
        .into_iter()
        .map(String::from)
        .chain(["--to".to_string(), to.display().to_string()])
        .collect()
    }

    /// Archives the days before `archive_day`: the node answers exactly the rows from that day
    /// on; restoring brings back every original answer.
    fn archive_then_restore(&self) {
        let copy = copy_fixture(&self.f);
        let dir = copy.path();
        let tmp = tempfile::tempdir().unwrap();
        let cold = tmp.path().join("cold");
        let args = self.archive_args(dir, &cold);
        let stage = format!(
            "after kompactor archive (days before {})",
            self.base.archive_day
        );
        self.run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), &stage);
        let served = self.serve(dir, &stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
        let what = format!("exactly the rows from {} on", self.base.archive_day);
        served.assert_same(&self.ctx(&stage), &what, &self.base.from_day, served.all());

        let stage = "after kompactor restore";
        let hosts = self.hosts();
        let restore = [
            "restore",
            cold.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--hosts",
            &hosts,
        ];
        self.run_ok(&restore, stage);
        let served = self.serve(dir, stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
        served.assert_same(&self.ctx(stage), "as before", &self.base.all, served.all());
    }

    /// After a crash: each node's server refuses to start with the guard file in place, or
    /// answers exactly one of `allowed` (named).
    fn assert_safe_to_serve(&self, dir: &Path, stage: &str, allowed: &[(&str, &Answers)]) {
        let ctx = self.ctx(stage);
        let opts = self.serve_opts(Some(LARGE_FILE_LIMIT), false);
        for node in self.f.nodes() {
            let guarded = dir.join(&node).join("snapshots").join(GUARD).exists();
            let log = self.logs.next(stage, &node);
            let s = match Server::start(&self.bin, dir, &node, &opts, &log) {
                Err(StartError::Exited { .. }) if guarded => continue,
                Err(e) => {
                    panic!("{ctx}: {node}: the server did not start (guard file: {guarded}): {e}")
                }
                Ok(s) => s,
            };
            let got = node_answers(&s, &ctx, &[Rows::All]).remove(0);
            s.stop();
            let diffs: Vec<String> = allowed
                .iter()
                .filter_map(|(name, a)| {
                    difference(&on_node(a, &node), &got).map(|d| format!("not {name}: {d}"))
                })
                .collect();
            assert!(
                diffs.len() < allowed.len(),
                "{ctx}: {node}: the server started (guard file: {guarded}) and answers neither as before nor as after:\n{}\n{}",
                diffs.join("\n"),
                log_tail(&log, 20)
            );
        }
    }

    /// A compaction crashed at each failpoint: the server is safe on what is left, and after
    /// the next run (which recovers, then compacts) answers as before under the default limit.
    fn crash_during_compaction(&self) {
        let args = DAILY_ALL;
        for fp in COMPACTION_FAILPOINTS {
            let copy = copy_fixture(&self.f);
            let dir = copy.path();
            let stage = format!("kompactor {} crashed at {fp}", args.join(" "));
            self.crash(&self.compaction_args(dir, args), fp, &stage);
            self.assert_safe_to_serve(dir, &stage, &[("as before", &self.base.all)]);
            let stage = format!("{stage}, recovered");
            self.kompactor(dir, args, &stage);
            self.verify(dir, &stage);
            self.assert_serves_base(dir, &stage);
        }
    }

    /// An undo crashed at each of its failpoints: safe to serve; recovered, the original files.
    fn crash_during_undo(&self) {
        let args = TEN_MINUTES_ALL;
        for fp in UNDO_FAILPOINTS {
            let copy = copy_fixture(&self.f);
            let dir = copy.path();
            self.kompactor(dir, args, "compaction before undo");
            let d = dir.to_str().unwrap().to_string();
            let undo = ["undo".to_string(), d.clone(), "--run".into(), last_run(dir)];
            let stage = format!("undo crashed at {fp}");
            self.crash(&undo, fp, &stage);
            self.assert_safe_to_serve(dir, &stage, &[("as before", &self.base.all)]);
            let stage = format!("{stage}, recovered");
            self.recover(dir, &stage);
            self.assert_serves_original_files(dir, &stage);
        }
    }

    /// An archive crashed at each of its failpoints: safe to serve (as before, or only the
    /// rows from the cutoff's day on); recovered and archived again, only those rows.
    fn crash_during_archive(&self) {
        for fp in ARCHIVE_FAILPOINTS {
            let copy = copy_fixture(&self.f);
            let dir = copy.path();
            let tmp = tempfile::tempdir().unwrap();
            let args = self.archive_args(dir, &tmp.path().join("cold"));
            let stage = format!("archive crashed at {fp}");
            self.crash(&args, fp, &stage);
            let allowed = [
                ("as before", &self.base.all),
                ("as after", &self.base.from_day),
            ];
            self.assert_safe_to_serve(dir, &stage, &allowed);
            let stage = format!("{stage}, recovered and archived again");
            let out = kompactor(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                out.status.success() || text(&out).contains("selects nothing"),
                "{}: {}",
                self.ctx(&stage),
                text(&out)
            );
            let served = self.serve(dir, &stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
            let what = format!("exactly the rows from {} on", self.base.archive_day);
            served.assert_same(&self.ctx(&stage), &what, &self.base.from_day, served.all());
        }
    }

    /// Every kind of delete on a copy of the fixture whose WAL the server persisted first:
    /// afterwards the server answers exactly as it answered before for the rows the delete
    /// keeps (the untouched copy served with `WHERE (condition) IS NOT TRUE`); the dry run
    /// changes nothing and counts what the run deletes; `undo` brings every answer back; a
    /// crash at each of the delete's failpoints leaves the node answering as before or as
    /// after, and so does the next run; a point far in the future goes, and nothing else.
    fn deletes(&self) {
        let persisted = tempfile::tempdir().unwrap();
        self.persisted_copy(persisted.path());
        let cases = self.delete_cases();
        let selections: Vec<Rows> = [Rows::All]
            .into_iter()
            .chain(cases.iter().map(|c| Rows::Except(&c.table, &c.cond)))
            .collect();
        let copy = copy_dir_of(persisted.path());
        let served = self.serve(
            copy.path(),
            "before the deletes",
            Some(LARGE_FILE_LIMIT),
            &selections,
        );
        let answers = served.answers;
        let before = &answers[0];
        for (c, after) in cases.iter().zip(&answers[1..]) {
            let stage = format!("delete {}", c.what);
            let dir = copy_dir_of(persisted.path());
            let listing_before = listing(dir.path());
            let dry = self.delete(dir.path(), &c.args, true, &stage);
            assert_eq!(
                listing(dir.path()),
                listing_before,
                "{}: the dry run changed the data dir",
                self.ctx(&stage)
            );
            let run = self.delete(dir.path(), &c.args, false, &stage);
            assert_dry_run_counted_the_delete(&dry, &run, &self.ctx(&stage));
            let served = self.serve(dir.path(), &stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
            served.assert_same(
                &self.ctx(&stage),
                "as before for the rows kept",
                after,
                served.all(),
            );
            self.verify(dir.path(), &stage);
            let stage = format!("{stage}, undone");
            let run_id = run["run_id"].as_str().unwrap();
            self.run_ok(
                &["undo", dir.path().to_str().unwrap(), "--run", run_id],
                &stage,
            );
            let served = self.serve(dir.path(), &stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
            served.assert_same(&self.ctx(&stage), "as before", before, served.all());
        }
        // One host: every window keeps rows, so each failpoint (the write included) is met.
        let first = &cases[1];
        // A delete merges without the workers' failpoint; the others it meets.
        for fp in COMPACTION_FAILPOINTS
            .iter()
            .filter(|fp| **fp != "after-merge-group")
        {
            let dir = copy_dir_of(persisted.path());
            let stage = format!("delete {} crashed at {fp}", first.what);
            let mut args = self.delete_args(dir.path(), &first.args);
            args.push("-q".into());
            self.crash(&args, fp, &stage);
            let allowed = [("as before", before), ("as after", &answers[2])];
            self.assert_safe_to_serve(dir.path(), &stage, &allowed);
            let stage = format!("{stage}, recovered");
            self.recover(dir.path(), &stage);
            self.assert_safe_to_serve(dir.path(), &stage, &allowed);
        }
        self.delete_far_future_point(persisted.path(), before);
    }

    /// A copy of the fixture at `dir` whose WAL the server persisted: started with snapshots
    /// forced until a snapshot newer than the fixture's appears, then stopped.
    fn persisted_copy(&self, dir: &Path) {
        for node in self.f.nodes() {
            let st = Command::new("cp")
                .arg("-a")
                .arg(self.f.dir.join(&node))
                .arg(dir)
                .status()
                .unwrap();
            assert!(st.success());
            let snapshots = || {
                std::fs::read_dir(dir.join(&node).join("snapshots"))
                    .unwrap()
                    .count()
            };
            let n = snapshots();
            let s = self.start(
                dir,
                &node,
                "persisting the WAL",
                &self.serve_opts(Some(LARGE_FILE_LIMIT), true),
            );
            let deadline = Instant::now() + PERSIST_TIMEOUT;
            while snapshots() <= n {
                assert!(
                    Instant::now() < deadline,
                    "{}: the WAL was not persisted\n{}",
                    self.f.name,
                    s.log_tail(20)
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            s.stop();
        }
    }

    /// `kompactor delete` on every node of `dir` with `sel`, as a command line.
    fn delete_args(&self, dir: &Path, sel: &[String]) -> Vec<String> {
        ["delete", dir.to_str().unwrap(), "--hosts", &self.hosts()]
            .into_iter()
            .map(String::from)
            .chain(sel.iter().cloned())
            .collect()
    }

    /// Runs a delete (`dry`: a dry run) and returns its JSON document.
    fn delete(&self, dir: &Path, sel: &[String], dry: bool, stage: &str) -> Value {
        let mut args = self.delete_args(dir, sel);
        args.push("--json".into());
        if dry {
            args.push("--dry-run".into());
        }
        let out = kompactor(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}: kompactor {args:?}:\n{}",
            self.ctx(stage),
            text(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The deletes tried on `metrics.cpu`: a time range, one host, a field condition, and one
    /// overwritten point (both its versions must go). Each with the condition the server
    /// evaluates for the rows that must stay.
    fn delete_cases(&self) -> Vec<DeleteCase> {
        let node = self.f.nodes()[0].clone();
        let names = table_names(&self.f, &node);
        let (key, _) = names
            .iter()
            .find(|(_, (db, t))| db == "metrics" && t == "cpu")
            .expect("the fixture has metrics.cpu");
        let table = TableRef {
            node,
            db: "metrics".into(),
            table: "cpu".into(),
        };
        let ids = |mut v: Vec<String>| {
            v.extend(
                [
                    "--database",
                    &key.db.to_string(),
                    "--table",
                    &key.table.to_string(),
                ]
                .map(String::from),
            );
            v
        };
        let day = &day_after_first(&self.f)[..10];
        let (lo, hi) = (format!("{day}T06:00:00Z"), format!("{day}T12:00:00Z"));
        let (time, _, cond) = first_invisible_overwrite(&self.f);
        let inv = (time, cond);
        vec![
            DeleteCase {
                what: "of six hours".into(),
                args: ids(vec![
                    "--min-time".into(),
                    lo.clone(),
                    "--max-time".into(),
                    hi.clone(),
                ]),
                cond: format!("time >= '{}' AND time < '{}'", &lo[..19], &hi[..19]),
                table: table.clone(),
            },
            DeleteCase {
                what: "of one host".into(),
                args: ids(vec![
                    "--all-time".into(),
                    "--where".into(),
                    "host = 'h2'".into(),
                ]),
                cond: "host = 'h2'".into(),
                table: table.clone(),
            },
            DeleteCase {
                what: "by a field's value".into(),
                args: ids(vec![
                    "--all-time".into(),
                    "--where".into(),
                    "usage_user > 80".into(),
                ]),
                cond: "usage_user > 80".into(),
                table: table.clone(),
            },
            DeleteCase {
                what: "of an overwritten point".into(),
                args: ids(vec![
                    "--min-time".into(),
                    inv.0.to_string(),
                    "--max-time".into(),
                    (inv.0 + 1).to_string(),
                    "--where".into(),
                    inv.1.clone(),
                ]),
                cond: format!("CAST(time AS BIGINT) = {} AND {}", inv.0, inv.1),
                table,
            },
        ]
    }

    /// A point written at 2099 to every node, then deleted: exactly the answers before.
    fn delete_far_future_point(&self, persisted: &Path, before: &Answers) {
        let dir = copy_dir_of(persisted);
        let t = 4_070_908_800_000_000_000i64; // 2099-01-01T00:00:00Z
        let opts = self.serve_opts(Some(LARGE_FILE_LIMIT), true);
        for node in self.f.nodes() {
            let s = self.start(dir.path(), &node, "a point in 2099", &opts);
            s.write_lp(
                "metrics",
                &format!("cpu,cpu=cpu0,host=clockless usage_user=1.5 {t}"),
            )
            .unwrap();
            let deadline = Instant::now() + PERSIST_TIMEOUT;
            loop {
                let rows = s
                    .query("metrics", "SELECT CAST(max(max_time) AS BIGINT) AS m FROM system.parquet_files WHERE table_name = 'cpu'")
                    .unwrap();
                if rows[0]["m"].as_i64().is_some_and(|m| m >= t) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: the 2099 point was not persisted",
                    self.f.name
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            s.stop();
        }
        let key = {
            let node = self.f.nodes()[0].clone();
            let names = table_names(&self.f, &node);
            *names
                .iter()
                .find(|(_, (db, t))| db == "metrics" && t == "cpu")
                .unwrap()
                .0
        };
        let sel: Vec<String> = [
            "--database",
            &key.db.to_string(),
            "--table",
            &key.table.to_string(),
            "--min-time",
            "2099-01-01T00:00:00Z",
        ]
        .map(String::from)
        .to_vec();
        let stage = "delete of a point in 2099";
        let run = self.delete(dir.path(), &sel, false, stage);
        assert_eq!(
            run["nodes"][0]["rows_deleted"],
            1,
            "{}: {run}",
            self.ctx(stage)
        );
        let served = self.serve(dir.path(), stage, Some(LARGE_FILE_LIMIT), &[Rows::All]);
        served.assert_same(&self.ctx(stage), "as before", before, served.all());
    }

    /// Runs kompactor with `args` and failpoint `fp`; it must stop there.
    fn crash(&self, args: &[String], fp: &str, stage: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_kompactor"))
            .args(args)
            .env("KOMPACTOR_FAILPOINT", fp)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            !out.status.success() && text(&out).contains(&format!("failpoint {fp}")),
            "{}: kompactor {args:?} did not stop at the failpoint ({}):\n{}",
            self.ctx(stage),
            out.status,
            text(&out)
        );
    }

    /// Lets kompactor finish what a crash left (any invocation recovers first); compacts
    /// nothing new.
    fn recover(&self, dir: &Path, stage: &str) {
        self.kompactor(dir, &["--min-age", "100000d"], stage);
    }

    /// Serves `dir` under the default limit: the original answers for the original rows, and
    /// exactly the `written` rows more.
    fn assert_serves_base_and(&self, dir: &Path, stage: &str, written: &Written) {
        let ctx = self.ctx(stage);
        let served = self.serve(dir, stage, None, &[Rows::All, Rows::UpTo(&written.old_max)]);
        let [all, old]: [&Answers; 2] = [&served.answers[0], &served.answers[1]];
        served.assert_same(&ctx, "as before for the rows it had", &self.base.all, old);
        for (t, base) in &self.base.all {
            let (n, newest) = written.points[t];
            let a = &all[t];
            assert_eq!(
                a.count(),
                base.count() + n,
                "{ctx}: {t}: count(*) after writing {n} new points"
            );
            assert_eq!(
                a.max_time_ns(),
                newest,
                "{ctx}: {t}: max(time) after new points"
            );
        }
        self.note_files(stage, all);
    }

    /// Writes a few points newer than any data to every table of every node (on a server that
    /// snapshots at once), waits until they are in Parquet files, and stops the server.
    fn write_new_points(&self, dir: &Path, stage: &str) -> Written {
        self.write_new_points_while(dir, stage, &|| {})
    }

    /// Like `write_new_points`, with `meanwhile` run on each node while its server runs,
    /// after the writes and before the new points are known to be persisted.
    fn write_new_points_while(&self, dir: &Path, stage: &str, meanwhile: &dyn Fn()) -> Written {
        let mut written = Written::default();
        for node in self.f.nodes() {
            let s = self.start(dir, &node, stage, &self.serve_opts(None, true));
            let mut by_db: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (t, a) in self.base.all.iter().filter(|(t, _)| t.node == node) {
                let (lines, newest) = new_points(t, a);
                written
                    .points
                    .insert(t.clone(), (lines.len() as i64, newest));
                written.old_max.insert(
                    t.clone(),
                    a.scalars["count.max_time"].as_str().unwrap().to_string(),
                );
                by_db.entry(&t.db).or_default().extend(lines);
            }
            for (db, lines) in by_db {
                s.write_lp(db, &lines.join("\n")).unwrap_or_else(|e| {
                    panic!(
                        "{}: {node}: writing to {db}: {e}\n{}",
                        self.ctx(stage),
                        s.log_tail(30)
                    )
                });
            }
            meanwhile();
            self.wait_persisted(&s, &written, stage);
            s.stop();
        }
        written
    }

    /// Waits until the server lists, for every table of its node, a Parquet file holding the
    /// newest point written.
    fn wait_persisted(&self, s: &Server, written: &Written, stage: &str) {
        let deadline = Instant::now() + PERSIST_TIMEOUT;
        for (t, (_, newest)) in written.points.iter().filter(|(t, _)| t.node == s.node) {
            let sql = format!(
                "SELECT CAST(max(max_time) AS BIGINT) AS m FROM system.parquet_files WHERE table_name = {}",
                literal(&t.table)
            );
            loop {
                let rows = query(s, &self.ctx(stage), t, &sql);
                if rows[0]["m"].as_i64().is_some_and(|m| m >= *newest) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: {t}: the new points were not persisted within {PERSIST_TIMEOUT:?}\n{}",
                    self.ctx(stage),
                    s.log_tail(30)
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// Records that the test ran to its end: one line in `$KOMPACTOR_TEST_MARKER`.
    fn passed(&self) {
        common::server::passed(
            self.test,
            &format!(
                "{} served {} times in {:.0?}",
                self.f.name,
                self.logs.starts(),
                self.started.elapsed()
            ),
        );
    }
}

/// One delete tried: its selection as kompactor's arguments, and the condition (in the
/// server's SQL) that holds for the rows it deletes.
struct DeleteCase {
    what: String,
    table: TableRef,
    args: Vec<String>,
    cond: String,
}

/// A copy of the node directories under `from`, mtimes kept.
fn copy_dir_of(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let st = Command::new("cp")
            .arg("-a")
            .arg(e.path())
            .arg(to.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
    to
}

/// The points written after compaction.
#[derive(Default)]
struct Written {
    /// Per table: how many points, and the newest one's time (ns).
    points: BTreeMap<TableRef, (i64, i64)>,
    /// Per table: its newest time before the writes, as the server renders it.
    old_max: BTreeMap<TableRef, String>,
}

/// The server's answers recorded with the fixture, WAL tail included (`expected/summary.json`;
/// `Fixture::summary` is the Parquet-only `expected/persisted/summary.json`).
fn full_summary(f: &Fixture) -> Value {
    read_json(&f.dir.join("expected/summary.json"))
}

/// The day after the fixture's first day (from `expected/summary.json`), as
/// `YYYY-MM-DDT00:00:00`: the first day an archive with a cutoff inside it keeps.
fn day_after_first(f: &Fixture) -> String {
    let next = midnight_after_first_point(&full_summary(f), None);
    let t = chrono::DateTime::from_timestamp(next / 1_000_000_000, 0).unwrap();
    t.format("%Y-%m-%dT00:00:00").to_string()
}

/// The id of the data dir's newest kompactor run.
fn last_run(dir: &Path) -> String {
    let mut runs: Vec<String> = std::fs::read_dir(dir.join(".kompactor/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    runs.pop().expect("a run")
}

// ---------------------------------------------------------------------------------------------
// New points

/// Three points for table `t`, after its newest: one in the series of its last row, two in a
/// new series; and the newest time written.
fn new_points(t: &TableRef, a: &TableAnswers) -> (Vec<String>, i64) {
    let max = a.max_time_ns();
    let second = 1_000_000_000;
    let (field, ty) = a.columns.fields.first().expect("a field");
    let value = field_value(ty);
    let last = a.dump.last().expect("a row");
    let existing: Vec<(String, String)> = a
        .columns
        .tags
        .iter()
        .filter_map(|k| {
            last.get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(|v| (k.clone(), v.to_string()))
        })
        .collect();
    let fresh = vec![(
        a.columns.tags[0].clone(),
        "kompactor-new-series".to_string(),
    )];
    let line = |tags: &[(String, String)], time: i64| {
        let tags: String = tags
            .iter()
            .map(|(k, v)| format!(",{}={}", lp_escape(k), lp_escape(v)))
            .collect();
        format!(
            "{}{tags} {}={value} {time}",
            lp_escape(&t.table),
            lp_escape(field)
        )
    };
    let lines = vec![
        line(&existing, max + second),
        line(&fresh, max + second),
        line(&fresh, max + 2 * second),
    ];
    (lines, max + 2 * second)
}

/// A line-protocol value of the given Arrow type.
fn field_value(ty: &str) -> &'static str {
    match ty {
        "Float64" => "0.5",
        "Int64" => "7i",
        "UInt64" => "7u",
        "Boolean" => "true",
        _ => "\"new\"",
    }
}

/// A measurement, tag key, tag value or field key escaped for line protocol.
fn lp_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
