//! The Parquet files on a node's disk, as listing its `dbs/` directory finds them.
//!
//! A deep history has millions of files; they are kept by their path's fingerprint
//! ([`PathKey`]). A false match could only make a missing file look present, which the
//! merge then fails to read and stops on.

use super::fingerprint::{KeyTable, PathKey};
use crate::error::{Error, Result};
use crate::format::model::EntryPath;
use std::path::{Path, PathBuf};

/// Set in a size when the metadata refers to the file (no file is 8 EiB).
const REFERENCED: u64 = 1 << 63;

/// How many entries each directory under a node's `dbs/` held when discovery listed it.
///
/// The commit moves a window directory into the trash whole when it holds nothing but
/// replaced files. A deep history has hundreds of thousands of them, and listing each again
/// at commit time, while the server is stopped, took longer than the rest of the commit.
/// Nothing else writes there in between: the server is stopped and kompactor holds the
/// node from discovery to commit.
#[derive(Default)]
pub struct ListedDirs(KeyTable<u32>);

impl ListedDirs {
    /// How many entries of any kind `dir` (relative to the data dir) held; none when it was
    /// not listed.
    pub fn entries(&self, dir: &str) -> Option<usize> {
        self.0.get(PathKey::of(dir)).map(|&n| n as usize)
    }
}

impl std::fmt::Debug for ListedDirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListedDirs({} directories)", self.0.len())
    }
}

/// The `.parquet` files under a node's `dbs/`, with their sizes.
pub(super) struct DiskFiles {
    /// Size by path fingerprint, with [`REFERENCED`] set once [`DiskFiles::refer_each`] saw it.
    sizes: KeyTable<u64>,
    /// What each directory held.
    dirs: ListedDirs,
    /// The data dir, and the listed directory's path relative to it.
    data_dir: PathBuf,
    rel: String,
}

impl DiskFiles {
    /// Lists `<data_dir>/<rel>` (a node's `dbs/`); none when it is absent.
    pub fn list(data_dir: &Path, rel: &str) -> Result<DiskFiles> {
        let parts = walk(data_dir, rel, Sizes::Read, &|path, size| {
            Some((PathKey::of(path), size))
        })?;
        // Sized once, and each part let go of as it is taken: a deep history's parts hold
        // millions of entries.
        let mut sizes = Vec::with_capacity(parts.iter().map(|p| p.kept.len()).sum());
        let mut dirs = Vec::with_capacity(parts.iter().map(|p| p.dirs.len()).sum());
        for part in parts {
            sizes.extend(part.kept);
            dirs.extend(part.dirs);
        }
        Ok(DiskFiles {
            sizes: KeyTable::new(sizes),
            dirs: ListedDirs(KeyTable::new(dirs)),
            data_dir: data_dir.to_path_buf(),
            rel: rel.to_string(),
        })
    }

    /// Takes what each directory held, for the commit.
    pub fn take_dirs(&mut self) -> ListedDirs {
        std::mem::take(&mut self.dirs)
    }

    /// Whether `path` (relative to the data dir) is one of them.
    pub fn contains(&self, path: &EntryPath) -> bool {
        self.sizes.get(path.with_str(PathKey::of)).is_some()
    }

    /// [`DiskFiles::contains`] for the path of each of `items`, told to `found` in order.
    pub fn contains_each<T>(
        &self,
        items: impl Iterator<Item = T>,
        path: impl Fn(&T) -> &EntryPath,
        mut found: impl FnMut(T, bool),
    ) {
        let mut at = Vec::new();
        in_batches(items, path, |batch, keys| {
            self.sizes.positions(keys, &mut at);
            for (t, i) in batch.drain(..).zip(&at) {
                found(t, i.is_some());
            }
        });
    }

    /// Notes that the metadata refers to the path of each of `items`; tells `found`, in
    /// order, the size of each that is one of them.
    pub fn refer_each<T>(
        &mut self,
        items: impl Iterator<Item = T>,
        path: impl Fn(&T) -> &EntryPath,
        mut found: impl FnMut(T, Option<u64>),
    ) {
        let mut at = Vec::new();
        in_batches(items, path, |batch, keys| {
            self.sizes.positions(keys, &mut at);
            for (t, i) in batch.drain(..).zip(&at) {
                let size = i.map(|i| {
                    let size = self.sizes.value_mut(i);
                    *size |= REFERENCED;
                    *size & !REFERENCED
                });
                found(t, size);
            }
        });
    }

