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

/// Moves a file (a rename, so on one file system) and makes both directories durable.
pub fn move_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        create_dir_all(parent)?;
    }
    fs::rename(from, to).map_err(|e| {
        Error::io(from, &format!("move to {}", to.display()), e)
            .hint("kompactor's state dir must be on the same file system as the data dir")
    })?;
    fsync_dir(to.parent().expect("has parent"))?;
    fsync_dir(from.parent().expect("has parent"))
}
