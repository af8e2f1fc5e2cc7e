//! Helpers shared by the integration tests: fixtures, running the binary, and reading a data
//! dir back through its metadata the way the server does.
#![allow(dead_code)]

pub mod lab;
pub mod prereq;
pub mod server;

use duckdb::types::{TimeUnit, Value as Db};
use kompactor::format::ids::TableKey;
use kompactor::format::layout::list_nodes;
use kompactor::format::parquet::{read_footers, sql_ident, sql_str, ColumnType};
use kompactor::pipeline::discover::discover_node_with;
use kompactor::pipeline::merge::TableSchema;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fixture: a data dir written by a real server, with its `expected/` answers.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    pub dir: PathBuf,
}

impl Fixture {
    pub fn nodes(&self) -> Vec<String> {
        list_nodes(&self.dir).unwrap()
    }
    pub fn summary(&self) -> Value {
        read_json(&self.dir.join("expected/persisted/summary.json"))
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture under the repo's `fixtures/<release>/<name>/` (tests never read outside the repo).
pub fn fixtures() -> Vec<Fixture> {
    let root = repo().join("fixtures");
    let mut out = Vec::new();
    let mut releases: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    releases.sort();
    for rel in releases {
        let mut names: Vec<_> = std::fs::read_dir(&rel)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for dir in names.into_iter().filter(|p| p.join("expected").is_dir()) {
            let name = format!(
                "{}/{}",
                rel.file_name().unwrap().to_string_lossy(),
                dir.file_name().unwrap().to_string_lossy()
            );
            out.push(Fixture { name, dir });
        }
    }
    assert!(
        !out.is_empty(),
        "no fixtures found under {}",
        root.display()
    );
    out
}

/// The fixture whose name ends with `name` (e.g. "3.10/small").
pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name.ends_with(name))
        .unwrap_or_else(|| panic!("no fixture named *{name}"))
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Copies a fixture's node dirs (mtimes kept) into a new temporary data dir.
pub fn copy_fixture(f: &Fixture) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for n in f.nodes() {
        let st = Command::new("cp")
            .arg("-a")
            .arg(f.dir.join(&n))
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
    tmp
}

/// Runs the kompactor binary.
pub fn kompactor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file and directory under `dir` with its sha256 (files) and mtime.
pub fn listing(dir: &Path) -> BTreeMap<String, (String, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        let hash = if md.is_file() {
            format!("{:x}", Sha256::digest(std::fs::read(e.path()).unwrap()))
        } else {
            "dir".into()
        };
        out.insert(
            e.path().strip_prefix(dir).unwrap().display().to_string(),
            (hash, md.modified().unwrap()),
        );
    }
    out
}

/// `(db_id, table_id)` → `(db name, table name)` from the fixture's expected summary.
pub fn table_names(f: &Fixture, node: &str) -> BTreeMap<TableKey, (String, String)> {
    let s = f.summary();
    let mut out = BTreeMap::new();
    for (db, tables) in s["answers"][node].as_object().unwrap() {
        for (table, a) in tables.as_object().unwrap() {
            let ids = &a["ids"];
            let id = |v: &Value| {
                v.as_str()
                    .unwrap()
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            };
            let key = TableKey {
                db: kompactor::format::ids::DbId(id(&ids["db_id"])),
                table: kompactor::format::ids::TableId(id(&ids["table_id"])),
            };
            out.insert(key, (db.clone(), table.clone()));
        }
    }
    out
}

/// The server's per-table file count in `expected/persisted/summary.json`.
pub fn expected_files(f: &Fixture, node: &str, db: &str, table: &str) -> u64 {
    f.summary()["answers"][node][db][table]["files"]["row"]["n"]
        .as_u64()
        .unwrap()
}

fn render_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nsec = ns.rem_euclid(1_000_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(secs, nsec).unwrap();
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nsec == 0 {
        base
    } else if nsec.is_multiple_of(1_000_000) {
        format!("{base}.{:03}", nsec / 1_000_000)
    } else if nsec.is_multiple_of(1_000) {
        format!("{base}.{:06}", nsec / 1_000)
    } else {
        format!("{base}.{nsec:09}")
    }
}

/// A cell rendered so that equal values compare equal whatever their JSON spelling.
fn canon_json(ty: ColumnType, v: &Value) -> String {
    match ty {
        ColumnType::Float => format!("{:?}", v.as_f64().unwrap()),
        ColumnType::Integer => format!("{}", v.as_i64().unwrap()),
        ColumnType::UInteger => format!("{}", v.as_u64().unwrap()),
        ColumnType::Boolean => format!("{}", v.as_bool().unwrap()),
        ColumnType::Tag | ColumnType::String | ColumnType::Time => {
            format!("{:?}", v.as_str().unwrap())
        }
    }
}

