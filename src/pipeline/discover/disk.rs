//! The Parquet files on a node's disk, as listing its `dbs/` directory finds them.
//!
//! A deep history has millions of files. They are kept by a 128-bit fingerprint of their path
//! (XXH3-128) rather than by the path itself: a sixth of the memory, no allocation per file,
//! and a lookup compares two integers instead of two paths. The chance that two of two
//! million paths share a fingerprint is about 10^-26; and a false match could only make a
//! missing file look present, which the merge then fails to read and stops on.

use crate::error::{Error, Result};
use foldhash::{HashMap, HashMapExt};
use std::fs;
use std::path::{Path, PathBuf};

/// A path's fingerprint, as two halves: a `u128` would align the table's entries to 16
/// bytes and make each of them a third larger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PathKey(u64, u64);

impl PathKey {
    fn of(path: &str) -> PathKey {
        let h = xxhash_rust::xxh3::xxh3_128(path.as_bytes());
        PathKey((h >> 64) as u64, h as u64)
    }
}

/// Set in a size when the metadata refers to the file (no file is 8 EiB).
const REFERENCED: u64 = 1 << 63;

/// The `.parquet` files under a node's `dbs/`, with their sizes.
pub(super) struct DiskFiles {
    /// Size by path fingerprint, with [`REFERENCED`] set once [`DiskFiles::refer`] saw it.
    sizes: HashMap<PathKey, u64>,
    /// The listed directory, and its path relative to the data dir.
    dbs: PathBuf,
    rel: String,
}

impl DiskFiles {
    /// Lists `dbs` (whose path relative to the data dir is `rel`); none when it is absent.
    pub fn list(dbs: &Path, rel: &str) -> Result<DiskFiles> {
        let parts = walk(dbs, rel, Sizes::Read, &|path, size| {
            Some((PathKey::of(path), size))
        })?;
        // Sized once: growing a table of millions rehashes it while the old one is held.
        let mut sizes = HashMap::with_capacity(parts.iter().map(Vec::len).sum());
        for part in parts {
            sizes.extend(part);
        }
        Ok(DiskFiles {
            sizes,
            dbs: dbs.to_path_buf(),
            rel: rel.to_string(),
        })
    }

    /// Whether `path` (relative to the data dir) is one of them.
    pub fn contains(&self, path: &str) -> bool {
        self.sizes.contains_key(&PathKey::of(path))
    }

    /// Notes that the metadata refers to `path`; its size, if it is one of them.
    pub fn refer(&mut self, path: &str) -> Option<u64> {
        let size = self.sizes.get_mut(&PathKey::of(path))?;
        *size |= REFERENCED;
        Some(*size & !REFERENCED)
    }

    /// The paths (relative to the data dir, sorted) of the files [`DiskFiles::refer`] did
    /// not see. Fingerprints do not give paths back, so `dbs/` is listed again to name them,
    /// only when there are any, and without reading sizes.
    pub fn unreferenced(&self) -> Result<Vec<String>> {
        if self.sizes.values().all(|s| s & REFERENCED != 0) {
            return Ok(Vec::new());
        }
        let parts = walk(&self.dbs, &self.rel, Sizes::Skip, &|path, _| {
            self.sizes
                .get(&PathKey::of(path))
                .is_some_and(|s| s & REFERENCED == 0)
                .then(|| path.to_string())
        })?;
        let mut out: Vec<String> = parts.into_iter().flatten().collect();
        out.sort();
        Ok(out)
    }
}

/// Whether a walk reads each file's size (a `statx` per file) or passes 0.
#[derive(Clone, Copy, PartialEq)]
enum Sizes {
    Read,
    Skip,
}