    /// The paths (relative to the data dir, sorted) of the files [`DiskFiles::refer_each`] did
    /// not see. Fingerprints do not give paths back, so `dbs/` is listed again to name them,
    /// only when there are any, and without reading sizes.
    pub fn unreferenced(&self) -> Result<Vec<String>> {
        if self.sizes.values().all(|s| s & REFERENCED != 0) {
            return Ok(Vec::new());
        }
        let parts = walk(&self.data_dir, &self.rel, Sizes::Skip, &|path, _| {
            self.sizes
                .get(PathKey::of(path))
                .is_some_and(|s| s & REFERENCED == 0)
                .then(|| path.to_string())
        })?;
        let mut out: Vec<String> = parts.into_iter().flat_map(|p| p.kept).collect();
        out.sort();
        Ok(out)
    }
}

/// Calls `each` with a batch of the items at a time and the fingerprints of their paths;
/// `each` drains the batch.
///
/// A lookup in a table of millions is a cache miss. With the fingerprints of a batch computed
/// before its lookups, and the lookups made a batch at a time ([`KeyTable::positions`]), the
/// processor has many misses under way at once; with the work of a fingerprint between two
/// lookups, it waited for each.
fn in_batches<T>(
    items: impl Iterator<Item = T>,
    path: impl Fn(&T) -> &EntryPath,
    mut each: impl FnMut(&mut Vec<T>, &[PathKey]),
) {
    const BATCH: usize = 64;
    let mut items = items.peekable();
    let mut batch = Vec::with_capacity(BATCH);
    let mut keys = Vec::with_capacity(BATCH);
    while items.peek().is_some() {
        batch.extend(items.by_ref().take(BATCH));
        keys.clear();
        keys.extend(batch.iter().map(|t| path(t).with_str(PathKey::of)));
        each(&mut batch, &keys);
    }
}

/// Whether a walk reads each file's size (a `statx` per file) or passes 0.
#[derive(Clone, Copy, PartialEq)]
enum Sizes {
    Read,
    Skip,
}

/// What a walk kept of the files of some directories, and how many entries each held.
struct Part<T> {
    kept: Vec<T>,
    dirs: Vec<(PathKey, u32)>,
}

impl<T> Default for Part<T> {
    fn default() -> Part<T> {
        Part {
            kept: Vec::new(),
            dirs: Vec::new(),
        }
    }
}

/// Passes every `.parquet` file under `<data_dir>/<rel>` (`<node>/dbs`), at any depth, to
/// `keep` with its path relative to the data dir and its size, and returns what it kept, in
/// parts; none when that directory is absent.
///
/// Each table's directory is walked on one of sixteen threads: on a deep history they hold
/// hundreds of thousands of window directories, and right after the server stops those are
/// rarely cached, so most of the walk waits on the disk.
fn walk<T: Send>(
    data_dir: &Path,
    rel: &str,
    sizes: Sizes,
    keep: &(dyn Fn(&str, u64) -> Option<T> + Sync),
) -> Result<Vec<Part<T>>> {
    let dbs = data_dir.join(rel);
    if !dbs.is_dir() {
        return Ok(Vec::new());
    }
    // Files above the table directories (there should be none) go in the first part.
    let mut top = Part::default();
    let mut found = |p: &str, size| top.kept.extend(keep(p, size));
    let mut dbs_dir = OpenDir::open(&dbs).map_err(|e| Error::io(&dbs, "list", e))?;
    let mut tables = Vec::new();
    for db in list(
        &mut dbs_dir,
        rel,
        data_dir,
        sizes,
        &mut found,
        &mut top.dirs,
    )? {
        let db_rel = format!("{rel}/{db}");
        let mut db_dir = dbs_dir
            .child(&db)
            .map_err(|e| Error::io(data_dir.join(&db_rel), "list", e))?;
        let in_db = list(
            &mut db_dir,
            &db_rel,
            data_dir,
            sizes,
            &mut found,
            &mut top.dirs,
        )?;
        tables.extend(in_db.into_iter().map(|t| format!("{db_rel}/{t}")));
    }
    let parts = crate::pipeline::workers::parallel_map_io(&tables, |table_rel| {
        let mut part = Part::default();
        let abs = data_dir.join(table_rel);
        let mut dir = OpenDir::open(&abs).map_err(|e| Error::io(&abs, "list", e))?;
        let mut found = |p: &str, size| part.kept.extend(keep(p, size));
        let mut rel = table_rel.clone();
        walk_tree(
            &mut dir,
            &mut rel,
            data_dir,
            sizes,
            &mut found,
            &mut part.dirs,
        )?;
        Ok::<_, Error>(part)
    });
    std::iter::once(Ok(top)).chain(parts).collect()
}