fn canon_db(v: &Db) -> Option<String> {
    Some(match v {
        Db::Null => return None,
        Db::Double(f) => format!("{f:?}"),
        Db::BigInt(i) => format!("{i}"),
        Db::UBigInt(u) => format!("{u}"),
        Db::Boolean(b) => format!("{b}"),
        Db::Text(s) => format!("{s:?}"),
        Db::Timestamp(TimeUnit::Nanosecond, ns) => format!("{:?}", render_time(*ns)),
        other => panic!("unexpected value {other:?}"),
    })
}

/// The rows of each table as the server would answer `SELECT *`, from the live files of the
/// metadata, deduplicated by the server's rule: per (series key, time) among files of one
/// chunk_time, each column takes the last non-null value, the file with the smallest
/// `min_time` being the latest, and of equal ones the later in the server's list. Rows are
/// canonical strings, sorted.
pub fn read_through_metadata(
    data_dir: &Path,
    node: &str,
) -> BTreeMap<TableKey, (Vec<String>, BTreeMap<String, ColumnType>)> {
    read_through_metadata_with(data_dir, node, None)
}

/// Like `read_through_metadata`, for a server that loads `load_window` snapshots.
pub fn read_through_metadata_with(
    data_dir: &Path,
    node: &str,
    load_window: Option<usize>,
) -> BTreeMap<TableKey, (Vec<String>, BTreeMap<String, ColumnType>)> {
    let n = discover_node_with(data_dir, node, load_window).unwrap();
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let mut out = BTreeMap::new();
    for (key, files) in &n.live {
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.under(data_dir)).collect();
        let footers = read_footers(&paths).unwrap();
        let pairs: Vec<(
            kompactor::format::ids::FileId,
            &kompactor::format::parquet::Footer,
        )> = files.iter().map(|f| f.id).zip(footers.iter()).collect();
        let schema = TableSchema::union(&pairs).unwrap();
        // Rank: within a chunk_time, larger min_time first, then the server's list order;
        // the last one wins.
        let mut ranked: Vec<_> = files.iter().collect();
        ranked.sort_by(|a, b| {
            b.min_time
                .cmp(&a.min_time)
                .then(n.load_pos.get(a.id).cmp(&n.load_pos.get(b.id)))
        });
        conn.execute_batch(
            "CREATE OR REPLACE TEMP TABLE ranks (f VARCHAR, r BIGINT, chunk BIGINT)",
        )
        .unwrap();
        {
            let mut app = conn.appender("ranks").unwrap();
            for (i, f) in ranked.iter().enumerate() {
                let p = f.path.under(data_dir).to_string_lossy().into_owned();
                app.append_row(duckdb::params![p, i as i64, f.chunk_time.0])
                    .unwrap();
            }
        }
        let list: Vec<String> = paths
            .iter()
            .map(|p| sql_str(&p.to_string_lossy()))
            .collect();
        let keys: Vec<String> = schema
            .series_key
            .iter()
            .map(|k| sql_ident(k))
            .chain([sql_ident("time"), "chunk".to_string()])
            .collect();
        let select: Vec<String> = schema
            .columns
            .iter()
            .map(|c| {
                let id = sql_ident(&c.name);
                if c.ty == ColumnType::Tag || c.ty == ColumnType::Time {
                    id
                } else {
                    format!("arg_max({id}, r) FILTER (WHERE {id} IS NOT NULL) AS {id}")
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM (SELECT * FROM read_parquet([{}], union_by_name = true, filename = true) s JOIN ranks ON s.filename = ranks.f) GROUP BY {}",
            select.join(", "),
            list.join(", "),
            keys.join(", ")
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut lines = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let mut cells = Vec::new();
            for (i, c) in schema.columns.iter().enumerate() {
                let v: Db = r.get(i).unwrap();
                if let Some(s) = canon_db(&v) {
                    cells.push((c.name.clone(), s));
                }
            }
            cells.sort();
            lines.push(
                cells
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        lines.sort();
        let types = schema
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect();
        out.insert(*key, (lines, types));
    }
    out
}

/// The expected dump of one table, canonicalised like `read_through_metadata`.
pub fn expected_rows(
    f: &Fixture,
    node: &str,
    db: &str,
    table: &str,
    types: &BTreeMap<String, ColumnType>,
) -> Vec<String> {
    expected_rows_where(f, node, db, table, types, &|_| true)
}

/// The expected rows whose server-rendered `time` (`YYYY-MM-DDTHH:MM:SS...`) `keep` accepts.
pub fn expected_rows_where(
    f: &Fixture,
    node: &str,
    db: &str,
    table: &str,
    types: &BTreeMap<String, ColumnType>,
    keep: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let p = f
        .dir
        .join("expected/persisted")
        .join(node)
        .join(format!("{db}.{table}.jsonl"));
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| keep(v["time"].as_str().unwrap()))
        .map(|v| {
            let mut cells: Vec<(String, String)> = v
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| {
                    (
                        k.clone(),
                        canon_json(
                            *types
                                .get(k)
                                .unwrap_or_else(|| panic!("{p:?}: unknown column {k}")),
                            x,
                        ),
                    )
                })
                .collect();
            cells.sort();
            cells
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    lines.sort();
    lines
}

/// Checks that the data dir answers exactly the fixture's persisted dumps, table by table.
pub fn assert_answers_match(f: &Fixture, data_dir: &Path) {
    assert_answers_match_where(f, data_dir, &|_| true)
}

/// Like `assert_answers_match`, for the expected rows whose time `keep` accepts.
pub fn assert_answers_match_where(f: &Fixture, data_dir: &Path, keep: &dyn Fn(&str) -> bool) {
    for node in f.nodes() {
        let names = table_names(f, &node);
        let got = read_through_metadata(data_dir, &node);
        assert_eq!(got.len(), names.len(), "{}: {node}: table count", f.name);
        for (key, (rows, types)) in got {
            let (db, table) = &names[&key];
            let want = expected_rows_where(f, &node, db, table, &types, keep);
            if rows != want {
                let missing: Vec<_> = want.iter().filter(|w| !rows.contains(w)).take(3).collect();
                let extra: Vec<_> = rows.iter().filter(|r| !want.contains(r)).take(3).collect();
                panic!(
                    "{}: {node} {db}.{table}: {} rows read back, {} expected\nmissing: {missing:#?}\nextra: {extra:#?}",
                    f.name,
                    rows.len(),
                    want.len()
                );
            }
        }
    }
}

/// The rows a SQL query returns, canonicalised like `read_through_metadata` (NULLs left out),
/// sorted; columns named in `skip` are left out.
pub fn query_rows(conn: &duckdb::Connection, sql: &str, skip: &[&str]) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let mut rows = stmt.query([]).unwrap();
    let names: Vec<String> = rows
        .as_ref()
        .unwrap()
        .column_names()
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let mut cells = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if skip.contains(&n.as_str()) {
                continue;
            }
            let v: Db = r.get(i).unwrap();
            if let Some(s) = canon_db(&v) {
                cells.push((n.clone(), s));
            }
        }
        cells.sort();
        out.push(
            cells
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    out.sort();
    out
}

/// A process outside kompactor's own process family (detached, so not a sibling of the
/// kompactor the test starts) that keeps a file open, as a running server would; killed on
/// drop, which returns only once the file is closed.
pub struct Holder {
    pid: u32,
    path: PathBuf,
}

/// Whether process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        })
        .unwrap_or(false)
}

/// Waits up to 10 s until `pid` has `path` open (`open`) or no longer has it open.
fn wait_until(pid: u32, path: &Path, open: bool) {
    for _ in 0..500 {
        if has_open(pid, path) == open {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "pid {pid} never {} {}",
        if open { "opened" } else { "closed" },
        path.display()
    );
}

/// Starts a [`Holder`] of `path` and waits until it has the file open.
pub fn hold_open(path: &Path) -> Holder {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "perl -e 'open(my $f, \"<\", \"{}\") or die; sleep 120' </dev/null >/dev/null 2>&1 & echo $!",
            path.display()
        ))
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let holder = Holder {
        pid,
        path: path.to_path_buf(),
    };
    wait_until(pid, path, true);
    holder
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .status();
        // `kill` returns before the process is gone: a check of open files right after it
        // can still see the file open.
        if !std::thread::panicking() {
            wait_until(self.pid, &self.path, false);
        }
    }
}

