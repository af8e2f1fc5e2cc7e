//! The server's precedence among versions of a point, with the real server in the loop.
//!
//! Nodes are written by a real InfluxDB 3 Core server (3.10 from `$INFLUXDB3_BIN`, 3.0.3 from
//! `$INFLUXDB3_BIN_3_0`), each write persisted in a snapshot of its own, and served before and
//! after kompactor; every answer must be the same:
//!
//! - `versions_*`: one point written in five snapshots with different fields, in files whose
//!   `min_time` is equal (the server orders those by its load order), and another whose files'
//!   `min_time` differs; on 3.10 across a checkpoint boundary (the first rounds in the
//!   checkpoint the server builds at its next start, the others in snapshots after it). Then
//!   the compacted node gets another round and is compacted again.
//! - `overwrite_after_wide_merge_3_10`: a fixture merged by day, then four of its points
//!   overwritten through the server (each stored under its own 10-minute chunk_time, so the
//!   server returns it twice); the next default run returns exactly what a node never
//!   compacted returns for the same writes.
//! - `rewritten_history_*`: a writer that rewrites the last two days on every round; the plan
//!   keeps those days in 10-minute windows, and after a compaction and one more round the node
//!   answers as the node never compacted does.
//! - `checkpoints_out_of_the_load_window_3_10`: a server that loads 100 snapshots does not read
//!   a checkpoint more than 100 snapshots old; kompactor finds live exactly the files the
//!   server lists.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const PERSIST_TIMEOUT: Duration = Duration::from_secs(180);

use common::lab::{assert_same, copy_dir, files_of, Lab, DAY, HOUR, MIN, T0};

/// Five rounds of versions of point `P` (window A, every file beginning at it) and point `Q`
/// (window B, one round's file beginning earlier), each round with other fields; and a point a
/// day later, so that both windows are older than `--min-age`.
fn version_rounds() -> Vec<String> {
    let p = T0 + MIN;
    let q = T0 + 12 * MIN;
    let later = T0 + DAY;
    vec![
        format!("p,host=a f1=1i,f2=10i {p}\np,host=a f1=1i {q}\np,host=now f1=0i {later}"),
        format!("p,host=a f1=2i {p}\np,host=a f2=20i,f3=200i {q}"),
        // Q's file begins a minute earlier (host b): it is the latest of window B.
        format!(
            "p,host=a f2=30i,f3=300i {p}\np,host=b f1=3i {}\np,host=a f1=3i {q}",
            q - MIN
        ),
        format!("p,host=a f3=400i {p}\np,host=a f2=40i {q}"),
        format!("p,host=a f1=5i {p}\np,host=a f3=500i,f1=5i {q}"),
    ]
}