/// Lists `dir` (at `rel`) and everything below it, depth first. Each subdirectory is opened
/// relative to its parent: one name to look up rather than a whole path, and no more open
/// directories than levels.
fn walk_tree(
    dir: &mut OpenDir,
    rel: &mut String,
    data_dir: &Path,
    sizes: Sizes,
    found: &mut dyn FnMut(&str, u64),
    dirs: &mut Vec<(PathKey, u32)>,
) -> Result<()> {
    for name in list(dir, rel, data_dir, sizes, found, dirs)? {
        let len = rel.len();
        rel.push('/');
        rel.push_str(&name);
        let mut child = dir
            .child(&name)
            .map_err(|e| Error::io(data_dir.join(&*rel), "list", e))?;
        walk_tree(&mut child, rel, data_dir, sizes, found, dirs)?;
        rel.truncate(len);
    }
    Ok(())
}

/// Lists one directory (at `rel`): passes each `.parquet` file in it to `found` with its
/// size, records how many entries of any kind it holds, and returns its subdirectories.
fn list(
    dir: &mut OpenDir,
    rel: &str,
    data_dir: &Path,
    sizes: Sizes,
    found: &mut dyn FnMut(&str, u64),
    dirs: &mut Vec<(PathKey, u32)>,
) -> Result<Vec<String>> {
    let is_parquet = |name: &str| name.ends_with(".parquet");
    let entries = dir
        .entries(&|name| sizes == Sizes::Read && is_parquet(name))
        .map_err(|e| Error::io(data_dir.join(rel), "list", e))?;
    dirs.push((
        PathKey::of(rel),
        u32::try_from(entries.len()).unwrap_or(u32::MAX),
    ));
    // One buffer for every path of the directory: no allocation per file.
    let mut path = format!("{rel}/");
    let prefix = path.len();
    let mut subdirs = Vec::new();
    for e in entries {
        match e.kind {
            Kind::Dir => subdirs.push(e.name),
            Kind::File if is_parquet(&e.name) => {
                path.truncate(prefix);
                path.push_str(&e.name);
                let size = e
                    .size
                    .transpose()
                    .map_err(|err| Error::io(data_dir.join(&path), "stat", err))?;
                found(&path, size.unwrap_or(0));
            }
            Kind::File | Kind::Other => {}
        }
    }
    Ok(subdirs)
}

/// What a directory entry is: only directories and regular files are followed or kept.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    File,
    Other,
}

/// One entry of a directory.
struct Entry {
    name: String,
    kind: Kind,
    /// The file's size, when it was asked for.
    size: Option<std::io::Result<u64>>,
}

#[cfg(unix)]
use fd_dir::OpenDir;
#[cfg(not(unix))]
use path_dir::OpenDir;

/// Directories listed through file descriptors: a subdirectory is opened, and a file's size
/// read, relative to its directory.
#[cfg(unix)]
mod fd_dir {
    use super::{Entry, Kind};
    use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
    use std::io;
    use std::path::Path;

    const FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::CLOEXEC);

    pub struct OpenDir(Dir);

    impl OpenDir {
        pub fn open(path: &Path) -> io::Result<OpenDir> {
            let fd = rustix::fs::open(path, FLAGS, Mode::empty())?;
            Ok(OpenDir(Dir::new(fd)?))
        }

        pub fn child(&self, name: &str) -> io::Result<OpenDir> {
            let fd = rustix::fs::openat(self.0.fd()?, name, FLAGS, Mode::empty())?;
            Ok(OpenDir(Dir::new(fd)?))
        }

        /// Every entry but `.` and `..`, with the size of each file `sized` names.
        pub fn entries(&mut self, sized: &dyn Fn(&str) -> bool) -> io::Result<Vec<Entry>> {
            let mut out = Vec::new();
            while let Some(e) = self.0.read() {
                let e = e?;
                let raw = e.file_name();
                if matches!(raw.to_bytes(), b"." | b"..") {
                    continue;
                }
                let name = String::from_utf8_lossy(raw.to_bytes()).into_owned();
                let wants_size = sized(&name);
                let mut ty = e.file_type();
                let mut size = None;
                // A file system that does not give types in listings is asked per entry.
                if ty == FileType::Unknown || (ty == FileType::RegularFile && wants_size) {
                    match rustix::fs::statat(self.0.fd()?, raw, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            ty = FileType::from_raw_mode(st.st_mode);
                            size = Some(Ok(u64::try_from(st.st_size).unwrap_or(0)));
                        }
                        Err(err) => size = Some(Err(err.into())),
                    }
                }
                let kind = match ty {
                    FileType::Directory => Kind::Dir,
                    FileType::RegularFile => Kind::File,
                    _ => Kind::Other,
                };
                let size = size.filter(|_| kind == Kind::File && wants_size);
                out.push(Entry { name, kind, size });
            }
            Ok(out)
        }
    }
}

