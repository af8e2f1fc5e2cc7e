//! Disk space: a run that cannot fit is refused before anything changes, and one that runs
//! out anyway fails cleanly, says how much it needed, and is recovered by the next run.
//! Needs root (a small tmpfs is mounted); without it the tests fail, unless the run opts out
//! (`KOMPACTOR_TESTS_SKIP=root`, see `tests/common/prereq.rs`).

mod common;

use common::prereq;
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
            let test = std::thread::current().name().unwrap_or("test").to_string();
            prereq::missing(&test, prereq::Need::Root, "mounting a tmpfs (root)");
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

/// Bytes in use on the filesystem holding `dir`.
fn used(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=used"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A tmpfs holding a copy of the 3.10 fixture, shrunk to leave `room(needed)` bytes free;
/// with the run's own estimate of what it needs.
fn small_disk(room: impl Fn(u64) -> u64) -> Option<(tempfile::TempDir, Tmpfs, String, u64)> {
    let (dir, fs) = Tmpfs::mount(256 << 20)?;
    let f = fixture("3.10/small");
    let st = Command::new("cp")
        .arg("-a")
        .arg(f.dir.join("node0"))
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(st.success());
    let d = fs.0.to_str().unwrap().to_string();
    let out = kompactor(&[&d, "--hosts", "node0", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let needed = plan["space"]["total"].as_u64().unwrap();
    assert!(needed > 1 << 20, "{needed}");
    let size = (used(&fs.0) + room(needed)).div_ceil(4096) * 4096;
    fs.resize(size);
    Some((dir, fs, d, needed))
}

#[test]
fn a_run_without_the_space_it_needs_is_refused_before_it_starts() {
    let Some((_dir, fs, d, _)) = small_disk(|needed| needed / 2) else {
        return;
    };
    let _ran = prereq::RanToEnd::here();
    let before = node_files(&fs.0);
    let out = kompactor(&[&d, "--hosts", "node0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("not enough disk space") && msg.contains("free on"),
        "{msg}"
    );
    assert_eq!(node_files(&fs.0), before, "the refused run changed a node");
}

#[test]
fn a_disk_that_fills_up_during_the_run_fails_cleanly_and_is_recovered() {
    // Half a MiB: less than the outputs alone (about 0.7 MiB here), whatever the estimate says.
    let Some((_dir, fs, d, needed)) = small_disk(|_| 512 << 10) else {
        return;
    };
    let _ran = prereq::RanToEnd::here();
    let nodes = |dir: &Path| -> Vec<_> {
        listing(dir)
            .into_iter()
            .filter(|(k, _)| k.starts_with("node0"))
            .collect()
    };
    let before = nodes(&fs.0);
    // The preflight is told the space is there; the writes find out it is not.
    let out = Command::new(env!("CARGO_BIN_EXE_kompactor"))
        .args([&d, "--hosts", "node0"])
        .env("KOMPACTOR_FAILPOINT", "skip-space-check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("is full") && msg.contains("needed about"),
        "{msg}"
    );
    assert_eq!(nodes(&fs.0), before, "the failed run changed the node");
    // With room, the next run compacts; the failed one was already rolled back.
    fs.resize(used(&fs.0) + needed * 2);
    let out = kompactor(&[&d, "--hosts", "node0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("recovery"), "{}", text(&out));
    assert_answers_match(&fixture("3.10/small"), &fs.0);
}
