//! The foundation: discovery and the dry-run plan, on real data dirs and on bad input.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn dry_run_json(dir: &Path, hosts: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        dir.to_str().unwrap(),
        "--hosts",
        hosts,
        "--dry-run",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = kompactor(&args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn plan_file_counts_equal_the_servers_for_every_fixture() {
    for f in fixtures() {
        let copy = copy_fixture(&f);
        let nodes = f.nodes();
        let before = listing(copy.path());
        let plan = dry_run_json(copy.path(), &nodes.join(","), &[]);
        // The verbose text form runs too, and also changes nothing.
        let out = kompactor(&[
            copy.path().to_str().unwrap(),
            "--hosts",
            &nodes.join(","),
            "--dry-run",
            "--verbose",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(" rows  "),
            "{}",
            text(&out)
        );
        assert_eq!(
            listing(copy.path()),
            before,
            "{}: a dry run changed the data dir",
            f.name
        );

        for (node_plan, node) in plan["nodes"].as_array().unwrap().iter().zip(&nodes) {
            assert_eq!(node_plan["node"], *node);
            let names = table_names(&f, node);
            let tables = node_plan["tables"].as_array().unwrap();
            assert_eq!(tables.len(), names.len(), "{}: tables", f.name);
            for t in tables {
                let key = kompactor::format::ids::TableKey {
                    db: kompactor::format::ids::DbId(t["table"]["db"].as_u64().unwrap()),
                    table: kompactor::format::ids::TableId(t["table"]["table"].as_u64().unwrap()),
                };
                let (db, table) = &names[&key];
                assert_eq!(
                    t["files_now"].as_u64().unwrap(),
                    expected_files(&f, node, db, table),
                    "{}: {node} {db}.{table}",
                    f.name
                );
                let in_groups: u64 = t["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["inputs"].as_array().unwrap().len() as u64)
                    .sum();
                assert!(in_groups <= t["files_now"].as_u64().unwrap());
            }
        }
    }
}

#[test]
fn generations_are_detected() {
    let want = [
        ("influxdb3-3.0.3/small", "3.0-3.1"),
        ("influxdb3-3.5.0/small", "3.3+"),
        ("influxdb3-3.8.3/small", "3.8.2+"),
        ("influxdb3-3.10/small", "3.8.2+"),
    ];
    for f in fixtures() {
        let Some((_, gen)) = want.iter().find(|(n, _)| f.name.ends_with(n)) else {
            continue;
        };
        let plan = dry_run_json(&f.dir, "node0", &[]);
        assert_eq!(plan["nodes"][0]["generation"], *gen, "{}", f.name);
    }
}

#[test]
fn min_age_and_window_shape_the_plan() {
    let f = fixture("3.10/small");
    let all = dry_run_json(
        &f.dir,
        "node0",
        &["--min-age", "0", "--window", "1d", "--writer-reach", "0"],
    );
    let recent = dry_run_json(
        &f.dir,
        "node0",
        &["--min-age", "2d", "--window", "1d", "--writer-reach", "0"],
    );
    let ten = dry_run_json(&f.dir, "node0", &["--min-age", "0", "--window", "10m"]);
    let groups = |v: &Value| -> usize {
        v["nodes"][0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["groups"].as_array().unwrap().len())
            .sum()
    };
    let merged_files = |v: &Value| -> usize {
        v["nodes"][0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["groups"].as_array().unwrap())
            .map(|g| g["inputs"].as_array().unwrap().len())
            .sum()
    };
    // Three days of data: every table has three day windows to merge without min-age.
    assert_eq!(groups(&all), 9);
    assert!(merged_files(&recent) < merged_files(&all));
    // cpu has 432 ten-minute windows, each with two or more files.
    let cpu = ten["nodes"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["files_now"] == 898)
        .unwrap();
    assert_eq!(cpu["groups"].as_array().unwrap().len(), 432);
    assert_eq!(cpu["files_after"], 432);
    assert_eq!(cpu["exceeds_limit_now"], true);
    assert_eq!(cpu["exceeds_limit_after"], false);
    for t in all["nodes"][0]["tables"].as_array().unwrap() {
        for g in t["groups"].as_array().unwrap() {
            let p = g["output_path"].as_str().unwrap();
            assert!(
                p.starts_with("node0/dbs/") && p.contains("/kompactor-1d-"),
                "{p}"
            );
        }
    }
}

/// Runs a failing command and checks its message and that nothing changed.
fn assert_refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = listing(dir);
    let out = kompactor(args);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in: {msg}");
    }
    assert_eq!(listing(dir), before, "a refused run changed the data dir");
}

fn small_copy() -> tempfile::TempDir {
    let f = fixture("3.8.3/small");
    copy_fixture(&f)
}

#[test]
fn missing_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_refused(
        tmp.path(),
        &[missing.to_str().unwrap(), "--hosts", "node0", "--dry-run"],
        &["nope", "does not exist"],
    );
}

