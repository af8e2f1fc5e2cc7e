//! Crash safety: a crash at every step boundary, and kill -9 at arbitrary moments, never lose
//! or duplicate a row; the next invocation recovers; undo, purge and the interlocks.

mod common;

use common::*;
use kompactor::durable::journal::trash_name;
use kompactor::pipeline::discover::discover_node;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const GUARD: &str = "KOMPACTOR-COMMIT-IN-PROGRESS";

fn args(dir: &Path) -> Vec<String> {
    vec![
        dir.display().to_string(),
        "--hosts".into(),
        "node0".into(),
        "--window".into(),
        "1d".into(),
        "--min-age".into(),
        "0".into(),
        "--writer-reach".into(),
        "0".into(),
        "-q".into(),
    ]
}

/// The default compaction of node0 (window 1d, every window), quiet.
fn compact(dir: &Path) -> std::process::Output {
    kompactor(&args(dir).iter().map(String::as_str).collect::<Vec<_>>())
}

/// The id of the data dir's first run.
fn first_run(dir: &Path) -> std::ffi::OsString {
    std::fs::read_dir(dir.join(".kompactor/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
}

fn run_with_failpoint(dir: &Path, fp: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args(args(dir))
        .env("KOMPACTOR_FAILPOINT", fp)
        .output()
        .unwrap()
}

fn guarded(dir: &Path) -> bool {
    dir.join("node0/snapshots").join(GUARD).exists()
}

/// What a server started now would see: it refuses to start (guard), or it sees exactly the
/// fixture's data with every referenced file present at its recorded size.
fn assert_server_view_safe(f: &Fixture, dir: &Path) {
    if guarded(dir) {
        return;
    }
    let n = discover_node(dir, "node0").unwrap();
    for file in n.live.values().flatten() {
        let p = file.path.under(dir);
        assert_eq!(
            std::fs::metadata(&p).map(|m| m.len()).ok(),
            Some(file.size_bytes),
            "{}",
            file.path
        );
    }
    assert_answers_match(f, dir);
}

/// After recovery: the fixture's answers, every file present, nothing both live and trashed.
fn assert_recovered(f: &Fixture, dir: &Path) {
    assert!(!guarded(dir), "guard left after recovery");
    let n = discover_node(dir, "node0").unwrap();
    for file in n.live.values().flatten() {
        let p = file.path.under(dir);
        assert_eq!(
            std::fs::metadata(&p).map(|m| m.len()).ok(),
            Some(file.size_bytes),
            "{}",
            file.path
        );
        let trash = dir.join(".kompactor/trash");
        if trash.is_dir() {
            for run in std::fs::read_dir(&trash).unwrap().flatten() {
                assert!(
                    !run.path().join(trash_name(&file.path.to_string())).exists()
                        && !file.path.under(&run.path()).exists(),
                    "{} is live and in the trash",
                    file.path
                );
            }
        }
    }
    assert_answers_match(f, dir);
    let v = kompactor(&["verify", dir.to_str().unwrap(), "--hosts", "node0"]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

#[test]
fn a_crash_at_every_failpoint_is_recovered() {
    for name in ["3.10/small", "3.0.3/small"] {
        let f = fixture(name);
        for fp in COMPACTION_FAILPOINTS {
            let copy = copy_fixture(&f);
            let out = run_with_failpoint(copy.path(), fp);
            assert!(!out.status.success(), "{fp}: did not crash: {}", text(&out));
            assert!(
                text(&out).contains(&format!("failpoint {fp}")),
                "{fp}: {}",
                text(&out)
            );
            assert_server_view_safe(&f, copy.path());
            // A dry run reports the unfinished run and changes nothing.
            let before = listing(copy.path());
            let dry = kompactor(&[
                copy.path().to_str().unwrap(),
                "--hosts",
                "node0",
                "--dry-run",
            ]);
            assert!(dry.status.success(), "{}", text(&dry));
            assert!(text(&dry).contains("would be"), "{fp}: {}", text(&dry));
            assert_eq!(
                listing(copy.path()),
                before,
                "{fp}: the dry run changed something"
            );
            // The next run recovers, then compacts what is left.
            let again = compact(copy.path());
            assert!(again.status.success(), "{name} {fp}: {}", text(&again));
            assert_recovered(&f, copy.path());
        }
    }
}

#[test]
fn recovery_interrupted_again_is_recovered() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    // The first metadata write crashes, and so does its redo during recovery.
    for _ in 0..2 {
        let out = run_with_failpoint(copy.path(), "after-metadata-write");
        assert!(!out.status.success());
        assert!(guarded(copy.path()));
    }
    let out = compact(copy.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("finished"), "{}", text(&out));
    assert_recovered(&f, copy.path());
    // Recovering once more changes nothing.
    let before = listing(copy.path());
    let out = compact(copy.path());
    assert!(out.status.success());
    let after = listing(copy.path());
    assert_eq!(before.len(), after.len());
}

#[test]
fn kill_9_at_arbitrary_moments_is_recovered() {
    let f = fixture("3.10/small");
    for delay_ms in [20u64, 90, 200, 350, 550, 800, 1100] {
        let copy = copy_fixture(&f);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kompactor"))
            .args(args(copy.path()))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_server_view_safe(&f, copy.path());
        let again = compact(copy.path());
        assert!(
            again.status.success(),
            "kill after {delay_ms} ms: {}",
            text(&again)
        );
        assert_recovered(&f, copy.path());
    }
}

/// Files under the node dirs with their content hash and mtime (directories ignored).
fn node_files(dir: &Path) -> Vec<(String, (String, std::time::SystemTime))> {
    listing(dir)
        .into_iter()
        .filter(|(k, (h, _))| !k.starts_with(".kompactor") && h != "dir")
        .collect()
}

#[test]
fn undo_restores_the_original_files_and_metadata() {
    for name in ["3.10/small", "3.0.3/small"] {
        let f = fixture(name);
        let copy = copy_fixture(&f);
        let before = node_files(copy.path());
        let out = compact(copy.path());
        assert!(out.status.success());
        let run = first_run(copy.path());
        let run = run.to_str().unwrap();
        let d = copy.path().to_str().unwrap();
        undo_ok(copy.path(), run, &["--dry-run"]);
        undo_ok(copy.path(), run, &[]);
        assert_eq!(
            node_files(copy.path()),
            before,
            "{name}: undo did not restore the node"
        );
        assert_answers_match(&f, copy.path());
        // Undoing twice is refused.
        let again = kompactor(&["undo", d, "--run", run]);
        assert_eq!(again.status.code(), Some(1));
        assert!(
            text(&again).contains("cannot be undone"),
            "{}",
            text(&again)
        );
    }
}

/// `kompactor undo <dir> --run <run> [extra]`, which must succeed.
fn undo_ok(dir: &Path, run: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["undo", dir.to_str().unwrap(), "--run", run];
    args.extend(extra);
    let out = kompactor(&args);
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// The window directories a run moved into its trash whole.
fn moved_whole(run_trash: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(run_trash)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            p.is_dir() && name.len() == 5 && name.as_bytes()[2] == b'-'
        })
        .collect()
}

/// Replaced files leave the node while its guard keeps a server away: a window directory
/// moved whole then holds only them. A directory of that name a server makes after the
/// guard went is left alone when the interrupted run is finished.
#[test]
fn trash_moves_happen_under_the_guard() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let out = run_with_failpoint(copy.path(), "after-trash-move");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        guarded(copy.path()),
        "a replaced file left the node unguarded"
    );

    let copy = copy_fixture(&f);
    let out = run_with_failpoint(copy.path(), "after-guard-removed");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!guarded(copy.path()));
    let run = first_run(copy.path());
    let run_trash = copy.path().join(".kompactor/trash").join(&run);
    let moved = moved_whole(&run_trash);
    assert!(!moved.is_empty(), "no window directory moved whole");
    // A server started now writes into one of those windows again.
    let again = copy.path().join(moved[0].strip_prefix(&run_trash).unwrap());
    std::fs::create_dir(&again).unwrap();
    std::fs::write(again.join("9999999999.parquet"), b"written after the run").unwrap();
    let out = compact(copy.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(again.join("9999999999.parquet").is_file());
    assert!(!guarded(copy.path()));
}

