//! Archive and restore: cold days leave the node for a Hive-partitioned Parquet archive that
//! DuckDB reads directly, and come back; crashes on the way are recovered.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// A cutoff inside the fixture: 05:00 on the day after its first day; the archive then holds
/// every day before that day.
fn cutoff(f: &Fixture) -> (String, String) {
    let boundary = midnight_after_first_point(&f.summary(), Some(&f.nodes()[0]));
    let t = chrono::DateTime::from_timestamp(boundary / 1_000_000_000, 0).unwrap();
    (
        format!("{}T05:00:00Z", t.format("%Y-%m-%d")),
        t.format("%Y-%m-%d").to_string(),
    )
}

/// The archive's rows of each table, read with DuckDB's Hive partitioning, compared with the
/// fixture's rows before the boundary day.
fn assert_archive_holds(f: &Fixture, archive: &Path, boundary_day: &str) {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    for node in f.nodes() {
        let names = table_names(f, &node);
        let live = read_through_metadata(&f.dir, &node);
        for (key, (db, table)) in &names {
            let types = &live[key].1;
            let want = expected_rows_where(f, &node, db, table, types, &|t| t < boundary_day);
            // Named by the node's catalog (or paths) on every release.
            let (dbv, tv) = (db.clone(), table.clone());
            let sql = format!(
                "SELECT * FROM read_parquet('{}/**/*.parquet', hive_partitioning = true, union_by_name = true) \
                 WHERE node = '{node}' AND CAST(db AS VARCHAR) = '{dbv}' AND CAST(\"table\" AS VARCHAR) = '{tv}'",
                archive.display()
            );
            let got = query_rows(&conn, &sql, &["node", "db", "table", "date"]);
            assert_eq!(
                got.len(),
                want.len(),
                "{} {node} {db}.{table}: archive rows",
                f.name
            );
            assert_eq!(got, want, "{} {node} {db}.{table}", f.name);
        }
    }
}

/// `kompactor archive DATA_DIR --hosts HOSTS --older-than CUT --to ARCHIVE [extra...]`.
fn run_archive(d: &str, hosts: &str, cut: &str, to: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "archive",
        d,
        "--hosts",
        hosts,
        "--older-than",
        cut,
        "--to",
        to.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kompactor(&args)
}

fn run(args: &[&str]) -> std::process::Output {
    kompactor(args)
}

/// The data dir's files and mtimes, but kompactor's own state dir (a refused run may create its lock).
fn state(dir: &Path) -> Vec<(String, (String, std::time::SystemTime))> {
    listing(dir)
        .into_iter()
        .filter(|(k, _)| !k.is_empty() && !k.starts_with(".kompactor"))
        .collect()
}

