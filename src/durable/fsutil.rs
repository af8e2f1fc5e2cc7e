//! Durable file operations: every change kompactor makes goes through here.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Threads for work that mostly waits on the disk (reading millions of files or directories
/// that are not cached): more reads in flight than there are CPUs.
pub const IO_THREADS: usize = 16;

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
    // Removed when dropped, on any error below, until it is persisted under its name.
    let mut tmp = tempfile::Builder::new()
        .prefix("meta-")
        .tempfile_in(tmp_dir)
        .map_err(|e| Error::io(tmp_dir, "create a temporary file in", e))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes)
        .map_err(|e| Error::io(&tmp_path, "write", e))?;
    if let Some(t) = mtime {
        tmp.as_file()
            .set_modified(t)
            .map_err(|e| Error::io(&tmp_path, "set the modification time of", e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(&tmp_path, "fsync", e))?;
    let parent = dest.parent().expect("destination has a parent");
    create_dir_all(parent)?;
    tmp.persist(dest)
        .map_err(|e| Error::io(dest, "rename a new version into place at", e.error))?;
    fsync_dir(parent)
}

/// File changes made durable together, by `finish`: the new files, then every directory a
/// change touched, once each, with several fsyncs in flight.
///
/// A commit rewrites hundreds of small files; one fsync after another would make it wait
/// for the disk hundreds of times, while concurrent fsyncs share the file system's journal
/// commits.
#[derive(Default)]
pub struct Batch {
    files: Vec<PathBuf>,
    dirs: std::collections::BTreeSet<PathBuf>,
}

/// Concurrent fsyncs of one batch.
const FSYNCS_IN_FLIGHT: usize = 8;

/// Runs `sync` on every path, on up to `FSYNCS_IN_FLIGHT` threads; the first error wins.
fn sync_each(paths: &[PathBuf], sync: fn(&Path) -> Result<()>) -> Result<()> {
    if paths.len() < 2 {
        return paths.iter().try_for_each(|p| sync(p));
    }
    let per_thread = paths.len().div_ceil(FSYNCS_IN_FLIGHT);
    std::thread::scope(|s| {
        let threads: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(|p| sync(p))))
            .collect();
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("an fsync thread does not panic"))
    })
}

impl Batch {
    /// Writes a new file (one no reader looks at until the batch is finished) with `mtime`;
    /// `finish` makes it durable.
    pub fn write(&mut self, path: &Path, bytes: &[u8], mtime: Option<SystemTime>) -> Result<()> {
        let parent = path.parent().expect("file has a parent");
        self.ensure_dir(parent)?;
        let mut f = File::create(path).map_err(|e| Error::io(path, "create", e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(path, "write", e))?;
        if let Some(t) = mtime {
            f.set_modified(t)
                .map_err(|e| Error::io(path, "set the modification time of", e))?;
        }
        self.files.push(path.to_path_buf());
        self.dirs.insert(parent.to_path_buf());
        Ok(())
    }

    /// Adds a file written some other way (and its directory) to what `finish` makes durable.
    pub fn adopt(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
        self.dirs
            .insert(path.parent().expect("file has a parent").to_path_buf());
    }

    /// Adds the directory of a file renamed some other way, whose content is already durable,
    /// to what `finish` makes durable: its directory alone.
    pub fn adopt_moved(&mut self, path: &Path) {
        self.dirs
            .insert(path.parent().expect("file has a parent").to_path_buf());
    }

    /// Links `to` to the file at `from` (a second name for the same content and mtime).
    pub fn link(&mut self, from: &Path, to: &Path) -> Result<()> {
        let parent = to.parent().expect("file has a parent");
        self.ensure_dir(parent)?;
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
        self.move_entry(from, to, false).map(|_| ())
    }

    /// Renames `from` to `to` if `from` exists (creating `to`'s directory if needed); false
    /// when there was nothing to move.
    ///
    /// One system call per move where checking first would take two more: a commit moves
    /// hundreds of thousands of window directories while the server is stopped.
    pub fn rename_if_present(&mut self, from: &Path, to: &Path) -> Result<bool> {
        self.move_entry(from, to, true)
    }

    /// The rename behind [`Batch::rename`] and [`Batch::rename_if_present`]: with
    /// `absent_ok`, a missing `from` is no error but `Ok(false)`.
    fn move_entry(&mut self, from: &Path, to: &Path, absent_ok: bool) -> Result<bool> {
        let parent = to.parent().expect("destination has a parent");
        self.ensure_dir(parent)?;
        match fs::rename(from, to) {
            Ok(()) => {}
            Err(e) if absent_ok && e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                return Ok(false)
            }
            Err(e) => {
                return Err(Error::io(from, &format!("move to {}", to.display()), e)
                    .hint("kompactor's state dir must be on the same file system as the data dir"))
            }
        }
        self.dirs.insert(parent.to_path_buf());
        self.dirs
            .insert(from.parent().expect("source has a parent").to_path_buf());
        Ok(true)
    }

    /// Creates `dir` and its missing parents; `finish` makes the new entries durable.
    fn ensure_dir(&mut self, dir: &Path) -> Result<()> {
        // A directory the batch created or changed already exists.
        if self.dirs.contains(dir) || dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent)?;
            self.dirs.insert(parent.to_path_buf());
        }
        fs::create_dir(dir)
            .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
            .map_err(|e| Error::io(dir, "create directory", e))?;
        self.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    /// Makes every change so far durable: file contents first, then the directories.
    pub fn finish(&mut self) -> Result<()> {
        sync_each(&std::mem::take(&mut self.files), fsync_file)?;
        let dirs: Vec<PathBuf> = std::mem::take(&mut self.dirs)
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
        sync_each(&dirs, fsync_dir)
    }
}