fn versions(test: &'static str, v3_0: bool) {
    let Some(lab) = Lab::new(test, v3_0, &[]) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let rounds = version_rounds();
    // Two sessions: a 3.10 server builds checkpoints at its second start from the snapshots
    // of the first, so the last rounds come after the checkpoint.
    lab.write_rounds(base.path(), "rounds 1-2", "p", &rounds[..2]);
    lab.write_rounds(base.path(), "rounds 3-5", "p", &rounds[2..]);
    if !v3_0 {
        let cps = walkdir::WalkDir::new(base.path().join("node0/snapshot-checkpoints"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        assert!(cps > 0, "{test}: the node has no checkpoint to cross");
    }
    let before = lab.answers(base.path(), "before", "p", &["f1", "f2", "f3"]);
    for args in [
        &[][..],
        &["--window", "10m"][..],
        &["--window", "1d", "--min-age", "0", "--writer-reach", "0"][..],
    ] {
        let copy = copy_dir(base.path());
        let report = lab.kompactor(copy.path(), args);
        assert!(
            report["nodes"][0]["committed"].is_object(),
            "{test}: {args:?} merged nothing"
        );
        let stage = format!("after kompactor {args:?}");
        assert_same(
            test,
            &stage,
            &before,
            &lab.answers(copy.path(), &stage, "p", &["f1", "f2", "f3"]),
        );
    }
    // A node compacted before, then written to again, compacts to the same answers.
    let copy = copy_dir(base.path());
    lab.kompactor(copy.path(), &[]);
    let again = format!(
        "p,host=a f2=60i {}\np,host=a f1=6i {}",
        T0 + MIN,
        T0 + 12 * MIN
    );
    lab.write_rounds(copy.path(), "round 6", "p", &[again]);
    let written = lab.answers(copy.path(), "after round 6", "p", &["f1", "f2", "f3"]);
    lab.kompactor(copy.path(), &[]);
    assert_same(
        test,
        "compacted again",
        &written,
        &lab.answers(copy.path(), "compacted again", "p", &["f1", "f2", "f3"]),
    );
    lab.passed();
}

#[test]
fn versions_3_10() {
    versions("versions_3_10", false);
}

#[test]
fn versions_3_0_3() {
    versions("versions_3_0_3", true);
}

/// Rounds of a writer that writes each day's hourly points and rewrites the two days before
/// with its round number.
fn history_round(r: i64) -> String {
    let mut lines = Vec::new();
    for day in (r - 2).max(0)..=r {
        for h in 0..24 {
            lines.push(format!(
                "h,host=a f1={r}i,f2={}i {}",
                r * 100 + h,
                T0 + day * DAY + h * HOUR
            ));
        }
    }
    lines.join("\n")
}

fn rewritten_history(test: &'static str, v3_0: bool, flags: &[&str]) {
    let Some(lab) = Lab::new(test, v3_0, flags) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let rounds: Vec<String> = (0..6).map(history_round).collect();
    lab.write_rounds(base.path(), "rounds 0-5", "h", &rounds);
    let plain = copy_dir(base.path());
    let compacted = copy_dir(base.path());
    let before = lab.answers(base.path(), "before", "h", &["f1", "f2"]);
    // The last two days are where the writer writes: merged in 10-minute windows only.
    let plan = lab.kompactor(base.path(), &["--dry-run"]);
    let t = &plan["nodes"][0]["tables"][0];
    let zone = t["ten_minute_zone"].as_i64().unwrap();
    let newest = t["newest_time"].as_i64().unwrap();
    assert!(
        zone >= 2 * DAY,
        "{test}: the writer's two days are not protected: {}",
        t["writers"]
    );
    for g in t["groups"].as_array().unwrap() {
        if g["window_end"].as_i64().unwrap() > newest - 2 * DAY {
            assert_eq!(g["width"], "10m", "{test}: {g}");
        }
    }
    assert!(
        t["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["width"] == "1d"),
        "{test}: the older days are not merged by day"
    );
    lab.kompactor(compacted.path(), &[]);
    assert_same(
        test,
        "after kompactor",
        &before,
        &lab.answers(compacted.path(), "after kompactor", "h", &["f1", "f2"]),
    );
    for dir in [plain.path(), compacted.path()] {
        lab.write_rounds(dir, "round 6", "h", &[history_round(6)]);
    }
    assert_same(
        test,
        "after one more round",
        &lab.answers(
            plain.path(),
            "never compacted, after round 6",
            "h",
            &["f1", "f2"],
        ),
        &lab.answers(
            compacted.path(),
            "compacted, after round 6",
            "h",
            &["f1", "f2"],
        ),
    );
    lab.passed();
}

#[test]
fn rewritten_history_3_0_3() {
    rewritten_history("rewritten_history_3_0_3", true, &[]);
}

#[test]
fn rewritten_history_3_10_with_checkpoints() {
    rewritten_history(
        "rewritten_history_3_10_with_checkpoints",
        false,
        &["--checkpoint-interval", "1ms"],
    );
}

/// Four points of the 3.10 fixture whose files the checkpoint holds (so that an overwrite,
/// in a snapshot after it, is the version the server returns): each the first point of its
/// file, in a window of two files; as line protocol with a new `usage_user`.
fn overwrites(f: &Fixture) -> String {
    use kompactor::pipeline::discover::discover_node;
    let node = discover_node(&f.dir, "node0").unwrap();
    let in_checkpoint: std::collections::BTreeSet<u64> = node
        .checkpoints
        .iter()
        .flat_map(|c| c.doc.value.databases.iter().map(|(_, _, e)| e.id.0))
        .collect();
    let cpu = node
        .live
        .iter()
        .find(|(k, _)| k.db.0 == 1 && k.table.0 == 0)
        .map(|(_, v)| v)
        .unwrap();
    let mut per_chunk: std::collections::BTreeMap<i64, Vec<&kompactor::format::model::EntryRc>> =
        Default::default();
    for e in cpu {
        per_chunk.entry(e.chunk_time.0).or_default().push(e);
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let escape = |v: &str| {
        v.replace(' ', "\\ ")
            .replace(',', "\\,")
            .replace('=', "\\=")
    };
    let mut lines = Vec::new();
    for files in per_chunk.values().filter(|v| v.len() == 2) {
        let Some(e) = files.iter().find(|e| in_checkpoint.contains(&e.id.0)) else {
            continue;
        };
        let path = e.path.under(&f.dir);
        let file = format!("read_parquet('{}')", path.display());
        // Windows before the schema change only: their rows have no `dc`.
        let has_dc: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM (DESCRIBE SELECT * FROM {file}) WHERE column_name = 'dc'"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        if has_dc > 0 {
            continue;
        }
        let (host, cpu_tag, region): (String, String, Option<String>) = conn
            .query_row(
                &format!(
                    "SELECT host, cpu, region FROM {file} WHERE epoch_ns(time) = {} LIMIT 1",
                    e.min_time.0
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let mut tags = format!("cpu,cpu={},host={}", escape(&cpu_tag), escape(&host));
        if let Some(r) = region {
            tags.push_str(&format!(",region={}", escape(&r)));
        }
        lines.push(format!("{tags} usage_user=99.5 {}", e.min_time.0));
        if lines.len() == 4 {
            break;
        }
    }
    assert_eq!(lines.len(), 4, "four points to overwrite");
    lines.join("\n")
}

#[test]
fn overwrite_after_wide_merge_3_10() {
    let test = "overwrite_after_wide_merge_3_10";
    let Some(lab) = Lab::new(test, false, &[]) else {
        return;
    };
    let f = fixture("3.10/small");
    let lines = overwrites(&f);
    let plain = copy_fixture(&f);
    let merged = copy_fixture(&f);
    // Merged by day, as earlier releases did by default.
    lab.kompactor(
        merged.path(),
        &["--window", "1d", "--min-age", "0", "--writer-reach", "0"],
    );
    let write = |dir: &Path, stage: &str| {
        let s = lab.start_writing(dir, stage);
        let before = files_of(&s, "metrics", "cpu");
        s.write_lp("metrics", &lines).unwrap();
        let deadline = Instant::now() + PERSIST_TIMEOUT;
        while files_of(&s, "metrics", "cpu") < before + 4 {
            assert!(
                Instant::now() < deadline,
                "{test}: {stage}: not persisted\n{}",
                s.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        s.stop();
    };
    write(plain.path(), "never compacted, overwriting");
    write(merged.path(), "merged by day, overwriting");
    let answers = |dir: &Path, stage: &str| {
        let s = lab.start_reading(dir, stage, &[]);
        let mut rows = s
            .query(
                "metrics",
                "SELECT * FROM cpu ORDER BY cpu, dc, host, region, time",
            )
            .unwrap();
        // Float sums depend on the order rows are added in: counts only.
        rows.extend(
            s.query(
                "metrics",
                "SELECT count(*) AS n, count(usage_user) AS u FROM cpu",
            )
            .unwrap(),
        );
        s.stop();
        rows
    };
    let want = answers(plain.path(), "never compacted");
    let duplicated = answers(merged.path(), "merged by day");
    assert!(
        duplicated.len() > want.len(),
        "{test}: the overwrites did not show twice beside the day-wide merge ({} rows, {} expected more)",
        duplicated.len(),
        want.len()
    );
    let report = lab.kompactor(merged.path(), &[]);
    let combined: u64 = report["nodes"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cross_chunk_points"].as_u64().unwrap_or(0))
        .sum();
    assert!(combined > 0, "{test}: no point combined across chunk_times");
    assert_same(
        test,
        "after the next run",
        &want,
        &answers(merged.path(), "after the next run"),
    );
    lab.passed();
}

/// A 3.8.2+ server reads only the checkpoints whose range reaches its load window: the 3.10
/// fixture's one checkpoint, once more than 100 snapshots (the least a server loads) follow
/// it, is not read by a server loading 100, and neither are the files only it lists. kompactor
/// must find the same files live, and compact to the same answers.
#[test]
fn checkpoints_out_of_the_load_window_3_10() {
    let test = "checkpoints_out_of_the_load_window_3_10";
    let Some(lab) = Lab::new(test, false, &[]) else {
        return;
    };
    let f = fixture("3.10/small");
    let dir = copy_fixture(&f);
    // Snapshots after the checkpoint (sequence 71) until it is more than 100 behind: a point
    // a second, each flushed to a WAL file of its own, most snapshotted alone.
    let snapshots = |d: &Path| {
        std::fs::read_dir(d.join("node0/snapshots"))
            .unwrap()
            .count()
    };
    let s = lab.start_writing(dir.path(), "writing");
    let mut i = 0;
    while snapshots(dir.path()) < 190 {
        s.write_lp("metrics", &format!("extra,host=x v={i}i {}", T0 + i * MIN))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        i += 1;
        assert!(i < 400, "{test}: snapshots do not grow\n{}", s.log_tail(20));
    }
    s.stop();
    let out = kompactor(&[
        "status",
        dir.path().to_str().unwrap(),
        "--hosts",
        "node0",
        "--load-window",
        "100",
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["nodes"][0]["checkpoints_loaded"], 0,
        "{test}: {}",
        status["nodes"][0]
    );
    // Written with the default lookback (the checkpoint in reach, nothing rebuilt), served
    // with one of 100 snapshots.
    let s = lab.start_reading(
        dir.path(),
        "loading 100 snapshots",
        &["--gen1-lookback-duration", "1000m"],
    );
    for t in status["nodes"][0]["tables"].as_array().unwrap() {
        let name = match (t["db_id"].as_u64(), t["table_id"].as_u64()) {
            (Some(1), Some(0)) => ("metrics", "cpu"),
            (Some(1), Some(1)) => ("metrics", "mem"),
            (Some(2), Some(0)) => ("events", "log"),
            _ => continue,
        };
        let rows = s
            .query(
                name.0,
                &format!(
                    "SELECT count(*) AS files, sum(row_count) AS rows FROM system.parquet_files WHERE table_name = '{}'",
                    name.1
                ),
            )
            .unwrap();
        assert_eq!(
            (rows[0]["files"].as_u64(), rows[0]["rows"].as_u64()),
            (t["files"].as_u64(), t["rows_in_files"].as_u64()),
            "{test}: {}: files and rows the server loads",
            name.1
        );
        assert!(
            t["hidden_files"].as_u64().unwrap() > 0,
            "{test}: {}",
            name.1
        );
    }
    s.stop();
    lab.passed();
}
