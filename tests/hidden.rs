//! Data beyond the server's load window: measured, left alone by default, and merged back
//! into view with `--include-hidden`. The fixtures' load windows are made small with
//! `--load-window` (what an operator passes for a server run with a short
//! `--gen1-lookback-duration`), so that real data falls outside them.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const WINDOW: usize = 40;

fn run_json(args: &[&str]) -> Value {
    let out = kompactor(args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The sum of a per-table count over the first node of a `--json` document.
fn table_sum(doc: &Value, field: &str) -> u64 {
    doc["nodes"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_u64().unwrap())
        .sum()
}

fn rows(dir: &Path, node: &str) -> Vec<(String, Vec<String>)> {
    read_through_metadata_with(dir, node, Some(WINDOW))
        .into_iter()
        .map(|(k, (rows, _))| (k.to_string(), rows))
        .collect()
}

#[test]
fn hidden_data_is_shown_and_left_alone_by_default() {
    for name in ["3.5.0/small", "3.0.3/small"] {
        let f = fixture(name);
        let copy = copy_fixture(&f);
        let d = copy.path().to_str().unwrap();
        let w = WINDOW.to_string();
        let status = run_json(&[
            "status",
            d,
            "--hosts",
            "node0",
            "--json",
            "--load-window",
            &w,
        ]);
        let hidden = table_sum(&status, "hidden_files");
        assert!(hidden > 100, "{name}: {hidden} hidden files");
        let plan = run_json(&[
            d,
            "--hosts",
            "node0",
            "--dry-run",
            "--json",
            "--load-window",
            &w,
            "--min-age",
            "0",
        ]);
        let revived = table_sum(&plan, "files_revived");
        assert_eq!(revived, 0, "{name}: the default plan revives nothing");

        let before = rows(copy.path(), "node0");
        run_json(&[
            d,
            "--hosts",
            "node0",
            "--json",
            "--load-window",
            &w,
            "--min-age",
            "0",
        ]);
        assert_eq!(
            rows(copy.path(), "node0"),
            before,
            "{name}: the rows a server with this load window sees changed"
        );
    }
}

#[test]
fn include_hidden_brings_every_row_back_into_view() {
    for name in ["3.5.0/small", "3.0.3/small"] {
        let f = fixture(name);
        let copy = copy_fixture(&f);
        let d = copy.path().to_str().unwrap();
        let w = WINDOW.to_string();
        let plan = run_json(&[
            d,
            "--hosts",
            "node0",
            "--dry-run",
            "--json",
            "--load-window",
            &w,
            "--min-age",
            "0",
            "--include-hidden",
        ]);
        let revived = table_sum(&plan, "files_revived");
        let hidden = table_sum(&plan, "hidden_files");
        assert_eq!(revived, hidden, "{name}: every hidden file is planned");

        let report = run_json(&[
            d,
            "--hosts",
            "node0",
            "--json",
            "--load-window",
            &w,
            "--min-age",
            "0",
            "--include-hidden",
        ]);
        let back = table_sum(&report, "files_revived");
        assert_eq!(back, hidden, "{name}: files revived");
        // Every row the fixture's files hold, as the server with its whole history answers.
        let names = table_names(&f, "node0");
        let got = read_through_metadata_with(copy.path(), "node0", Some(WINDOW));
        assert_eq!(got.len(), names.len(), "{name}: tables");
        for (key, (rows, types)) in got {
            let (db, table) = &names[&key];
            let want = expected_rows(&f, "node0", db, table, &types);
            assert!(
                rows == want,
                "{name}: {db}.{table}: {} rows read back, {} expected",
                rows.len(),
                want.len()
            );
        }
        // Nothing is hidden any more.
        let status = run_json(&[
            "status",
            d,
            "--hosts",
            "node0",
            "--json",
            "--load-window",
            &w,
        ]);
        for t in status["nodes"][0]["tables"].as_array().unwrap() {
            assert_eq!(t["hidden_files"], 0, "{name}: {t}");
        }
    }
}

#[test]
fn verify_finds_hidden_files_the_table_index_lists_and_reports_one_deleted() {
    let f = fixture("3.5.0/small");
    let copy = copy_fixture(&f);
    let d = copy.path().to_str().unwrap();
    let w = WINDOW.to_string();
    let verify = || kompactor(&["verify", d, "--hosts", "node0", "--load-window", &w]);
    let v = verify();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));

    // A file only the oldest snapshot lists: hidden by the window, named by the table index.
    let node =
        kompactor::pipeline::discover::discover_node_with(copy.path(), "node0", Some(WINDOW))
            .unwrap();
    let hidden = node
        .hidden
        .values()
        .flatten()
        .next()
        .expect("a hidden file");
    let path = hidden.path.to_string();
    let indexed = index_files(copy.path(), "node0")
        .iter()
        .any(|p| std::fs::read_to_string(p).unwrap().contains(&path));
    assert!(indexed, "the table index lists {path}");
    std::fs::remove_file(copy.path().join(&path)).unwrap();

    let v = verify();
    assert_eq!(v.status.code(), Some(4), "{}", text(&v));
    let want = format!("lists file {} which does not exist: {path}", hidden.id);
    assert!(
        text(&v).contains(&want),
        "wanted {want:?} in:\n{}",
        text(&v)
    );
}
