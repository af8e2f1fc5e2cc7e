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
    let rows = m["windows"][0]["digest"]["rows"].as_u64().unwrap();
    m["windows"][0]["digest"]["rows"] = (rows + 1).into();
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

/// The only manifest of archive `a`.
fn the_manifest(a: &Path) -> std::path::PathBuf {
    let mut all: Vec<_> = std::fs::read_dir(a.join("_kompactor/manifests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn archives_are_checked_by_kompactors_own_digest_and_older_ones_still_restore() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let d = copy.path().to_str().unwrap();
    let (cut, _) = cutoff(&f);
    let archive = tempfile::tempdir().unwrap();
    let a = archive.path().join("cold");
    assert!(run_archive(d, "node0", &cut, &a, &[]).status.success());
    let manifest = the_manifest(&a);
    let made = read_json(&manifest);
    let windows = made["windows"].as_array().unwrap().len();
    assert!(windows > 1, "{made}");
    let write = |m: &serde_json::Value| {
        std::fs::write(&manifest, serde_json::to_vec_pretty(m).unwrap()).unwrap()
    };
    // How a dry run of the restore checked each window, and what it said.
    let checked = || -> (Option<i32>, Vec<String>, String) {
        let out = run(&[
            "restore",
            a.to_str().unwrap(),
            d,
            "--hosts",
            "node0",
            "--dry-run",
            "--json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let by: Vec<String> = doc["windows"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| w["verified_by"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (out.status.code(), by, text(&out))
    };
    let all = |s: &str| vec![s.to_string(); windows];

    let (code, by, out) = checked();
    assert_eq!((code, by), (Some(0), all("row-digest")), "{out}");
    for w in made["windows"].as_array().unwrap() {
        assert_eq!(w["digest"]["algorithm"], "kompactor-row-xxh3-128-sum-v1");
        assert_eq!(w["digest"]["rows"], w["checksum"]["rows"]);
    }

    // One value changed in the archive, as the digest sees it: refused.
    let mut m = made.clone();
    let sum: u128 = m["windows"][0]["digest"]["sum"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    m["windows"][0]["digest"]["sum"] = sum.wrapping_add(1).to_string().into();
    write(&m);
    let (code, _, out) = checked();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("do not match their manifest"), "{out}");
    m["windows"][0]["digest"]["algorithm"] = "another-v9".into();
    write(&m);
    let (code, _, out) = checked();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("another-v9"), "{out}");

    // An archive written before the digest: checked by the DuckDB checksum it was made with.
    let mut old = made.clone();
    for w in old["windows"].as_array_mut().unwrap() {
        w.as_object_mut().unwrap().remove("digest");
    }
    write(&old);
    let (code, by, out) = checked();
    assert_eq!((code, by), (Some(0), all("duckdb-checksum")), "{out}");
    // ... which another DuckDB computes otherwise: every row read, counts and times equal,
    // and a warning.
    let mut other = old.clone();
    let h: i128 = other["windows"][0]["checksum"]["hash_sum"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    other["windows"][0]["checksum"]["hash_sum"] = h.wrapping_add(1).to_string().into();
    write(&other);
    let (code, by, out) = checked();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(by[0], "rows-and-full-read", "{out}");
    assert_eq!(by[1..], all("duckdb-checksum")[1..], "{out}");
    assert!(out.contains("a full read only"), "{out}");
    // ... but a row count that differs is damage.
    let rows = other["windows"][0]["checksum"]["rows"].as_u64().unwrap();
    other["windows"][0]["checksum"]["rows"] = (rows + 1).into();
    write(&other);
    let (code, _, out) = checked();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("do not match their manifest"), "{out}");

    // The old manifest restores every row.
    write(&old);
    let out = run(&["restore", a.to_str().unwrap(), d, "--hosts", "node0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_answers_match(&f, copy.path());
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