/// A window directory that holds anything besides replaced files (here a file the metadata
/// does not list) is not moved whole: that file stays where it was.
#[test]
fn a_window_directory_holding_another_file_keeps_it() {
    let f = fixture("3.10/small");
    let probe = copy_fixture(&f);
    assert!(compact(probe.path()).status.success());
    let run_trash = probe
        .path()
        .join(".kompactor/trash")
        .join(first_run(probe.path()));
    let moved = moved_whole(&run_trash);
    assert!(!moved.is_empty(), "no window directory moved whole");
    let window = moved[0].strip_prefix(&run_trash).unwrap().to_path_buf();

    let copy = copy_fixture(&f);
    let stray = copy.path().join(&window).join("notes.txt");
    std::fs::write(&stray, b"an operator's note").unwrap();
    assert!(compact(copy.path()).status.success());
    assert!(stray.is_file(), "{} left the node", stray.display());
    let run_trash = copy
        .path()
        .join(".kompactor/trash")
        .join(first_run(copy.path()));
    assert!(
        !moved_whole(&run_trash).contains(&run_trash.join(&window)),
        "{} was moved whole",
        window.display()
    );
    let left: Vec<_> = std::fs::read_dir(copy.path().join(&window))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "the replaced files stayed");
    assert_answers_match(&f, copy.path());
}

