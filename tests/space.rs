//! Disk space: a run that cannot fit is refused before anything changes, and one that runs
//! out anyway fails cleanly, says how much it needed, and is recovered by the next run.
//! Needs root (a small tmpfs is mounted); without it the tests say so and skip.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(bytes: u64) -> Option<(tempfile::TempDir, Tmpfs)> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("space tests skipped: cannot mount a tmpfs here (they need root)");
            return None;
        }
        let path = dir.path().to_path_buf();
        Some((dir, Tmpfs(path)))
    }

    fn resize(&self, bytes: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn du(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The fixture copied into `dir`, and the run's own estimate of what it needs.
fn prepare(dir: &Path) -> (String, u64) {
    let f = fixture("3.10/small");
    let st = Command::new("cp").arg("-a").arg(f.dir.join("node0")).arg(dir).status().unwrap();
    assert!(st.success());
    let d = dir.to_str().unwrap().to_string();
    let out = kompactor(&[&d, "--hosts", "node0", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (d, plan["space"]["total"].as_u64().unwrap())
}

#[test]
fn a_run_without_the_space_it_needs_is_refused_before_it_starts() {
    let size = du(&fixture("3.10/small").dir.join("node0"));
    // Room for the node and a little more, far less than the run needs.
    let Some((_dir, fs)) = Tmpfs::mount(size + (size / 10).max(600 << 10)) else { return };
    let (d, needed) = prepare(&fs.0);
    let before = listing(&fs.0);
    let out = kompactor(&[&d, "--hosts", "node0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("not enough disk space") && msg.contains("free on"), "{msg}");
    assert!(needed > 0);
    assert_eq!(listing(&fs.0), before, "the refused run changed the data dir");
}

#[test]
fn a_disk_that_fills_up_during_the_run_fails_cleanly_and_is_recovered() {
    let size = du(&fixture("3.10/small").dir.join("node0"));
    let Some((_dir, fs)) = Tmpfs::mount(size + (size / 10).max(600 << 10)) else { return };
    let (d, needed) = prepare(&fs.0);
    let before = listing(&fs.0);
    // The preflight is told the space is there; the writes find out it is not.
    let out = Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args([&d, "--hosts", "node0"])
        .env("KOMPACTOR_FAILPOINT", "skip-space-check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("is full") && msg.contains("needed about"), "{msg}");
    let nodes_before: Vec<_> = before.iter().filter(|(k, _)| k.starts_with("node0")).collect();
    let nodes_after = listing(&fs.0);
    let nodes_after: Vec<_> = nodes_after.iter().filter(|(k, _)| k.starts_with("node0")).collect();
    assert_eq!(nodes_after, nodes_before, "the failed run changed the node");
    // With room, the next run recovers what is left and compacts.
    fs.resize(size + needed * 2 + (8 << 20));
    let out = kompactor(&[&d, "--hosts", "node0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_answers_match(&fixture("3.10/small"), &fs.0);
}