#[test]
fn archive_then_restore_round_trips() {
    for name in ["3.10/small", "3.0.3/small", "3.10/multi"] {
        let f = fixture(name);
        let copy = copy_fixture(&f);
        let archive = tempfile::tempdir().unwrap();
        let a = archive.path().join("cold");
        let (cut, day) = cutoff(&f);
        let d = copy.path().to_str().unwrap();
        let hosts = f.nodes().join(",");
        let before = state(copy.path());
        let dry = run_archive(d, &hosts, &cut, &a, &["--dry-run"]);
        assert!(dry.status.success(), "{}", text(&dry));
        assert!(
            state(copy.path()) == before,
            "a dry run changed the data dir"
        );
        assert!(!a.exists(), "a dry run created the archive");
        let out = run_archive(d, &hosts, &cut, &a, &[]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_answers_match_where(&f, copy.path(), &|t| t >= day.as_str());
        assert_archive_holds(&f, &a, &day);
        let v = run(&["verify", d, "--hosts", &hosts]);
        assert_eq!(v.status.code(), Some(0), "{}", text(&v));

        // Restoring the node's live window is refused; restoring the archive brings it all back.
        let out = run(&["restore", a.to_str().unwrap(), d, "--hosts", &hosts]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_answers_match(&f, copy.path());
        let v = run(&["verify", d, "--hosts", &hosts]);
        assert_eq!(v.status.code(), Some(0), "{}", text(&v));
        // The restored windows left the archive's partitions.
        let left = walkdir::WalkDir::new(&a)
            .into_iter()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count();
        assert_eq!(
            left, 0,
            "{name}: restored files still in the archive's partitions"
        );
    }
}

#[test]
fn bad_archive_inputs_are_refused_and_change_nothing() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let d = copy.path().to_str().unwrap();
    let (cut, _) = cutoff(&f);
    let before = state(copy.path());
    // A directory that holds something else.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("precious.txt"), b"x").unwrap();
    let out = run_archive(d, "node0", &cut, other.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not a kompactor archive"),
        "{}",
        text(&out)
    );
    // A cutoff before all data.
    let empty = tempfile::tempdir().unwrap();
    let out = run_archive(d, "node0", "2000-01-01T00:00:00Z", empty.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("selects nothing"), "{}", text(&out));
    assert!(
        state(copy.path()) == before,
        "a refused run changed the data dir"
    );

    // Restoring a window that is live again, and an archive whose manifest does not match.
    let a = empty.path().join("cold");
    assert!(run_archive(d, "node0", &cut, &a, &[]).status.success());
    let fresh = copy_fixture(&f);
    let before = state(fresh.path());
    let out = run(&[
        "restore",
        a.to_str().unwrap(),
        fresh.path().to_str().unwrap(),
        "--hosts",
        "node0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("live in the node"), "{}", text(&out));
    assert!(
        state(fresh.path()) == before,
        "a refused restore changed the data dir"
    );

    let manifest = std::fs::read_dir(a.join("_kompactor/manifests"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut m = read_json(&manifest);
    let rows = m["windows"][0]["checksum"]["rows"].as_u64().unwrap();
    m["windows"][0]["checksum"]["rows"] = (rows + 1).into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let before = state(copy.path());
    let out = run(&["restore", a.to_str().unwrap(), d, "--hosts", "node0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("do not match their manifest"),
        "{}",
        text(&out)
    );
    assert!(
        state(copy.path()) == before,
        "a refused run changed the data dir"
    );
}

fn with_failpoint(args: &[&str], fp: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args(args)
        .env("KOMPACTOR_FAILPOINT", fp)
        .output()
        .unwrap()
}

#[test]
fn a_crash_during_archive_or_restore_is_recovered() {
    let f = fixture("3.10/small");
    let (cut, day) = cutoff(&f);
    for &fp in ARCHIVE_FAILPOINTS {
        let copy = copy_fixture(&f);
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("cold");
        let d = copy.path().to_str().unwrap();
        let args = [
            "archive",
            d,
            "--hosts",
            "node0",
            "--older-than",
            &cut,
            "--to",
            a.to_str().unwrap(),
        ];
        let out = with_failpoint(&args, fp);
        assert!(
            !out.status.success() && text(&out).contains(fp),
            "{fp}: {}",
            text(&out)
        );
        // The next invocation recovers; archiving again then completes or finds nothing left.
        let again = run(&args);
        assert!(
            again.status.success() || text(&again).contains("selects nothing"),
            "{fp}: {}",
            text(&again)
        );
        assert_answers_match_where(&f, copy.path(), &|t| t >= day.as_str());
        assert_archive_holds(&f, &a, &day);

        // And a crash while restoring.
        let rargs = ["restore", a.to_str().unwrap(), d, "--hosts", "node0"];
        let rfp = if fp == "after-archive-window" {
            "after-restore-window"
        } else {
            fp
        };
        if ["after-archive-manifest", "after-trash-move"].contains(&rfp) {
            continue;
        }
        let out = with_failpoint(&rargs, rfp);
        assert!(!out.status.success(), "{rfp}: {}", text(&out));
        let again = run(&rargs);
        assert!(
            again.status.success() || text(&again).contains("no archived window"),
            "{rfp}: {}",
            text(&again)
        );
        // Recovery happens at the start of any run: a dry run of compaction shows a clean node.
        let _ = run(&[d, "--hosts", "node0", "--min-age", "1000d", "-q"]);
        assert_answers_match(&f, copy.path());
    }
}