/// A window directory is moved to the trash whole when every file in it is replaced; undo
/// puts it back, file by file should the node have a directory of that name again.
#[test]
fn undo_puts_back_window_directories_moved_whole() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let before = node_files(copy.path());
    assert!(compact(copy.path()).status.success());
    let run = first_run(copy.path());
    let run = run.to_str().unwrap();
    let run_trash = copy.path().join(".kompactor/trash").join(run);
    let moved = moved_whole(&run_trash);
    assert!(!moved.is_empty(), "no window directory moved whole");
    let in_trash = walkdir::WalkDir::new(&run_trash)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count();
    // Something makes one of them again, empty, in the node.
    let again = copy.path().join(moved[0].strip_prefix(&run_trash).unwrap());
    assert!(!again.exists());
    std::fs::create_dir(&again).unwrap();

    let dry = undo_ok(copy.path(), run, &["--dry-run", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(doc["files_back_from_trash"].as_u64(), Some(in_trash as u64));
    undo_ok(copy.path(), run, &[]);
    assert_eq!(
        node_files(copy.path()),
        before,
        "undo did not restore the node"
    );
    assert_answers_match(&f, copy.path());
}

#[test]
fn undo_is_refused_when_the_server_wrote_since() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    assert!(compact(copy.path()).status.success());
    // A newer snapshot, as if the server had run and persisted more data.
    let snaps = copy.path().join("node0/snapshots");
    let newest = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let mut v = read_json(&newest);
    let seq = v["snapshot_sequence_number"].as_u64().unwrap() + 1;
    v["snapshot_sequence_number"] = seq.into();
    v["databases"] = serde_json::json!([]);
    v["removed_files"] = serde_json::json!([]);
    std::fs::write(
        snaps.join(format!("{:020}.info.json", u64::MAX - seq)),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    let run = first_run(copy.path());
    let before = listing(copy.path());
    let out = kompactor(&[
        "undo",
        copy.path().to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("snapshots newer"), "{}", text(&out));
    assert_eq!(listing(copy.path()), before);
}

#[test]
fn purge_removes_only_the_trash_it_names() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    assert!(compact(copy.path()).status.success());
    let d = copy.path().to_str().unwrap();
    let nodes_before = node_files(copy.path());
    // Too young: nothing to purge.
    let young = kompactor(&["purge", d, "--older-than", "1d"]);
    assert!(young.status.success());
    assert!(copy
        .path()
        .join(".kompactor/trash")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    let dry = kompactor(&["purge", d, "--older-than", "0", "--dry-run"]);
    assert!(text(&dry).contains("would delete"), "{}", text(&dry));
    assert!(copy
        .path()
        .join(".kompactor/trash")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    let out = kompactor(&["purge", d, "--older-than", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = first_run(copy.path());
    assert!(text(&out).contains(run.to_str().unwrap()));
    assert!(copy
        .path()
        .join(".kompactor/trash")
        .read_dir()
        .unwrap()
        .next()
        .is_none());
    assert_eq!(
        node_files(copy.path()),
        nodes_before,
        "purge touched a node"
    );
    let runs = kompactor(&["runs", d]);
    assert!(text(&runs).contains("purged"), "{}", text(&runs));
    let undo = kompactor(&["undo", d, "--run", run.to_str().unwrap()]);
    assert!(text(&undo).contains("purged"), "{}", text(&undo));
}

#[test]
fn a_second_kompactor_is_refused() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    std::fs::create_dir_all(copy.path().join(".kompactor")).unwrap();
    let held = std::fs::File::create(copy.path().join(".kompactor/lock")).unwrap();
    held.lock().unwrap();
    let before = listing(copy.path());
    let out = compact(copy.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("another kompactor"), "{}", text(&out));
    assert_eq!(listing(copy.path()), before);
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_running_server_is_refused() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let d = copy.path().to_str().unwrap().to_string();
    // A process that calls itself influxdb3 and names the data dir, like `influxdb3 serve`.
    let fake = Child(
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec -a influxdb3 perl -e 'sleep 60' serve --data-dir {d}"
            ))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = listing(copy.path());
    let out = compact(copy.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("in use") && text(&out).contains("influxdb3"),
        "{}",
        text(&out)
    );
    assert_eq!(listing(copy.path()), before);
    drop(fake);
    // Any other process with a file open under the data dir counts too. Detached, so that it
    // is not in kompactor's own process family (the test harness and its children).
    let snap = std::fs::read_dir(copy.path().join("node0/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let _holder = hold_open(&snap);
    std::thread::sleep(Duration::from_millis(300));
    let out = compact(copy.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("open"), "{}", text(&out));
    assert_eq!(listing(copy.path()), before);
}

/// The dry-run plan of node0 with every window eligible, as JSON.
fn plan_json(dir: &Path) -> serde_json::Value {
    let out = kompactor(&[
        dir.to_str().unwrap(),
        "--hosts",
        "node0",
        "--dry-run",
        "--json",
        "--min-age",
        "0",
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_corrupt_input_stops_only_its_window() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let plan = plan_json(copy.path());
    let victim = plan["nodes"][0]["tables"][0]["groups"][1]["inputs"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let p = copy.path().join(&victim);
    let len = std::fs::metadata(&p).unwrap().len();
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&[0u8; 16], len - 16)
        .unwrap();
    let out = compact(copy.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains(&victim), "{}", text(&out));
    let n = discover_node(copy.path(), "node0").unwrap();
    assert!(
        n.live
            .values()
            .flatten()
            .any(|x| x.path.to_string() == *victim),
        "the corrupt file is no longer live"
    );
    assert!(p.exists());
    let merged = n
        .live
        .values()
        .flatten()
        .filter(|x| x.path.contains("/kompactor-"))
        .count();
    assert_eq!(merged, 8, "the other windows were merged");
    let v = kompactor(&["verify", copy.path().to_str().unwrap(), "--hosts", "node0"]);
    assert_eq!(
        v.status.code(),
        Some(4),
        "the truncated footer is reported: {}",
        text(&v)
    );
}

#[test]
fn missing_and_resized_inputs_stop_only_their_windows() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let plan = plan_json(copy.path());
    let gone = plan["nodes"][0]["tables"][1]["groups"][0]["inputs"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let grown = plan["nodes"][0]["tables"][2]["groups"][0]["inputs"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(copy.path().join(&gone)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(copy.path().join(&grown))
        .unwrap()
        .set_len(1)
        .unwrap();
    let out = compact(copy.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("missing") && t.contains(&gone), "{t}");
    assert!(t.contains("bytes on disk") && t.contains(&grown), "{t}");
    let n = discover_node(copy.path(), "node0").unwrap();
    let merged = n
        .live
        .values()
        .flatten()
        .filter(|x| x.path.contains("/kompactor-"))
        .count();
    assert_eq!(merged, 7);
}

#[test]
fn a_write_failure_leaves_the_node_untouched() {
    // Stands in for ENOSPC: every output write fails.
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let before = node_files(copy.path());
    let out = run_with_failpoint(copy.path(), "write-output=error");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("injected fault"), "{}", text(&out));
    assert_eq!(node_files(copy.path()), before);
    assert!(
        !copy
            .path()
            .join(".kompactor/tmp")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "temporary files left"
    );
}

#[test]
fn a_written_file_that_differs_from_the_merge_is_refused() {
    let f = fixture("3.10/small");
    let copy = copy_fixture(&f);
    let before = listing(&copy.path().join("node0"));
    let out = run_with_failpoint(copy.path(), "corrupt-output");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("verification failed"), "{}", text(&out));
    // Every window failed its verification: the node is as it was.
    assert_eq!(listing(&copy.path().join("node0")), before);
    assert_answers_match(&f, copy.path());
}