/// The index files of a node's table index, `db-indices/<db>/<table>/index.info.json`.
pub fn index_files(dir: &Path, node: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = walkdir::WalkDir::new(dir.join(node).join("db-indices"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "index.info.json")
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// Deletes, as the server's table-index purge does, every file of the tables `pick` selects
/// (by `db_id/table_id`) for which `expired` holds: the Parquet file is removed and the index
/// rewritten without it, its totals recomputed. Returns the paths deleted.
pub fn purge(
    dir: &Path,
    node: &str,
    pick: &dyn Fn(&str) -> bool,
    expired: &dyn Fn(&Value) -> bool,
) -> Vec<String> {
    let mut deleted = Vec::new();
    for p in index_files(dir, node) {
        let mut doc: Value = read_json(&p);
        let key = format!("{}/{}", doc["db_id"], doc["table_id"]);
        if !pick(&key) {
            continue;
        }
        let files = doc["files"].as_array().unwrap().clone();
        let (gone, kept): (Vec<Value>, Vec<Value>) = files.into_iter().partition(|f| expired(f));
        for f in &gone {
            let path = f["path"].as_str().unwrap();
            std::fs::remove_file(dir.join(path)).unwrap();
            deleted.push(path.to_string());
        }
        let sum = |k: &str| kept.iter().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
        let times = |k: &'static str| kept.iter().map(move |f| f[k].as_i64().unwrap());
        doc["parquet_size_bytes"] = sum("size_bytes").into();
        doc["row_count"] = sum("row_count").into();
        doc["min_time"] = times("min_time").min().unwrap_or(i64::MAX).into();
        doc["max_time"] = times("max_time").max().unwrap_or(i64::MIN).into();
        doc["files"] = Value::Array(kept);
        std::fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
    deleted
}

/// Node files (not kompactor's own) with content hash and mtime.
pub fn node_files(dir: &Path) -> Vec<(String, (String, std::time::SystemTime))> {
    listing(dir)
        .into_iter()
        .filter(|(k, (h, _))| !k.starts_with(".kompactor") && h != "dir")
        .collect()
}

/// Every failpoint a compaction passes, in order: the first while merging, the rest in the
/// commit.
pub const COMPACTION_FAILPOINTS: &[&str] = &[
    "write-output",
    "after-merge-group",
    "after-staged",
    "after-guard",
    "after-output-moved",
    "after-commit-point",
    "after-metadata-write",
    "after-set-aside",
    "after-trash-move",
    "after-guard-removed",
];

/// Failpoints met by `archive` (its own, then those of the commit it shares with compaction).
pub const ARCHIVE_FAILPOINTS: &[&str] = &[
    "after-archive-window",
    "after-archive-manifest",
    "after-guard",
    "after-commit-point",
    "after-metadata-write",
    "after-trash-move",
];

/// Nanoseconds of the UTC midnight after the earliest point a fixture summary records (of
/// `node`, or of every node): a cut that leaves data on both sides.
pub fn midnight_after_first_point(summary: &Value, node: Option<&str>) -> i64 {
    let nodes = summary["answers"].as_object().unwrap();
    let first = nodes
        .iter()
        .filter(|(n, _)| node.is_none_or(|want| want == n.as_str()))
        .flat_map(|(_, dbs)| dbs.as_object().unwrap().values())
        .flat_map(|tables| tables.as_object().unwrap().values())
        .map(|a| a["count"]["row"]["min_time_ns"].as_i64().unwrap())
        .min()
        .unwrap();
    let day = 86_400_000_000_000i64;
    first - first.rem_euclid(day) + day
}

/// The first overwrite of `metrics.cpu` in a fixture that the server does not show (its
/// original stays visible: `overwrites.json` category `inv`): its time, its tags, and the
/// condition on them as SQL (`cpu = 'cpu1' AND host = 'h4' ...`).
pub fn first_invisible_overwrite(f: &Fixture) -> (i64, serde_json::Map<String, Value>, String) {
    let o = read_json(&f.dir.join("expected/overwrites.json"));
    let list = o
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_array()
        .unwrap();
    let p = list
        .iter()
        .find(|p| p["cat"] == "inv" && p["table"] == "cpu")
        .expect("an invisible overwrite of cpu");
    let tags = p["tags"].as_object().unwrap().clone();
    let cond: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{k} = '{}'", v.as_str().unwrap()))
        .collect();
    (p["time_ns"].as_i64().unwrap(), tags, cond.join(" AND "))
}

/// Checks that a delete's dry run (`dry`, its `--json` plan) counted, node by node, what the
/// run (`run`, its report) removed; the rows deleted over every node, which must be some.
pub fn assert_dry_run_counted_the_delete(dry: &Value, run: &Value, ctx: &str) -> u64 {
    let nodes = |doc: &Value| doc["nodes"].as_array().unwrap().clone();
    let (dry, run) = (nodes(dry), nodes(run));
    assert_eq!(
        dry.len(),
        run.len(),
        "{ctx}: nodes of the dry run and the run"
    );
    for (d, r) in dry.iter().zip(&run) {
        for k in ["rows_deleted", "versions_removed", "files_rewritten"] {
            assert_eq!(d[k], r[k], "{ctx}: {k}: the dry run and the run differ");
        }
    }
    let deleted = run
        .iter()
        .map(|n| n["rows_deleted"].as_u64().unwrap())
        .sum();
    assert!(deleted > 0, "{ctx}: nothing deleted: {run:?}");
    deleted
}
