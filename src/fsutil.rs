//! Durable file operations: every change kompactor makes goes through here.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// Flushes a file's data and metadata to disk.
pub fn fsync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "fsync", e))
}

/// Flushes a directory, so that renames and creations in it survive a crash.
pub fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "fsync directory", e))
}

/// Creates a directory and its parents, and makes the new entries durable.
pub fn create_dir_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    fs::create_dir(path)
        .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
        .map_err(|e| Error::io(path, "create directory", e))?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically: a temporary file in `tmp_dir` (never next to `dest`,
/// since the server reads every file under `snapshots/`), fsync'd, given `mtime` if set,
/// renamed over `dest`, and the directory fsync'd.
pub fn atomic_write(
    dest: &Path,
    bytes: &[u8],
    tmp_dir: &Path,
    mtime: Option<SystemTime>,
) -> Result<()> {
    create_dir_all(tmp_dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("meta-")
        .tempfile_in(tmp_dir)
        .map_err(|e| Error::io(tmp_dir, "create a temporary file in", e))?;
    let (mut file, tmp_path) = tmp
        .keep()
        .map_err(|e| Error::new(format!("could not keep temporary file: {e}")))?;
    let result = (|| {
        file.write_all(bytes)
            .map_err(|e| Error::io(&tmp_path, "write", e))?;
        if let Some(t) = mtime {
            file.set_modified(t)
                .map_err(|e| Error::io(&tmp_path, "set the modification time of", e))?;
        }
        file.sync_all()
            .map_err(|e| Error::io(&tmp_path, "fsync", e))?;
        drop(file);
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        fs::rename(&tmp_path, dest)
            .map_err(|e| Error::io(dest, "rename a new version into place at", e))?;
        fsync_dir(dest.parent().expect("destination has a parent"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// File changes made durable together: each new file is fsync'd as it is written, and every
/// directory a change touched is fsync'd once, by `finish`, instead of once or twice per file.
#[derive(Default)]
pub struct Batch {
    dirs: std::collections::BTreeSet<std::path::PathBuf>,
}

impl Batch {
    /// Writes a new file (one no reader looks at until the batch is finished) with `mtime`.
    pub fn write(&mut self, path: &Path, bytes: &[u8], mtime: Option<SystemTime>) -> Result<()> {
        let parent = path.parent().expect("file has a parent");
        if !self.dirs.contains(parent) {
            create_dir_all(parent)?;
        }
        let mut f = File::create(path).map_err(|e| Error::io(path, "create", e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(path, "write", e))?;
        if let Some(t) = mtime {
            f.set_modified(t)
                .map_err(|e| Error::io(path, "set the modification time of", e))?;
        }
        f.sync_all().map_err(|e| Error::io(path, "fsync", e))?;
        self.dirs.insert(parent.to_path_buf());
        Ok(())
    }

    /// Links `to` to the file at `from` (a second name for the same content and mtime).
    pub fn link(&mut self, from: &Path, to: &Path) -> Result<()> {
        let parent = to.parent().expect("file has a parent");
        if !self.dirs.contains(parent) {
            create_dir_all(parent)?;
        }
        if to.exists() {
            fs::remove_file(to).map_err(|e| Error::io(to, "replace", e))?;
        }
        fs::hard_link(from, to)
            .map_err(|e| Error::io(from, &format!("link to {}", to.display()), e))?;
        self.dirs.insert(parent.to_path_buf());
        Ok(())
    }

    /// Renames `from` to `to`, creating `to`'s directory if needed.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<()> {
        let parent = to.parent().expect("destination has a parent");
        if !self.dirs.contains(parent) {
            create_dir_all(parent)?;
        }
        fs::rename(from, to).map_err(|e| {
            Error::io(from, &format!("move to {}", to.display()), e)
                .hint("kompactor's state dir must be on the same file system as the data dir")
        })?;
        self.dirs.insert(parent.to_path_buf());
        self.dirs
            .insert(from.parent().expect("source has a parent").to_path_buf());
        Ok(())
    }

    /// Makes every rename so far durable.
    pub fn finish(&mut self) -> Result<()> {
        for d in std::mem::take(&mut self.dirs) {
            if d.is_dir() {
                fsync_dir(&d)?;
            }
        }
        Ok(())
    }
}
