//! `kompactor prepare`: windows merged while the server runs. Prepare changes nothing in the
//! nodes; the compaction that follows commits exactly what a plain run would, and takes a
//! prepared window only while its inputs and its files are exactly as they were prepared.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The plan options of both steps: every window by day, none too recent.
const PLAN: &[&str] = &["--window", "1d", "--min-age", "0", "--writer-reach", "0"];

fn hosts(f: &Fixture) -> String {
    f.nodes().join(",")
}

/// Runs `kompactor [prepare] <dir> --hosts <hosts> --json` with the plan options and `env`.
fn step(
    prepare: bool,
    dir: &Path,
    hosts: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, Value) {
    let d = dir.to_str().unwrap();
    let mut args: Vec<&str> = if prepare { vec!["prepare"] } else { vec![] };
    args.extend([d, "--hosts", hosts, "--json"]);
    args.extend(PLAN);
    let out = Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args(&args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), text(&out), doc)
}

/// `prepare`, which must succeed; its `--json` document.
fn prepare(dir: &Path, hosts: &str) -> Value {
    let (code, out, doc) = step(true, dir, hosts, &[]);
    assert_eq!(code, Some(0), "prepare\n{out}");
    doc
}

/// The compaction, which must succeed; its run report.
fn compact(dir: &Path, hosts: &str) -> Value {
    let (code, out, report) = step(false, dir, hosts, &[]);
    assert_eq!(code, Some(0), "compaction\n{out}");
    report
}

/// Over every table of a run report: the windows merged, and of those the ones that came
/// prepared.
fn windows(report: &Value) -> (u64, u64) {
    let tables = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["tables"].as_array().unwrap());
    tables.fold((0, 0), |(m, p), t| {
        (
            m + t["groups_merged"].as_u64().unwrap(),
            p + t["windows_prepared"].as_u64().unwrap(),
        )
    })
}

/// Over every node of a run report: the snapshot and checkpoint files the commit rewrote,
/// and of those the ones `prepare` had written already.
fn metadata_rewrites(report: &Value) -> (u64, u64) {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["committed"])
        .filter(|c| !c.is_null())
        .fold((0, 0), |(r, p), c| {
            let u = |k: &str| c[k].as_u64().unwrap();
            // Every checkpoint written but the new one replaces an existing file.
            let checkpoints = u("checkpoints_written").saturating_sub(1);
            (
                r + u("snapshots_rewritten") + checkpoints,
                p + u("metadata_files_prepared"),
            )
        })
}

/// The Parquet files prepare left under `.kompactor/prepared/`.
fn prepared_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir.join(".kompactor/prepared"))
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .filter(|p| p.to_string_lossy().contains(".parquet"))
        .collect();
    out.sort();
    out
}

