//! `kompactor delete` without a server: what it leaves, read back through the metadata, on
//! every fixture; what it refuses; and that its dry run changes nothing. The real server's
//! answers after a delete are checked in `tests/real_server.rs` (`delete_*`).

mod common;

use common::*;
use kompactor::format::ids::TableKey;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The key of `metrics.cpu` in a fixture's node.
fn cpu(f: &Fixture, node: &str) -> TableKey {
    *table_names(f, node)
        .iter()
        .find(|(_, (db, t))| db == "metrics" && t == "cpu")
        .unwrap()
        .0
}

fn delete(dir: &Path, nodes: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["delete", dir.to_str().unwrap(), "--hosts", nodes];
    all.extend(args);
    kompactor(&all)
}

#[test]
fn deleting_hosts_leaves_every_other_row_on_every_fixture() {
    for f in fixtures() {
        let copy = copy_fixture(&f);
        let nodes = f.nodes();
        let key = cpu(&f, &nodes[0]);
        let (db, table) = (key.db.to_string(), key.table.to_string());
        let args = [
            "--database",
            &db,
            "--table",
            &table,
            "--all-time",
            "--where",
            "host LIKE '%h1'",
            "--ignore-wal",
            "--json",
        ];
        let before = listing(copy.path());
        let same = |a: &BTreeMap<String, (String, std::time::SystemTime)>| *a == before;
        let dry = delete(
            copy.path(),
            &nodes.join(","),
            &[&args[..], &["--dry-run"]].concat(),
        );
        assert!(dry.status.success(), "{}: {}", f.name, text(&dry));
        assert!(
            same(&listing(copy.path())),
            "{}: the dry run changed something",
            f.name
        );
        let run = delete(copy.path(), &nodes.join(","), &args);
        assert!(run.status.success(), "{}: {}", f.name, text(&run));
        let (dry, run): (Value, Value) = (
            serde_json::from_slice(&dry.stdout).unwrap(),
            serde_json::from_slice(&run.stdout).unwrap(),
        );
        assert_dry_run_counted_the_delete(&dry, &run, &f.name);
        // Read back: every row of every table as before, but cpu's rows of the hosts h1.
        for node in &nodes {
            let names = table_names(&f, node);
            for (k, (rows, types)) in read_through_metadata(copy.path(), node) {
                let (db, table) = &names[&k];
                let mut want = expected_rows(&f, node, db, table, &types);
                if k == key {
                    want.retain(|l| {
                        !l.split(',')
                            .any(|c| c.starts_with("host=\"") && c.ends_with("h1\""))
                    });
                }
                if rows != want {
                    let missing: Vec<_> =
                        want.iter().filter(|w| !rows.contains(w)).take(3).collect();
                    let extra: Vec<_> = rows.iter().filter(|r| !want.contains(r)).take(3).collect();
                    panic!(
                        "{}: {node} {db}.{table}: {} rows, {} expected\nmissing: {missing:#?}\nextra: {extra:#?}",
                        f.name,
                        rows.len(),
                        want.len()
                    );
                }
            }
        }
        let out = kompactor(&[
            "verify",
            copy.path().to_str().unwrap(),
            "--hosts",
            &nodes.join(","),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}: {}", f.name, text(&out));
    }
}

#[test]
fn an_overwritten_point_goes_with_every_version() {
    // The 3.10 fixture's first `inv` overwrite: the server shows the original values, and a
    // later file holds another version. Deleting the point must remove both.
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let (t, tags, cond) = first_invisible_overwrite(&f);
    let key = cpu(&f, "node0");
    let (db, table, lo, hi) = (
        key.db.to_string(),
        key.table.to_string(),
        t.to_string(),
        (t + 1).to_string(),
    );
    let out = delete(
        copy.path(),
        "node0",
        &[
            "--database",
            &db,
            "--table",
            &table,
            "--min-time",
            &lo,
            "--max-time",
            &hi,
            "--where",
            &cond,
            "--ignore-wal",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["nodes"][0]["rows_deleted"], 1, "{r}");
    assert!(
        r["nodes"][0]["versions_removed"].as_u64().unwrap() >= 2,
        "{r}"
    );
    let (rows, _) = &read_through_metadata(copy.path(), "node0")[&key];
    let host = format!("host={:?}", tags["host"].as_str().unwrap());
    let cpu_tag = format!("cpu={:?}", tags["cpu"].as_str().unwrap());
    let time = chrono::DateTime::from_timestamp(t / 1_000_000_000, (t % 1_000_000_000) as u32)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    assert!(
        !rows.iter().any(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cells.contains(&host.as_str()) && cells.contains(&cpu_tag.as_str()) && l.contains(&time)
        }),
        "a version of the deleted point is still there"
    );
}

#[test]
fn bad_requests_exit_2_and_change_nothing() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let d = copy.path();
    let before = node_files(d);
    let key = cpu(&f, "node0");
    let (db, table) = (key.db.to_string(), key.table.to_string());
    let base = [
        "--database",
        db.as_str(),
        "--table",
        table.as_str(),
        "--ignore-wal",
    ];
    let cases: [(&[&str], &str); 8] = [
        (&[], "time scope"),
        (
            &[
                "--min-time",
                "2026-11-18T00:00:00Z",
                "--max-time",
                "2026-11-17T00:00:00Z",
            ],
            "not before",
        ),
        (&["--all-time", "--where", "nosuchcolumn = 1"], "columns"),
        (
            &["--all-time", "--where", "host = = 'x'"],
            "not a condition",
        ),
        (&["--all-time", "--where", "  "], "empty"),
        (&["--all-time", "--where", "usage_user"], "not a condition"),
        (&["--min-time", "yesterday"], "not a time"),
        (
            &["--all-time", "--where", "host = 'a'; DROP TABLE x"],
            "one expression",
        ),
    ];
    for (extra, says) in cases {
        let out = delete(d, "node0", &[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{extra:?}: {}", text(&out));
    }
    for (db, table, says) in [
        ("nosuchdb", table.as_str(), "its tables"),
        (db.as_str(), "nosuch", "its tables"),
    ] {
        let out = delete(
            d,
            "node0",
            &[
                "--database",
                db,
                "--table",
                table,
                "--all-time",
                "--ignore-wal",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    // A `;` inside a quoted value is part of the value, not a second statement.
    let out = delete(
        d,
        "node0",
        &[
            &base[..],
            &["--all-time", "--where", "host = 'a;b'", "--dry-run"],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The WAL holds rows the delete cannot see: refused unless told.
    let out = delete(
        d,
        "node0",
        &["--database", &db, "--table", &table, "--all-time"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("WAL"), "{}", text(&out));
    assert!(node_files(d) == before, "a refused delete changed a node");
}

#[test]
fn tables_are_named_by_the_catalog_or_the_paths_where_the_node_has_them() {
    // 3.0.3 and 3.5.0 name them in the Parquet paths and their catalogs, 3.8.3 in its JSON
    // catalog, 3.10 in its binary one; no names.json anywhere.
    for name in ["3.0.3/small", "3.5.0/small", "3.8.3/small", "3.10/small"] {
        let f = fixture(name);
        let copy = copy_fixture(&f);
        let out = kompactor(&["status", copy.path().to_str().unwrap(), "--hosts", "node0"]);
        let t = text(&out);
        for label in ["metrics.cpu", "metrics.mem", "events.log"] {
            assert!(t.contains(label), "{name}: {t}");
        }
        let out = delete(
            copy.path(),
            "node0",
            &[
                "--database",
                "metrics",
                "--table",
                "mem",
                "--min-time",
                "2099-01-01T00:00:00Z",
                "--ignore-wal",
                "--dry-run",
            ],
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
}