#[test]
fn unknown_host_lists_the_hosts() {
    let copy = small_copy();
    let d = copy.path().to_str().unwrap();
    assert_refused(
        copy.path(),
        &[d, "--hosts", "node9", "--dry-run"],
        &["no node `node9`", "nodes found: node0"],
    );
}

#[test]
fn truncated_snapshot_is_refused_with_its_name() {
    let copy = small_copy();
    let snaps = copy.path().join("node0/snapshots");
    let first = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    let d = copy.path().to_str().unwrap();
    let name = first.file_name().unwrap().to_str().unwrap().to_string();
    assert_refused(
        copy.path(),
        &[d, "--hosts", "node0", "--dry-run"],
        &[&name, "truncated"],
    );
    std::fs::write(&first, b"{ not json").unwrap();
    assert_refused(
        copy.path(),
        &[d, "--hosts", "node0", "--dry-run"],
        &[&name, "not a valid snapshot JSON"],
    );
}

#[test]
fn truncated_checkpoint_is_refused_with_its_name() {
    let copy = copy_fixture(&fixture("3.10/small"));
    let months = copy.path().join("node0/snapshot-checkpoints");
    let checkpoint = walkdir::WalkDir::new(&months)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .find(|p| p.to_string_lossy().ends_with(".checkpoint.json"))
        .expect("the fixture has a checkpoint");
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    let d = copy.path().to_str().unwrap();
    let name = checkpoint
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_refused(
        copy.path(),
        &[d, "--hosts", "node0", "--dry-run"],
        &[&name, "not a valid snapshot checkpoint", "truncated"],
    );
}

#[test]
fn unknown_snapshot_version_is_refused() {
    let copy = small_copy();
    let snaps = copy.path().join("node0/snapshots");
    let first = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let text_ = std::fs::read_to_string(&first).unwrap().replacen(
        "\"version\": \"1\"",
        "\"version\": \"7\"",
        1,
    );
    std::fs::write(&first, text_).unwrap();
    let d = copy.path().to_str().unwrap();
    assert_refused(
        copy.path(),
        &[d, "--hosts", "node0", "--dry-run"],
        &["snapshot version \"7\"", "upgrade kompactor"],
    );
}