/// Passes every `.parquet` file under `dbs` (whose path relative to the data dir is `rel`),
/// at any depth, to `keep` with its size, and returns what it kept, in parts; none when
/// `dbs` is absent.
///
/// Each table's directory is walked on one of a few threads: on a deep history they hold
/// hundreds of thousands of window directories.
fn walk<T: Send>(
    dbs: &Path,
    rel: &str,
    sizes: Sizes,
    keep: &(dyn Fn(&str, u64) -> Option<T> + Sync),
) -> Result<Vec<Vec<T>>> {
    if !dbs.is_dir() {
        return Ok(Vec::new());
    }
    // Files above the table directories (there should be none) go in the first part.
    let mut top = Vec::new();
    let mut tables = Vec::new();
    for (db, db_rel) in list_dir(dbs, rel, sizes, &mut |p, size| top.extend(keep(p, size)))? {
        tables.extend(list_dir(&db, &db_rel, sizes, &mut |p, size| {
            top.extend(keep(p, size))
        })?);
    }
    let parts = crate::pipeline::workers::parallel_map(&tables, |(dir, rel)| {
        let mut part = Vec::new();
        let mut todo = vec![(dir.clone(), rel.clone())];
        while let Some((d, r)) = todo.pop() {
            todo.extend(list_dir(&d, &r, sizes, &mut |p, size| {
                part.extend(keep(p, size))
            })?);
        }
        Ok::<_, Error>(part)
    });
    std::iter::once(Ok(top)).chain(parts).collect()
}

/// Passes each `.parquet` file in `dir` (whose path relative to the data dir is `rel`) to
/// `found` with its size (read relative to the directory: one system call, no path walk);
/// returns the subdirectories.
fn list_dir(
    dir: &Path,
    rel: &str,
    sizes: Sizes,
    found: &mut dyn FnMut(&str, u64),
) -> Result<Vec<(PathBuf, String)>> {
    let mut subdirs = Vec::new();
    // One buffer for every path of the directory: no allocation per file.
    let mut path = format!("{rel}/");
    let prefix = path.len();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))? {
        let e = e.map_err(|e| Error::io(dir, "list", e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ty = e
            .file_type()
            .map_err(|err| Error::io(e.path(), "stat", err))?;
        path.truncate(prefix);
        path.push_str(&name);
        if ty.is_dir() {
            subdirs.push((e.path(), path.clone()));
        } else if ty.is_file() && name.ends_with(".parquet") {
            let size = match sizes {
                Sizes::Read => e
                    .metadata()
                    .map_err(|err| Error::io(e.path(), "stat", err))?
                    .len(),
                Sizes::Skip => 0,
            };
            found(&path, size);
        }
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sizes_and_names_only_the_unreferenced() {
        let tmp = tempfile::tempdir().unwrap();
        let dbs = tmp.path().join("node0/dbs");
        let dir = dbs.join("1/2/2025-01-01/00-00");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.parquet"), b"abc").unwrap();
        fs::write(dir.join("2.parquet"), b"abcdef").unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        let mut files = DiskFiles::list(&dbs, "node0/dbs").unwrap();
        let one = "node0/dbs/1/2/2025-01-01/00-00/1.parquet";
        let two = "node0/dbs/1/2/2025-01-01/00-00/2.parquet";
        assert!(files.contains(one) && !files.contains("node0/dbs/1/2/x.parquet"));
        assert_eq!(files.unreferenced().unwrap(), [one, two]);
        assert_eq!(files.refer(two), Some(6));
        assert_eq!(
            files.refer(two),
            Some(6),
            "a second reference leaves the size alone"
        );
        assert_eq!(files.refer("node0/dbs/9.parquet"), None);
        assert_eq!(files.unreferenced().unwrap(), [one]);
        assert_eq!(files.refer(one), Some(3));
        assert!(files.unreferenced().unwrap().is_empty());
    }

    #[test]
    fn files_above_the_table_directories_are_found_too() {
        let tmp = tempfile::tempdir().unwrap();
        let dbs = tmp.path().join("node0/dbs");
        fs::create_dir_all(dbs.join("1/2/2025-01-01/00-00")).unwrap();
        fs::write(dbs.join("1/stray.parquet"), b"ab").unwrap();
        let mut files = DiskFiles::list(&dbs, "node0/dbs").unwrap();
        assert_eq!(files.unreferenced().unwrap(), ["node0/dbs/1/stray.parquet"]);
        assert_eq!(files.refer("node0/dbs/1/stray.parquet"), Some(2));
    }

    #[test]
    fn a_missing_dbs_dir_holds_no_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = DiskFiles::list(&tmp.path().join("dbs"), "node0/dbs").unwrap();
        assert!(!files.contains("node0/dbs/1.parquet"));
        assert!(files.unreferenced().unwrap().is_empty());
    }
}