/// Nothing of kompactor's scratch left behind.
fn assert_no_scratch(dir: &Path) {
    let tmp = dir.join(".kompactor/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

#[test]
fn prepare_while_the_node_is_in_use_changes_no_node_and_its_windows_are_committed() {
    for f in fixtures() {
        let copy = copy_fixture(&f);
        let dir = copy.path();
        let h = hosts(&f);
        // A process outside kompactor keeps a snapshot open, as the running server would.
        let snapshots = dir.join(&f.nodes()[0]).join("snapshots");
        let snap = std::fs::read_dir(&snapshots)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let holder = hold_open(&snap);
        let before = node_files(dir);

        let doc = prepare(dir, &h);
        let prepared = doc["windows_prepared"].as_u64().unwrap();
        assert!(prepared > 0, "{}: nothing prepared: {doc}", f.name);
        assert_eq!(doc["windows_failed"], 0, "{}: {doc}", f.name);
        assert_eq!(
            node_files(dir),
            before,
            "{}: prepare changed a node",
            f.name
        );

        // The compaction itself still refuses while the node is in use.
        let (code, out, _) = step(false, dir, &h, &[]);
        assert_eq!(
            code,
            Some(1),
            "{}: a compaction while in use\n{out}",
            f.name
        );
        assert_eq!(node_files(dir), before, "{}", f.name);
        drop(holder);

        let report = compact(dir, &h);
        assert_eq!(
            windows(&report),
            (prepared, prepared),
            "{}: every window came prepared",
            f.name
        );
        let (rewritten, taken) = metadata_rewrites(&report);
        assert!(rewritten > 0, "{}: no metadata rewritten: {report}", f.name);
        assert_eq!(
            taken, rewritten,
            "{}: every rewritten metadata file came prepared",
            f.name
        );
        assert_answers_match(&f, dir);
        assert!(
            !dir.join(".kompactor/prepared").exists(),
            "{}: prepared runs left",
            f.name
        );
        assert_no_scratch(dir);
    }
}

#[test]
fn a_corrupted_prepared_file_is_merged_afresh() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let dir = copy.path();
    let prepared = prepare(dir, "node0")["windows_prepared"].as_u64().unwrap();
    let victim = &prepared_files(dir)[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid - 16..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(victim, bytes).unwrap();

    let report = compact(dir, "node0");
    assert_eq!(windows(&report), (prepared, prepared - 1), "{report}");
    assert_answers_match(&f, dir);
}

#[test]
fn a_file_that_arrived_after_prepare_makes_its_window_merge_afresh() {
    // 3.0.3: no checkpoints, so hiding the newest snapshot shows the node as it was before
    // that snapshot; its files then arrive between prepare and the commit, as late writes do.
    let f = fixture("3.0.3/small");
    let copy = copy_fixture(&f);
    let dir = copy.path();
    let snapshots = dir.join("node0/snapshots");
    let mut names: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    // Names are inverted sequence numbers: the newest sorts first.
    let newest = snapshots.join(&names[0]);
    let aside = dir.join("newest-snapshot.json");
    std::fs::rename(&newest, &aside).unwrap();
    let prepared = prepare(dir, "node0")["windows_prepared"].as_u64().unwrap();
    std::fs::rename(&aside, &newest).unwrap();

    let report = compact(dir, "node0");
    let (merged, taken) = windows(&report);
    // That snapshot holds late writes to both days: no window is as it was prepared.
    assert_eq!(
        (merged, taken),
        (prepared, 0),
        "a changed window was taken as prepared: {report}"
    );
    assert_answers_match(&f, dir);
}

#[test]
fn an_input_purged_after_prepare_makes_its_window_merge_afresh() {
    let f = fixture("3.10/small");
    // The same purge on two copies: one prepared before it, one compacted plainly after it.
    let (with_prepare, plain) = (copy_fixture(&f), copy_fixture(&f));
    let prepared = prepare(with_prepare.path(), "node0")["windows_prepared"]
        .as_u64()
        .unwrap();
    // The oldest file of the table with the most files.
    let index = index_files(with_prepare.path(), "node0")
        .iter()
        .map(|p| read_json(p))
        .max_by_key(|doc| doc["files"].as_array().unwrap().len())
        .unwrap();
    let first = index["files"][0]["path"].as_str().unwrap().to_string();
    for dir in [with_prepare.path(), plain.path()] {
        let deleted = purge(dir, "node0", &|_| true, &|e| e["path"] == first.as_str());
        assert_eq!(deleted, std::slice::from_ref(&first));
    }

    let report = compact(with_prepare.path(), "node0");
    let (_, taken) = windows(&report);
    assert_eq!(taken, prepared - 1, "{report}");
    compact(plain.path(), "node0");
    assert!(
        read_through_metadata(with_prepare.path(), "node0")
            == read_through_metadata(plain.path(), "node0"),
        "rows read back differ from a plain run's"
    );
}

#[test]
fn a_crash_during_prepare_or_during_its_commit_is_recovered() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let dir = copy.path();
    let before = node_files(dir);

    // A prepare killed while merging: no node touched; the next prepare starts clean.
    let (code, out, _) = step(
        true,
        dir,
        "node0",
        &[("KOMPACTOR_FAILPOINT", "after-merge-group")],
    );
    assert_eq!(code, None, "the failpoint was not reached\n{out}");
    assert_eq!(
        node_files(dir),
        before,
        "an interrupted prepare changed a node"
    );
    let prepared = prepare(dir, "node0")["windows_prepared"].as_u64().unwrap();
    assert_no_scratch(dir);

    // The commit after prepare killed with outputs moved into the node, before its commit
    // point: the next run rolls it back, then merges what it can no longer take.
    let (code, out, _) = step(
        false,
        dir,
        "node0",
        &[("KOMPACTOR_FAILPOINT", "after-output-moved")],
    );
    assert_eq!(code, None, "the failpoint was not reached\n{out}");
    let report = compact(dir, "node0");
    let (merged, _) = windows(&report);
    assert_eq!(merged, prepared, "{report}");
    assert_answers_match(&f, dir);
    assert_no_scratch(dir);

    // Killed after its commit point: the next run finishes it.
    let copy = copy_fixture(&f);
    let dir = copy.path();
    prepare(dir, "node0");
    let (code, out, _) = step(
        false,
        dir,
        "node0",
        &[("KOMPACTOR_FAILPOINT", "after-commit-point")],
    );
    assert_eq!(code, None, "the failpoint was not reached\n{out}");
    let (code, out, _) = step(false, dir, "node0", &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("recovery"), "{out}");
    assert_answers_match(&f, dir);
    assert_no_scratch(dir);
}
