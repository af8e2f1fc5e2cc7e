//! Retention and deleted tables (`docs/on-disk-format.md`, section 6): nodes on which the
//! server deleted files but left them listed in snapshots and checkpoints. Each scenario is
//! made from a real fixture by doing what the server's retention loop does: the expired files
//! are deleted and the table index (`db-indices/`) is rewritten without them; snapshots and
//! checkpoints are left as they are.

mod common;

use common::*;
use kompactor::pipeline::discover::discover_node;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Nanoseconds of a UTC midnight `YYYY-MM-DD`.
fn midnight(day: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_nanos_opt()
        .unwrap()
}

/// Retention with a cutoff: every file whose data is all older than `cutoff_ns`.
fn expire_before(dir: &Path, node: &str, cutoff_ns: i64) -> Vec<String> {
    purge(dir, node, &|_| true, &|f| {
        f["max_time"].as_i64().unwrap() < cutoff_ns
    })
}

/// Every file path a snapshot or checkpoint of the node lists as present (removals name
/// files that are gone by design: the replaced inputs of a compaction).
fn listed_paths(dir: &Path, node: &str) -> BTreeSet<String> {
    let n = discover_node(dir, node).unwrap();
    let snapshots = n.snapshots.iter().map(|s| &s.doc.value.databases);
    let checkpoints = n.checkpoints.iter().map(|c| &c.doc.value.databases);
    snapshots
        .chain(checkpoints)
        .flat_map(|files| files.iter().map(|(_, _, f)| f.path.to_string()))
        .collect()
}

/// Bytes of the node's snapshot and checkpoint files.
fn metadata_bytes(dir: &Path, node: &str) -> u64 {
    ["snapshots", "snapshot-checkpoints"]
        .iter()
        .flat_map(|d| {
            walkdir::WalkDir::new(dir.join(node).join(d))
                .into_iter()
                .flatten()
        })
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn run(args: &[&str]) -> (Option<i32>, String, Value) {
    let out = kompactor(args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), text(&out), json)
}

/// The checks every scenario shares, on a data dir already purged: `verify`, `status`, a
/// compaction, the rows read back, the cleaned metadata, a second run, and `undo`.
struct Scenario<'a> {
    fixture: &'a Fixture,
    dir: &'a Path,
    hosts: &'a str,
    /// Paths the purge deleted.
    purged: &'a [String],
    /// Keeps the expected rows whose rendered time it accepts.
    keep: &'a dyn Fn(&str) -> bool,
    /// Tables (`db.table`) that were hard-deleted: no rows expected.
    deleted_tables: &'a [&'a str],
}

impl Scenario<'_> {
    fn check(&self) {
        let d = self.dir.to_str().unwrap();
        let name = &self.fixture.name;

        // verify: purged entries are information, not problems.
        let (code, out, _) = run(&["verify", d, "--hosts", self.hosts]);
        assert_eq!(code, Some(0), "{name}: verify\n{out}");
        assert!(
            out.contains("(information)") && out.contains("still listed"),
            "{name}: {out}"
        );

        // status: purged entries per table, not counted as live files.
        let (code, out, status) = run(&["status", d, "--hosts", self.hosts, "--json"]);
        assert_eq!(code, Some(0), "{name}: status\n{out}");
        let purged_total: u64 = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["tables"].as_array().unwrap())
            .map(|t| t["purged_entries"].as_u64().unwrap())
            .sum();
        let expected_purged = self.purged.len();
        assert_eq!(
            purged_total as usize, expected_purged,
            "{name}: purged entries in status"
        );

        // The dry run shows the entries it would drop and changes nothing.
        let before = node_files(self.dir);
        let (code, out, _) = run(&[d, "--hosts", self.hosts, "--dry-run", "--min-age", "0"]);
        assert_eq!(code, Some(0), "{name}: dry run\n{out}");
        assert!(out.contains("still listed"), "{name}: dry run\n{out}");
        assert_eq!(
            node_files(self.dir),
            before,
            "{name}: the dry run changed the node"
        );

        // Compaction: every other window merged, purged entries dropped.
        let nodes: Vec<String> = self.hosts.split(',').map(str::to_string).collect();
        let meta_before: u64 = nodes.iter().map(|n| metadata_bytes(self.dir, n)).sum();
        let (code, out, report) = run(&[d, "--hosts", self.hosts, "--min-age", "0", "--json"]);
        assert_eq!(code, Some(0), "{name}: compaction\n{out}");
        let dropped: u64 = report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["committed"]["purged_entries_dropped"].as_u64().unwrap())
            .sum();
        assert_eq!(
            dropped as usize, expected_purged,
            "{name}: entries dropped\n{out}"
        );
        let meta_after: u64 = nodes.iter().map(|n| metadata_bytes(self.dir, n)).sum();
        println!(
            "{name}: {dropped} purged entries dropped; snapshot+checkpoint metadata {meta_before} -> {meta_after} bytes"
        );

        // Nothing listed is missing on disk any more.
        for n in &nodes {
            for p in listed_paths(self.dir, n) {
                assert!(
                    self.dir.join(&p).exists(),
                    "{name}: {p} is still listed but not on disk"
                );
            }
        }
        self.assert_rows();

        // A second run changes nothing.
        let after = node_files(self.dir);
        let (code, out, _) = run(&[d, "--hosts", self.hosts, "--min-age", "0"]);
        assert_eq!(code, Some(0), "{name}: second run\n{out}");
        assert_eq!(
            node_files(self.dir),
            after,
            "{name}: the second run changed the node"
        );

        // undo gives the purged node back byte for byte, stale entries included.
        let runs = std::fs::read_dir(self.dir.join(".kompactor/runs")).unwrap();
        let mut ids: Vec<_> = runs.flatten().map(|e| e.file_name()).collect();
        ids.sort();
        let (code, out, _) = run(&["undo", d, "--run", ids[0].to_str().unwrap()]);
        assert_eq!(code, Some(0), "{name}: undo\n{out}");
        assert_eq!(
            node_files(self.dir),
            before,
            "{name}: undo did not restore the node"
        );
    }

    /// The rows read back equal the persisted answers minus exactly the expired rows.
    fn assert_rows(&self) {
        let f = self.fixture;
        for node in f.nodes() {
            let names = table_names(f, &node);
            let got = read_through_metadata(self.dir, &node);
            for (key, (db, table)) in &names {
                let label = format!("{db}.{table}");
                if self.deleted_tables.contains(&label.as_str()) {
                    assert!(
                        !got.contains_key(key),
                        "{}: {label} still has live files",
                        f.name
                    );
                    continue;
                }
                let (rows, types) = got
                    .get(key)
                    .unwrap_or_else(|| panic!("{}: {node} {label}: no live files", f.name));
                let want = expected_rows_where(f, &node, db, table, types, self.keep);
                assert!(
                    rows == &want,
                    "{}: {node} {label}: {} rows read back, {} expected",
                    f.name,
                    rows.len(),
                    want.len()
                );
            }
        }
    }
}

