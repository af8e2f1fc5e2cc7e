//! Compaction end to end: run the binary on a copy of each fixture, then read the data dir
//! back through its new metadata and compare with the server's own answers.

mod common;

use common::*;
use kompactor::durable::journal::trash_name;
use kompactor::pipeline::discover::discover_node;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn compact(dir: &Path, hosts: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![dir.to_str().unwrap(), "--hosts", hosts, "--json"];
    args.extend_from_slice(extra);
    let out = kompactor(&args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// Checks the metadata against the files: sizes, rows, times, unique ids, clean snapshots/.
fn assert_metadata_consistent(dir: &Path, node: &str, window_ns: i64) {
    let n = discover_node(dir, node).unwrap();
    assert!(
        n.findings.iter().all(|f| !matches!(
            f,
            kompactor::pipeline::discover::Finding::Missing { .. }
                | kompactor::pipeline::discover::Finding::SizeMismatch { .. }
                | kompactor::pipeline::discover::Finding::DuplicateId { .. }
                | kompactor::pipeline::discover::Finding::StraySnapshotEntry { .. }
        )),
        "{:#?}",
        n.findings
    );
    for e in std::fs::read_dir(dir.join(node).join("snapshots"))
        .unwrap()
        .flatten()
    {
        assert!(
            e.file_name().to_string_lossy().ends_with(".info.json"),
            "{:?}",
            e.path()
        );
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let mut ids = BTreeSet::new();
    let next = n.newest_snapshot().unwrap().doc.value.next_file_id;
    for (key, files) in &n.live {
        let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
        for f in files {
            assert!(ids.insert(f.id), "id {} twice", f.id);
            assert!(f.id < next, "id {} not below next_file_id {next}", f.id);
            let p = f.path.under(dir);
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                f.size_bytes,
                "{}",
                f.path
            );
            let (rows, min, max): (i64, i64, i64) = conn
                .query_row(
                    &format!("SELECT count(*), epoch_ns(min(time)), epoch_ns(max(time)) FROM read_parquet('{}')", p.display()),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert_eq!(rows as u64, f.row_count, "{}", f.path);
            assert_eq!((min, max), (f.min_time.0, f.max_time.0), "{}", f.path);
            if f.path.contains("/kompactor-") {
                *per_window
                    .entry(f.chunk_time.0.div_euclid(window_ns))
                    .or_default() += 1;
                let max_rg: i64 = conn
                    .query_row(
                        &format!(
                            "SELECT max(row_group_num_rows) FROM parquet_metadata('{}')",
                            p.display()
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert!(max_rg <= 100_000);
            }
        }
        // One compacted file per window: the windows are merged with every file they hold.
        let merged_windows: BTreeSet<i64> = per_window.keys().copied().collect();
        for f in files {
            let w = f.chunk_time.0.div_euclid(window_ns);
            if merged_windows.contains(&w) {
                assert!(
                    f.path.contains("/kompactor-"),
                    "{key}: {} left beside a merged window",
                    f.path
                );
            }
        }
        assert!(
            per_window.values().all(|c| *c == 1),
            "{key}: {per_window:?}"
        );
    }
}

fn run_fixture(f: &Fixture, window: &str, window_ns: i64) {
    let copy = copy_fixture(f);
    let nodes = f.nodes().join(",");
    // The reader reproduces the server's answers before compaction...
    assert_answers_match(f, copy.path());
    let report = compact(
        copy.path(),
        &nodes,
        &["--window", window, "--min-age", "0", "--writer-reach", "0"],
    );
    for n in report["nodes"].as_array().unwrap() {
        assert!(
            n["committed"].is_object(),
            "{}: nothing committed: {report}",
            f.name
        );
    }
    // ...and after it, through the new metadata.
    assert_answers_match(f, copy.path());
    for node in f.nodes() {
        assert_metadata_consistent(copy.path(), &node, window_ns);
        let trash = copy.path().join(".kompactor/trash");
        assert!(trash.is_dir());
    }
    // Nothing is both live and in the trash (`<trash>/<run>/<its trash name>`, or its own
    // path when its window directory was moved whole).
    let trash = copy.path().join(".kompactor/trash");
    let trashed: BTreeSet<String> = walkdir::WalkDir::new(&trash)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .map(|e| {
            let in_run = e.path().strip_prefix(&trash).unwrap();
            let mut parts = in_run.components();
            parts.next();
            parts.as_path().display().to_string()
        })
        .collect();
    assert!(!trashed.is_empty());
    for node in f.nodes() {
        for files in discover_node(copy.path(), &node).unwrap().live.values() {
            for file in files {
                assert!(
                    !trashed.contains(&trash_name(&file.path.to_string()))
                        && !trashed.contains(&file.path.to_string()),
                    "{} is live and in the trash",
                    file.path
                );
            }
        }
    }
    // A second run finds nothing to do and changes nothing.
    let before = listing(copy.path());
    let again = compact(
        copy.path(),
        &nodes,
        &["--window", window, "--min-age", "0", "--writer-reach", "0"],
    );
    for n in again["nodes"].as_array().unwrap() {
        assert!(
            n["committed"].is_null(),
            "{}: second run committed: {again}",
            f.name
        );
    }
    let after = listing(copy.path());
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v) && !k.starts_with(".kompactor/lock"))
        .collect();
    assert!(
        changed.is_empty(),
        "{}: second run changed {changed:?}",
        f.name
    );
}

#[test]
fn every_fixture_compacts_to_the_same_answers_with_daily_windows() {
    for f in fixtures() {
        run_fixture(&f, "1d", 86_400_000_000_000);
    }
}

#[test]
fn every_fixture_compacts_to_the_same_answers_with_ten_minute_windows() {
    for f in fixtures() {
        run_fixture(&f, "10m", 600_000_000_000);
    }
}

#[test]
fn new_files_after_a_compaction_touch_only_their_window() {
    // Compact only the older days, then let the newest day "arrive" by lowering min-age.
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    compact(
        copy.path(),
        "node0",
        &["--window", "1d", "--min-age", "1d", "--writer-reach", "0"],
    );
    let first = discover_node(copy.path(), "node0").unwrap();
    let compacted: BTreeSet<String> = first
        .live
        .values()
        .flatten()
        // Whole days: the finer pieces of a day that was too recent are merged into its day
        // once it is old enough, as they should be.
        .filter(|x| x.path.contains("/kompactor-1d-"))
        .map(|x| x.path.to_string())
        .collect();
    assert!(!compacted.is_empty());
    let report = compact(
        copy.path(),
        "node0",
        &["--window", "1d", "--min-age", "0", "--writer-reach", "0"],
    );
    assert!(report["nodes"][0]["committed"].is_object());
    let second = discover_node(copy.path(), "node0").unwrap();
    let still: BTreeSet<String> = second
        .live
        .values()
        .flatten()
        .map(|x| x.path.to_string())
        .collect();
    assert!(
        compacted.is_subset(&still),
        "earlier outputs were rewritten although their windows got no new file"
    );
    assert_answers_match(&f, copy.path());
}

#[test]
fn row_cap_splits_a_window_by_time() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    compact(
        copy.path(),
        "node0",
        &[
            "--window",
            "1d",
            "--min-age",
            "0",
            "--writer-reach",
            "0",
            "--max-rows-per-file",
            "1000",
        ],
    );
    assert_answers_match(&f, copy.path());
    let n = discover_node(copy.path(), "node0").unwrap();
    for files in n.live.values() {
        for file in files {
            // A piece may exceed the cap only by rows that share its boundary timestamp.
            assert!(
                file.row_count <= 1_100,
                "{} has {} rows",
                file.path,
                file.row_count
            );
        }
        let mut ranges: Vec<_> = files.iter().map(|x| (x.min_time, x.max_time)).collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "split pieces overlap in time: {w:?}");
        }
    }
}

