//! The generated data dirs: each written once per generator options and generator source,
//! then reused, and the copies the measured runs work on (the dataset itself is never run on).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use xxhash_rust::xxh3::Xxh3;

/// The generator's sources: hashed into each dataset's name, so that a changed generator
/// writes a dataset of its own rather than being measured on the old one's output.
const GENERATOR_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/kompactor-gen");

/// The node every dataset holds.
pub const NODE: &str = "node0";

/// Where datasets and scratch copies live: `given`, else ~/.cache/kompactor-bench (created).
pub fn bench_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or("HOME is not set: give --dir (or BENCH_DIR)")?,
        )
        .join(".cache/kompactor-bench"),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The dataset `<dir>/<name>-g<hash of the generator>` written by `kompactor-gen` with
/// `gen_args`: generated unless a complete one exists (or `regen`), then returned.
pub fn ensure(dir: &Path, name: &str, gen_args: &[String], regen: bool) -> Result<PathBuf, String> {
    let hash = tree_hash(Path::new(GENERATOR_SRC))?;
    let ds = dir.join(format!("{name}-g{hash}"));
    // Written last: a dataset whose generation was interrupted is not reused.
    let complete = PathBuf::from(format!("{}.complete", ds.display()));
    if !regen && complete.exists() {
        println!("== reusing {}", ds.display());
        return Ok(ds);
    }
    for p in [&complete, &ds] {
        remove(p)?;
    }
    println!("== generating {}", ds.display());
    let gen = crate::sibling("kompactor-gen")?;
    let started = Instant::now();
    let status = Command::new(&gen)
        .arg(&ds)
        .args(["--node", NODE])
        .args(gen_args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", gen.display()))?;
    if !status.success() {
        return Err(format!(
            "kompactor-gen failed ({status}) writing {}",
            ds.display()
        ));
    }
    sync();
    std::fs::write(&complete, b"").map_err(|e| format!("{}: {e}", complete.display()))?;
    println!("   generated in {:.0} s", started.elapsed().as_secs_f64());
    Ok(ds)
}

/// The part of a dataset's name that says how it was generated: the generator's arguments
/// with every run of other characters than ASCII letters and digits made one `_`.
pub fn args_key(gen_args: &[String]) -> String {
    let mut key = String::new();
    for c in gen_args.join(" ").chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c);
        } else if !key.ends_with('_') {
            key.push('_');
        }
    }
    key
}

/// A 10-hex-digit hash of every file under `root`: their paths relative to it and contents.
fn tree_hash(root: &Path) -> Result<String, String> {
    let mut h = Xxh3::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry
            .map_err(|e| format!("{}: {e} (hashing the generator's sources)", root.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let bytes =
            std::fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        // Lengths first, so that no two different trees hash the same bytes.
        for part in [rel.to_string_lossy().as_bytes(), &bytes] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    Ok(format!("{:016x}", h.digest())[..10].to_string())
}

/// A copy of `from` at `to` (which must not exist): `cp -a`, or hard links with `cp -al`;
/// then everything written so far is flushed, so that no run pays for an earlier one's writes.
pub fn copy(from: &Path, to: &Path, hard_links: bool) -> Result<(), String> {
    let status = Command::new("cp")
        .arg(if hard_links { "-al" } else { "-a" })
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cannot start cp: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cp {} {} failed ({status})",
            from.display(),
            to.display()
        ));
    }
    sync();
    Ok(())
}

/// Removes `path`, a directory or a file, if it exists.
pub fn remove(path: &Path) -> Result<(), String> {
    let r = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    r.map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

/// Flushes every file system's dirty pages to disk.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Removes a directory when dropped: the scratch copies, whatever happens to the runs.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_keeps_letters_and_digits() {
        let args: Vec<String> = ["--rows", "1000000", "--dbs", "1", "--window", "1h"]
            .map(String::from)
            .to_vec();
        assert_eq!(args_key(&args), "_rows_1000000_dbs_1_window_1h");
    }

    #[test]
    fn the_hash_follows_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        file("main.rs", "fn main() {}");
        file("sub/a.rs", "x");
        let first = tree_hash(dir.path()).unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(tree_hash(dir.path()).unwrap(), first);
        file("sub/a.rs", "y");
        let changed = tree_hash(dir.path()).unwrap();
        assert_ne!(changed, first);
        std::fs::rename(dir.path().join("sub/a.rs"), dir.path().join("sub/b.rs")).unwrap();
        assert_ne!(tree_hash(dir.path()).unwrap(), changed);
    }
}