#[test]
fn retention_on_3_10_small_is_cleaned_up() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let purged = expire_before(copy.path(), "node0", midnight("2026-11-17"));
    assert!(purged.len() > 400, "{} files expired", purged.len());
    Scenario {
        fixture: &f,
        dir: copy.path(),
        hosts: "node0",
        purged: &purged,
        keep: &|t| t >= "2026-11-17",
        deleted_tables: &[],
    }
    .check();
}

#[test]
fn retention_on_3_8_3_small_is_cleaned_up() {
    let f = fixture("3.8.3/small");
    let copy = copy_fixture(&f);
    let purged = expire_before(copy.path(), "node0", midnight("2026-11-18"));
    assert!(purged.len() > 200, "{} files expired", purged.len());
    Scenario {
        fixture: &f,
        dir: copy.path(),
        hosts: "node0",
        purged: &purged,
        keep: &|t| t >= "2026-11-18",
        deleted_tables: &[],
    }
    .check();
}

#[test]
fn a_hard_deleted_table_on_3_10_multi_is_cleaned_up() {
    let f = fixture("3.10/multi");
    let copy = copy_fixture(&f);
    let mut purged = Vec::new();
    for node in ["node0", "node1"] {
        // metrics.mem is table 1/1 on both nodes.
        purged.extend(purge(copy.path(), node, &|k| k == "1/1", &|_| true));
    }
    assert_eq!(purged.len(), 2 * 365);
    Scenario {
        fixture: &f,
        dir: copy.path(),
        hosts: "node0,node1",
        purged: &purged,
        keep: &|_| true,
        deleted_tables: &["metrics.mem"],
    }
    .check();
}

#[test]
fn a_lost_file_next_to_purged_ones_blocks_only_its_window() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let cutoff = midnight("2026-11-17");
    let purged = expire_before(copy.path(), "node0", cutoff);
    // A file of the newest day, deleted behind the server's back: still in the table index.
    let index: Value = read_json(&copy.path().join("node0/db-indices/1/0/index.info.json"));
    let lost = index["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .rfind(|p| p.contains("2026-11-18"))
        .unwrap();
    std::fs::remove_file(copy.path().join(&lost)).unwrap();
    let d = copy.path().to_str().unwrap();

    // status counts it as lost, apart from the purged entries.
    let (code, out, status) = run(&["status", d, "--hosts", "node0", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let cpu = status["nodes"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["db_id"] == 1 && t["table_id"] == 0)
        .unwrap();
    assert_eq!(cpu["lost_files"], 1, "{cpu}");
    assert!(cpu["purged_entries"].as_u64().unwrap() > 0, "{cpu}");
    let (code, out, _) = run(&["verify", d, "--hosts", "node0"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains(&lost) && out.contains("is lost"), "{out}");
    assert!(
        !purged.iter().any(|p| out.contains(p.as_str())),
        "verify names a purged file as a problem\n{out}"
    );

    let (code, out, report) = run(&[d, "--hosts", "node0", "--min-age", "0", "--json"]);
    assert_eq!(code, Some(3), "{out}");
    let skipped: Vec<String> = report["nodes"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["windows_skipped"].as_array().cloned().unwrap_or_default())
        .filter(|k| k["blocked"].as_bool() == Some(true))
        .map(|k| k["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 1, "{out}");
    assert!(skipped[0].contains(&lost), "{skipped:?}");
    let dropped = report["nodes"][0]["committed"]["purged_entries_dropped"]
        .as_u64()
        .unwrap();
    assert_eq!(dropped as usize, purged.len());
    for p in listed_paths(copy.path(), "node0") {
        assert!(
            copy.path().join(&p).exists() || p == lost,
            "{p} still listed"
        );
    }
    // verify still names the lost file, and nothing else.
    let (code, out, _) = run(&["verify", d, "--hosts", "node0"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains(&lost), "{out}");
}