#[cfg(feature = "dev-tools")]
#[test]
fn generated_data_compacts_to_the_answers_computed_before() {
    // kompactor-gen's data: several files per window, field-level overwrites in every
    // window, null and empty-looking tags, and a new tag and field from the midpoint on.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let gen = std::process::Command::new(env!("CARGO_BIN_EXE_kompactor-gen"))
        .arg(&dir)
        .args(["--series", "40", "--days", "1", "--interval", "1m"])
        .args([
            "--files-per-window",
            "3",
            "--overwrite-every",
            "1",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", text(&gen));
    let before = read_through_metadata(&dir, "node0");
    assert!(before.values().all(|(rows, _)| rows.len() > 10_000));
    for (window, window_ns) in [("1h", 3_600_000_000_000), ("1d", 86_400_000_000_000)] {
        let report = compact(
            &dir,
            "node0",
            &["--window", window, "--min-age", "0", "--writer-reach", "0"],
        );
        assert!(report["nodes"][0]["committed"].is_object(), "{report}");
        assert_metadata_consistent(&dir, "node0", window_ns);
        assert_eq!(
            read_through_metadata(&dir, "node0"),
            before,
            "window {window}"
        );
    }
}

#[test]
fn the_default_run_remembers_the_writers_and_a_second_one_finds_nothing_to_do() {
    // The fixtures' writers wrote late over their whole history: the first run keeps their
    // windows at 10 minutes, merging the late files away; the second must still know that.
    for f in fixtures() {
        let copy = copy_fixture(&f);
        let nodes = f.nodes().join(",");
        compact(copy.path(), &nodes, &[]);
        assert!(
            copy.path().join(".kompactor/writers.json").is_file(),
            "{}: no record of the writers",
            f.name
        );
        let again = compact(copy.path(), &nodes, &[]);
        for n in again["nodes"].as_array().unwrap() {
            assert!(
                n["committed"].is_null(),
                "{}: the second default run merged again: {}",
                f.name,
                n["tables"]
            );
        }
        assert_answers_match(&f, copy.path());
    }
}
