//! `status`, `verify` and the run report, checked against the servers' own figures.

mod common;

use common::*;
use kompactor::format::model::EntryRc;
use kompactor::pipeline::discover::discover_node;
use serde_json::Value;

/// A copy of the 3.10 `small` fixture, and its live files.
fn small_copy_and_live_files() -> (tempfile::TempDir, Vec<EntryRc>) {
    let tmp = copy_fixture(&fixture("influxdb3-3.10/small"));
    let n = discover_node(tmp.path(), "node0").unwrap();
    let live = n.live.values().flatten().cloned().collect();
    (tmp, live)
}

fn key_of(t: &Value) -> kompactor::format::ids::TableKey {
    kompactor::format::ids::TableKey {
        db: kompactor::format::ids::DbId(t["db_id"].as_u64().unwrap()),
        table: kompactor::format::ids::TableId(t["table_id"].as_u64().unwrap()),
    }
}

#[test]
fn status_and_verify_agree_with_every_fixture() {
    for f in fixtures() {
        let nodes = f.nodes().join(",");
        let d = f.dir.to_str().unwrap();
        let out = kompactor(&["status", d, "--hosts", &nodes, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        for (n, node) in st["nodes"].as_array().unwrap().iter().zip(f.nodes()) {
            let names = table_names(&f, &node);
            for t in n["tables"].as_array().unwrap() {
                let (db, table) = &names[&key_of(t)];
                let want = f.summary()["answers"][&node][db][table]["files"]["row"].clone();
                assert_eq!(
                    t["files"].as_u64(),
                    want["n"].as_u64(),
                    "{} {node} {db}.{table}",
                    f.name
                );
                assert_eq!(
                    t["rows_in_files"].as_u64(),
                    want["row_count"].as_u64(),
                    "{} {node} {db}.{table}",
                    f.name
                );
                assert_eq!(
                    t["bytes"].as_u64(),
                    want["size_bytes"].as_u64(),
                    "{} {node} {db}.{table}",
                    f.name
                );
                assert_eq!(
                    t["over_query_file_limit"].as_bool(),
                    Some(want["n"].as_u64().unwrap() > 432)
                );
            }
        }
        let text_out = kompactor(&["status", d, "--hosts", &nodes]);
        assert!(String::from_utf8_lossy(&text_out.stdout).contains("full-table query"));
        let v = kompactor(&["verify", d, "--hosts", &nodes]);
        assert_eq!(v.status.code(), Some(0), "{}: {}", f.name, text(&v));
    }
}

#[test]
fn verify_names_each_problem() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let n = discover_node(copy.path(), "node0").unwrap();
    let files: Vec<_> = n
        .live
        .values()
        .flatten()
        .map(|x| x.path.to_string())
        .collect();
    let (truncated, removed) = (&files[0], &files[1]);
    let p = copy.path().join(truncated);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(copy.path().join(removed)).unwrap();
    std::fs::write(copy.path().join("node0/snapshots/backup.bak"), b"{}").unwrap();
    let before = listing(copy.path());
    let out = kompactor(&["verify", copy.path().to_str().unwrap(), "--hosts", "node0"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(truncated.as_str()) && t.contains("bytes on disk"),
        "{t}"
    );
    assert!(t.contains(removed.as_str()) && t.contains("missing"), "{t}");
    assert!(
        t.contains("backup.bak") && t.contains("not a snapshot file"),
        "{t}"
    );
    assert_eq!(listing(copy.path()), before, "verify changed something");
    let js = kompactor(&[
        "verify",
        copy.path().to_str().unwrap(),
        "--hosts",
        "node0",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(v["consistent"], false);
    // The removed file is also still named by the table index: four problems in all.
    assert_eq!(
        v["nodes"][0]["problems"].as_array().unwrap().len(),
        4,
        "{v}"
    );
}

#[test]
fn the_run_report_matches_every_fixture() {
    for f in fixtures() {
        let copy = copy_fixture(&f);
        let nodes = f.nodes().join(",");
        let out = kompactor(&[
            copy.path().to_str().unwrap(),
            "--hosts",
            &nodes,
            "--min-age",
            "0",
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let run = printed["run_id"].as_str().unwrap();
        let report = read_json(
            &copy
                .path()
                .join(".kompactor/runs")
                .join(run)
                .join("report.json"),
        );
        assert_eq!(report["run_id"], printed["run_id"]);
        assert_eq!(report["format_version"], 2);
        assert!(report["started"].is_string() && report["finished"].is_string());
        assert!(report["options"]["window"].is_null());
        assert_eq!(
            report["options"]["tiers"],
            kompactor::pipeline::plan::DEFAULT_TIERS
        );
        assert!(report["options"]["writer_reach"].is_null());
        for (n, node) in report["nodes"].as_array().unwrap().iter().zip(f.nodes()) {
            let names = table_names(&f, &node);
            let after = discover_node(copy.path(), &node).unwrap();
            for t in n["tables"].as_array().unwrap() {
                let key = kompactor::format::ids::TableKey {
                    db: kompactor::format::ids::DbId(t["db_id"].as_u64().unwrap()),
                    table: kompactor::format::ids::TableId(t["table_id"].as_u64().unwrap()),
                };
                let o = t;
                let (db, table) = &names[&key];
                let want = f.summary()["answers"][&node][db][table]["files"]["row"].clone();
                assert_eq!(
                    o["files_before"].as_u64(),
                    want["n"].as_u64(),
                    "{} {db}.{table}",
                    f.name
                );
                assert_eq!(
                    o["rows_in_files_before"].as_u64(),
                    want["row_count"].as_u64(),
                    "{} {db}.{table}",
                    f.name
                );
                let live = &after.live[&key];
                assert_eq!(
                    o["files_after"].as_u64(),
                    Some(live.len() as u64),
                    "{} {db}.{table}",
                    f.name
                );
                let rows_after: u64 = live.iter().map(|x| x.row_count).sum();
                assert_eq!(o["rows_in_files_after"].as_u64(), Some(rows_after));
                let count = f.summary()["answers"][&node][db][table]["count"]["row"]["n"]
                    .as_u64()
                    .unwrap();
                assert_eq!(
                    rows_after, count,
                    "{} {db}.{table}: rows after = the deduplicated count",
                    f.name
                );
            }
        }
    }
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let f = fixture("3.10/multi");
    let dir = copy_fixture(&f);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args([dir.path().to_str().unwrap(), "--hosts", "node0,node1"])
        .args(["--dry-run", "--json", "--min-age", "0", "--window", "10m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -c 1`: read one byte, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    std::io::Read::read_exact(&mut stdout, &mut [0u8; 1]).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn progress_bars_show_on_a_terminal_only() {
    let f = fixture("3.10/small");
    let args = "--hosts node0 --min-age 0 --window 10m";
    // On a terminal (util-linux `script` gives the process one).
    let tty = copy_fixture(&f);
    let cmd = format!(
        "{} {} {args}",
        env!("CARGO_BIN_EXE_kompactor"),
        tty.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("merging") && shown.contains("rows/s"),
        "no progress bar on a terminal: {shown}"
    );
    // Piped: the same run prints only its summary.
    let piped = copy_fixture(&f);
    let out = kompactor(&[
        piped.path().to_str().unwrap(),
        "--hosts",
        "node0",
        "--min-age",
        "0",
        "--window",
        "10m",
    ]);
    assert!(out.status.success());
    let t = text(&out);
    assert!(
        !t.contains("merging") && !t.contains('\u{1b}'),
        "progress output when piped: {t}"
    );
    assert!(t.contains("committed snapshot"), "{t}");
}

#[test]
fn an_id_listed_with_two_paths_is_reported_by_verify() {
    let f = fixture("influxdb3-3.10/small");
    let tmp = copy_fixture(&f);
    // The oldest snapshot that lists a file: a checkpoint covers it and lists that file again,
    // with the path it had.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path().join("node0/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let (path, mut snap, old) = names
        .iter()
        .rev()
        .find_map(|p| {
            let snap = read_json(p);
            let first = &snap["databases"][0][1]["tables"][0][1][0]["path"];
            let old = first.as_str()?.to_string();
            Some((p.clone(), snap, old))
        })
        .expect("a snapshot lists a file");
    let moved = old.replace(".parquet", "-moved.parquet");
    snap["databases"][0][1]["tables"][0][1][0]["path"] = moved.clone().into();
    std::fs::write(&path, serde_json::to_vec(&snap).unwrap()).unwrap();

    let d = tmp.path().to_str().unwrap();
    let v = kompactor(&["verify", d, "--hosts", "node0"]);
    assert_eq!(v.status.code(), Some(4), "{}", text(&v));
    let out = text(&v);
    let mut both = [old, moved];
    both.sort();
    let want = format!("used for 2 different paths: {}, {}", both[0], both[1]);
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    assert_eq!(out.matches("different paths").count(), 1, "{out}");
}

#[test]
fn verify_reports_table_index_entries_whose_file_does_not_exist() {
    let f = fixture("influxdb3-3.10/small");
    let tmp = copy_fixture(&f);
    let index = tmp.path().join("node0/db-indices/1/0/index.info.json");
    let mut doc = read_json(&index);
    // One entry names a path that was never written; another's file is deleted from disk.
    let renamed = doc["files"][0]["path"]
        .as_str()
        .unwrap()
        .replace(".parquet", "-gone.parquet");
    doc["files"][0]["path"] = renamed.clone().into();
    let deleted = doc["files"][1]["path"].as_str().unwrap().to_string();
    std::fs::write(&index, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::remove_file(tmp.path().join(&deleted)).unwrap();

    let d = tmp.path().to_str().unwrap();
    let v = kompactor(&["verify", d, "--hosts", "node0"]);
    assert_eq!(v.status.code(), Some(4), "{}", text(&v));
    let out = text(&v);
    for (id, path) in [
        (&doc["files"][0]["id"], &renamed),
        (&doc["files"][1]["id"], &deleted),
    ] {
        let want = format!("lists file {id} which does not exist: {path}");
        assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    }
    assert_eq!(out.matches("which does not exist").count(), 2, "{out}");
}

#[test]
fn verify_reads_the_row_count_of_every_footer() {
    let (tmp, live) = small_copy_and_live_files();
    let (miscounted, damaged) = (&live[0], &live[1]);
    // Every document that lists the first file records one row more than its footer holds.
    fn add_a_row(v: &mut Value, id: u64) -> usize {
        match v {
            Value::Object(o) if o.get("id").and_then(Value::as_u64) == Some(id) => {
                let rows = o["row_count"].as_u64().unwrap();
                o["row_count"] = (rows + 1).into();
                1
            }
            Value::Object(o) => o.values_mut().map(|v| add_a_row(v, id)).sum(),
            Value::Array(a) => a.iter_mut().map(|v| add_a_row(v, id)).sum(),
            _ => 0,
        }
    }
    let mut edited = 0;
    for dir in ["snapshots", "snapshot-checkpoints"] {
        for e in walkdir::WalkDir::new(tmp.path().join("node0").join(dir)) {
            let p = e.unwrap().into_path();
            if p.is_file() {
                let mut doc = read_json(&p);
                if add_a_row(&mut doc, miscounted.id.0) > 0 {
                    std::fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
                    edited += 1;
                }
            }
        }
    }
    assert!(edited > 0);
    // The second file's footer length points before the start of the file; its size is
    // unchanged, so only its footer tells.
    let p = tmp.path().join(damaged.path.to_string());
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.len() - 8;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();

    let d = tmp.path().to_str().unwrap();
    let v = kompactor(&["verify", d, "--hosts", "node0"]);
    assert_eq!(v.status.code(), Some(4), "{}", text(&v));
    let out = text(&v);
    let want = format!(
        "file {} holds {} rows but the metadata records {}: {}",
        miscounted.id,
        miscounted.row_count,
        miscounted.row_count + 1,
        miscounted.path
    );
    assert!(out.contains(&want), "wanted {want:?} in:\n{out}");
    let want = format!("file {}: ", damaged.id);
    assert!(
        out.contains(&want) && out.contains("unreadable Parquet footer"),
        "wanted {want:?} and an unreadable footer in:\n{out}"
    );
    // A script reads both as finding objects.
    let js = kompactor(&["verify", d, "--hosts", "node0", "--json"]);
    let v: Value = serde_json::from_slice(&js.stdout).unwrap();
    let findings = v["nodes"][0]["findings"].as_array().unwrap();
    let of = |kind: &str| findings.iter().find(|f| f["kind"] == kind).cloned();
    let m = of("row_count_mismatch").expect("a row_count_mismatch finding");
    assert_eq!(m["id"], miscounted.id.0);
    assert_eq!(m["in_footer"], miscounted.row_count);
    assert_eq!(m["recorded"], miscounted.row_count + 1);
    let u = of("unreadable_footer").expect("an unreadable_footer finding");
    assert_eq!(u["id"], damaged.id.0);
    assert!(!u["error"].as_str().unwrap().contains("hint"), "{u}");
}

#[test]
fn verify_prints_a_few_lines_per_kind_however_many_files_are_damaged() {
    let (tmp, live) = small_copy_and_live_files();
    assert!(live.len() >= 8, "the fixture has enough files");
    // Eight live files deleted: each is lost, and each is still named by the table index.
    for e in &live[..8] {
        std::fs::remove_file(tmp.path().join(e.path.to_string())).unwrap();
    }
    let d = tmp.path().to_str().unwrap();
    let short = text(&kompactor(&["verify", d, "--hosts", "node0"]));
    assert!(short.contains("8 lost file(s), e.g. "), "{short}");
    assert!(
        short.contains("8 indexed but absent file(s), e.g. table index "),
        "{short}"
    );
    assert_eq!(
        short.matches("--verbose or --json lists them all").count(),
        2,
        "{short}"
    );
    assert!(short.lines().count() < 10, "{short}");
    assert!(short.contains("16 problem(s) found"), "{short}");

    let all = text(&kompactor(&["verify", d, "--hosts", "node0", "--verbose"]));
    for e in &live[..8] {
        let path = e.path.to_string();
        assert_eq!(all.matches(path.as_str()).count(), 2, "{path} in:\n{all}");
    }
    let js = kompactor(&["verify", d, "--hosts", "node0", "--json"]);
    assert_eq!(js.status.code(), Some(4));
    let v: Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(
        v["nodes"][0]["problems"].as_array().unwrap().len(),
        16,
        "{v}"
    );
    assert_eq!(
        v["nodes"][0]["findings"].as_array().unwrap().len(),
        8,
        "{v}"
    );
    // The table index's eight as objects a script reads.
    let checks = v["nodes"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 8, "{v}");
    for c in checks {
        assert_eq!(c["kind"], "table_index_names_missing_file", "{c}");
        let path = c["path"].as_str().unwrap();
        assert!(live[..8].iter().any(|e| e.path.to_string() == path), "{c}");
        assert!(
            c["index"].as_str().unwrap().ends_with("index.info.json"),
            "{c}"
        );
    }
}

#[test]
fn verify_says_why_a_table_index_file_cannot_be_read() {
    let f = fixture("influxdb3-3.10/small");
    let tmp = copy_fixture(&f);
    let index = tmp.path().join("node0/db-indices/1/0/index.info.json");
    let whole = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, &whole[..whole.len() / 2]).unwrap();
    let d = tmp.path().to_str().unwrap();
    let v = kompactor(&["verify", d, "--hosts", "node0"]);
    assert_eq!(v.status.code(), Some(4), "{}", text(&v));
    let out = text(&v);
    assert!(
        out.contains("index.info.json is not valid JSON of the expected shape: EOF while parsing"),
        "{out}"
    );
    let js = kompactor(&["verify", d, "--hosts", "node0", "--json"]);
    let v: Value = serde_json::from_slice(&js.stdout).unwrap();
    let check = &v["nodes"][0]["checks"][0];
    assert_eq!(check["kind"], "table_index_malformed", "{v}");
    assert!(
        check["error"]
            .as_str()
            .unwrap()
            .starts_with("EOF while parsing"),
        "{v}"
    );
}