/// Directories listed by path, where file descriptors are not at hand.
#[cfg(not(unix))]
mod path_dir {
    use super::{Entry, Kind};
    use std::io;
    use std::path::{Path, PathBuf};

    pub struct OpenDir(PathBuf);

    impl OpenDir {
        pub fn open(path: &Path) -> io::Result<OpenDir> {
            Ok(OpenDir(path.to_path_buf()))
        }

        pub fn child(&self, name: &str) -> io::Result<OpenDir> {
            Ok(OpenDir(self.0.join(name)))
        }

        /// Every entry, with the size of each file `sized` names.
        pub fn entries(&mut self, sized: &dyn Fn(&str) -> bool) -> io::Result<Vec<Entry>> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(&self.0)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let ty = e.file_type()?;
                let kind = if ty.is_dir() {
                    Kind::Dir
                } else if ty.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                };
                let size =
                    (kind == Kind::File && sized(&name)).then(|| e.metadata().map(|m| m.len()));
                out.push(Entry { name, kind, size });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn refer(files: &mut DiskFiles, path: &EntryPath) -> Option<u64> {
        let mut size = None;
        files.refer_each(std::iter::once(path), |p| p, |_, s| size = s);
        size
    }

    #[test]
    fn finds_sizes_and_names_only_the_unreferenced() {
        let tmp = tempfile::tempdir().unwrap();
        let dbs = tmp.path().join("node0/dbs");
        let dir = dbs.join("1/2/2025-01-01/00-00");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.parquet"), b"abc").unwrap();
        fs::write(dir.join("2.parquet"), b"abcdef").unwrap();
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        let mut files = DiskFiles::list(tmp.path(), "node0/dbs").unwrap();
        let one = "node0/dbs/1/2/2025-01-01/00-00/1.parquet";
        let two = "node0/dbs/1/2/2025-01-01/00-00/2.parquet";
        assert!(
            files.contains(&EntryPath::from(one))
                && !files.contains(&EntryPath::from("node0/dbs/1/2/x.parquet"))
        );
        assert_eq!(files.unreferenced().unwrap(), [one, two]);
        assert_eq!(refer(&mut files, &EntryPath::from(two)), Some(6));
        assert_eq!(
            refer(&mut files, &EntryPath::from(two)),
            Some(6),
            "a second reference leaves the size alone"
        );
        assert_eq!(
            refer(&mut files, &EntryPath::from("node0/dbs/9.parquet")),
            None
        );
        assert_eq!(files.unreferenced().unwrap(), [one]);
        assert_eq!(refer(&mut files, &EntryPath::from(one)), Some(3));
        assert!(files.unreferenced().unwrap().is_empty());
        let dirs = files.take_dirs();
        let window = "node0/dbs/1/2/2025-01-01/00-00";
        assert_eq!(
            dirs.entries(window),
            Some(3),
            "every entry counts, not only Parquet"
        );
        assert_eq!(dirs.entries("node0/dbs/1/2/2025-01-01"), Some(1));
        assert_eq!(dirs.entries("node0/dbs"), Some(1));
        assert_eq!(dirs.entries("node0/dbs/1/2/2025-01-02"), None);
    }

    #[test]
    fn files_above_the_table_directories_are_found_too() {
        let tmp = tempfile::tempdir().unwrap();
        let dbs = tmp.path().join("node0/dbs");
        fs::create_dir_all(dbs.join("1/2/2025-01-01/00-00")).unwrap();
        fs::write(dbs.join("1/stray.parquet"), b"ab").unwrap();
        let mut files = DiskFiles::list(tmp.path(), "node0/dbs").unwrap();
        assert_eq!(files.unreferenced().unwrap(), ["node0/dbs/1/stray.parquet"]);
        assert_eq!(
            refer(&mut files, &EntryPath::from("node0/dbs/1/stray.parquet")),
            Some(2)
        );
    }

    #[test]
    fn a_missing_dbs_dir_holds_no_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = DiskFiles::list(tmp.path(), "node0/dbs").unwrap();
        assert!(!files.contains(&EntryPath::from("node0/dbs/1.parquet")));
        assert!(files.unreferenced().unwrap().is_empty());
    }
}