#[test]
fn unreadable_parquet_footer_is_left_to_verify_and_the_merge() {
    // The dry run reads the metadata alone (a deep history has millions of footers); `verify`
    // reads every footer and names the file (a run skips its window: tests/crash.rs).
    let copy = small_copy();
    // The oldest cpu window is always planned with --min-age 0.
    let plan = dry_run_json(copy.path(), "node0", &["--min-age", "0"]);
    let victim = plan["nodes"][0]["tables"][0]["groups"][0]["inputs"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let p = copy.path().join(&victim);
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    // Keep the size (so the metadata still matches) but destroy the footer.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 16], len - 16).unwrap();
    drop(f);
    let d = copy.path().to_str().unwrap();
    let before = listing(copy.path());
    let again = dry_run_json(copy.path(), "node0", &["--min-age", "0"]);
    assert_eq!(
        again["nodes"][0]["tables"][0]["groups"][0]["inputs"][0]["path"],
        victim
    );
    let out = kompactor(&["verify", d, "--hosts", "node0"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    for needle in [victim.as_str(), "unreadable Parquet footer"] {
        assert!(text(&out).contains(needle), "{needle}: {}", text(&out));
    }
    assert_eq!(listing(copy.path()), before);
}

#[test]
fn compaction_without_dry_run_is_not_confused_with_a_plan() {
    // Flags that make no sense together are rejected by the parser, changing nothing.
    let copy = small_copy();
    let d = copy.path().to_str().unwrap();
    let before = listing(copy.path());
    let out = kompactor(&[d, "--hosts", "node0", "--dry-run", "--verbose", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(listing(copy.path()), before);
}

/// Builds a small data dir in the alpha or 3.0 snapshot shape (`docs/on-disk-format.md`,
/// section 1) from real files of the 3.0.3 fixture: the oldest six snapshots, rewritten by hand.
pub fn handmade(alpha: bool) -> tempfile::TempDir {
    let f = fixture("3.0.3/small");
    let tmp = tempfile::tempdir().unwrap();
    let src = f.dir.join("node0/snapshots");
    let mut snaps: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    snaps.sort();
    let oldest: Vec<_> = snaps.iter().rev().take(6).collect();
    std::fs::create_dir_all(tmp.path().join("node0/snapshots")).unwrap();
    for p in oldest {
        let mut v: Value = read_json(p);
        for db in v["databases"].as_array().unwrap() {
            for t in db[1]["tables"].as_array().unwrap() {
                for file in t[1].as_array().unwrap() {
                    let rel = file["path"].as_str().unwrap();
                    let to = tmp.path().join(rel);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(f.dir.join(rel), to).unwrap();
                }
            }
        }
        if alpha {
            let o = v.as_object_mut().unwrap();
            o.shift_remove("version");
            let node = o.shift_remove("node_id").unwrap();
            let mut m = serde_json::Map::new();
            m.insert("writer_id".into(), node);
            for (k, x) in o.iter() {
                m.insert(k.clone(), x.clone());
            }
            m.insert("next_db_id".into(), 3.into());
            m.insert("next_table_id".into(), 4.into());
            m.insert("next_column_id".into(), 40.into());
            v = Value::Object(m);
        }
        std::fs::write(
            tmp.path()
                .join("node0/snapshots")
                .join(p.file_name().unwrap()),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
    }
    tmp
}

#[test]
fn handmade_alpha_and_3_0_snapshots_are_planned() {
    for (alpha, gen) in [(true, "alpha"), (false, "3.0-3.1")] {
        let dir = handmade(alpha);
        let before = listing(dir.path());
        let plan = dry_run_json(
            dir.path(),
            "node0",
            &["--min-age", "0", "--window", "1d", "--writer-reach", "0"],
        );
        assert_eq!(plan["nodes"][0]["generation"], gen);
        assert_eq!(plan["nodes"][0]["snapshots"], 6);
        let files: u64 = plan["nodes"][0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["files_now"].as_u64().unwrap())
            .sum();
        let on_disk = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count();
        assert_eq!(files as usize, on_disk);
        assert!(plan["nodes"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] != "unreferenced"));
        assert_eq!(listing(dir.path()), before);
    }
}

#[test]
fn windows_too_recent_to_merge_whole_are_merged_in_finer_tiers() {
    let f = fixture("3.10/small");
    // 1d windows, with the writers' reach set aside: the newest hour of each table left alone.
    let plan = dry_run_json(&f.dir, "node0", &["--window", "1d", "--writer-reach", "0"]);
    for t in plan["nodes"][0]["tables"].as_array().unwrap() {
        assert_eq!(t["exceeds_limit_after"], false, "{}", t["label"]);
        assert!(t["limit_after_reason"].is_null(), "{}", t["label"]);
        let cutoff = t["min_age_cutoff"].as_i64().unwrap();
        let mut widths = std::collections::BTreeSet::new();
        for g in t["groups"].as_array().unwrap() {
            let (start, end) = (
                g["window_start"].as_i64().unwrap(),
                g["window_end"].as_i64().unwrap(),
            );
            widths.insert(end - start);
            let newest = g["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["max_time"].as_i64().unwrap())
                .max()
                .unwrap();
            assert!(
                newest <= cutoff,
                "{}: a group holds data newer than --min-age",
                t["label"]
            );
        }
        // Old days whole; the newest day in hours, and its last hour in ten-minute windows.
        let (day, hour, ten) = (
            86_400_000_000_000i64,
            3_600_000_000_000i64,
            600_000_000_000i64,
        );
        assert!(
            widths.contains(&day) && widths.contains(&hour),
            "{}: {widths:?}",
            t["label"]
        );
        assert!(
            widths.iter().all(|w| [day, hour, ten].contains(w)),
            "{widths:?}"
        );
        // Only the newest hour is left as the server wrote it.
        for k in t["skipped"].as_array().unwrap() {
            assert!(k["window_start"].as_i64().unwrap() + ten > cutoff, "{k}");
        }
    }
}
