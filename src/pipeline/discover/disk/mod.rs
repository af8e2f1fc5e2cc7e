//! The Parquet files on a node's disk, as listing its `dbs/` directory finds them.
//!
//! A deep history has millions of files; they are kept by their path's fingerprint
//! ([`PathKey`]). A false match could only make a missing file look present, which the
//! merge then fails to read and stops on.

use super::fingerprint::{KeyTable, PathKey};
use crate::error::Result;
use crate::format::model::EntryPath;
use std::path::{Path, PathBuf};
use walk::{walk, Probe};

mod dir;
mod walk;

/// Set in a size when the metadata refers to the file (no file is 8 EiB).
const REFERENCED: u64 = 1 << 63;

/// In [`Listed::rows`]: the footer was not read, or not in one go (a footer of more than
/// 64 KiB, a damaged or unreadable file, a count above 4 billion rows).
pub(super) const NOT_READ: u32 = u32::MAX;

/// Whether listing a node's files also reads the row count in each file's footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footers {
    /// Sizes only: what compaction and `status` need (a `statx` per file).
    Skip,
    /// Sizes and row counts, for `verify`: each file is opened and read where it is listed
    /// (a file under 64 KiB whole, from its start, which gives its size too; a larger one's
    /// last 64 KiB, after a stat). That costs less than a stat now and an open later: on a
    /// deep history the path lookups of two million files take seconds.
    Read,
}

/// What the listing keeps of one file beside its path's fingerprint: 12 bytes, two million times.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
pub(super) struct Listed {
    /// With [`REFERENCED`] set once [`DiskFiles::refer_each`] saw it.
    pub size: u64,
    pub rows: u32,
}

/// A file on disk, as the listing found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnDisk {
    pub size: u64,
    /// The row count its footer gives; `None` when footers were not read or this one could
    /// not be read in one go ([`crate::format::parquet::read_row_count`] says why).
    pub rows: Option<u64>,
}

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

/// The `.parquet` files under a node's `dbs/`, with their sizes (and row counts, when asked).
pub(super) struct DiskFiles {
    files: KeyTable<Listed>,
    footers: Footers,
    /// What each directory held.
    dirs: ListedDirs,
    /// The data dir, and the listed directory's path relative to it.
    data_dir: PathBuf,
    rel: String,
}

impl DiskFiles {
    /// Lists `<data_dir>/<rel>` (a node's `dbs/`); none when it is absent.
    pub fn list(data_dir: &Path, rel: &str, footers: Footers) -> Result<DiskFiles> {
        let probe = match footers {
            Footers::Skip => Probe::Size,
            Footers::Read => Probe::Footer,
        };
        let parts = walk(data_dir, rel, probe, &|path, listed| {
            Some((PathKey::of(path), listed))
        })?;
        // Sized once, and each part let go of as it is taken: a deep history's parts hold
        // millions of entries. The listing's threads allocated them in arenas of their own,
        // which no other step reuses, and freed memory stays resident until it is handed
        // back: so each part's is, as soon as it is taken. Otherwise all the parts were
        // resident beside the whole table at its end (50 MiB more at the peak, on two
        // million files).
        let mut files = Vec::with_capacity(parts.iter().map(|p| p.kept.len()).sum());
        let mut dirs = Vec::with_capacity(parts.iter().map(|p| p.dirs.len()).sum());
        for part in parts {
            files.extend(part.kept);
            dirs.extend(part.dirs);
            crate::heap::release_free();
        }
        Ok(DiskFiles {
            files: KeyTable::new(files),
            footers,
            dirs: ListedDirs(KeyTable::new(dirs)),
            data_dir: data_dir.to_path_buf(),
            rel: rel.to_string(),
        })
    }

    /// Whether the listing read the footers' row counts.
    pub fn footers(&self) -> Footers {
        self.footers
    }

    /// Takes what each directory held, for the commit.
    pub fn take_dirs(&mut self) -> ListedDirs {
        std::mem::take(&mut self.dirs)
    }

    /// Whether `path` (relative to the data dir) is one of them.
    pub fn contains(&self, path: &EntryPath) -> bool {
        self.files.get(path.with_str(PathKey::of)).is_some()
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
            self.files.positions(keys, &mut at);
            for (t, i) in batch.drain(..).zip(&at) {
                found(t, i.is_some());
            }
        });
    }

    /// Notes that the metadata refers to the path of each of `items`; tells `found`, in
    /// order, what the listing found of each that is one of them.
    pub fn refer_each<T>(
        &mut self,
        items: impl Iterator<Item = T>,
        path: impl Fn(&T) -> &EntryPath,
        mut found: impl FnMut(T, Option<OnDisk>),
    ) {
        let mut at = Vec::new();
        in_batches(items, path, |batch, keys| {
            self.files.positions(keys, &mut at);
            for (t, i) in batch.drain(..).zip(&at) {
                let on_disk = i.map(|i| {
                    let listed = self.files.value_mut(i);
                    let size = listed.size;
                    listed.size = size | REFERENCED;
                    let rows = listed.rows;
                    OnDisk {
                        size: size & !REFERENCED,
                        rows: (rows != NOT_READ).then_some(u64::from(rows)),
                    }
                });
                found(t, on_disk);
            }
        });
    }

    /// The paths (relative to the data dir, sorted) of the files [`DiskFiles::refer_each`] did
    /// not see. Fingerprints do not give paths back, so `dbs/` is listed again to name them,
    /// only when there are any, and without reading sizes.
    pub fn unreferenced(&self) -> Result<Vec<String>> {
        let referenced = |l: &Listed| l.size & REFERENCED != 0;
        if self.files.values().all(referenced) {
            return Ok(Vec::new());
        }
        let parts = walk(&self.data_dir, &self.rel, Probe::Nothing, &|path, _| {
            self.files
                .get(PathKey::of(path))
                .is_some_and(|l| !referenced(l))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn refer(files: &mut DiskFiles, path: &EntryPath) -> Option<u64> {
        let mut size = None;
        files.refer_each(
            std::iter::once(path),
            |p| p,
            |_, d| size = d.map(|d| d.size),
        );
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
        let mut files = DiskFiles::list(tmp.path(), "node0/dbs", Footers::Skip).unwrap();
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
        let mut files = DiskFiles::list(tmp.path(), "node0/dbs", Footers::Skip).unwrap();
        assert_eq!(files.unreferenced().unwrap(), ["node0/dbs/1/stray.parquet"]);
        assert_eq!(
            refer(&mut files, &EntryPath::from("node0/dbs/1/stray.parquet")),
            Some(2)
        );
    }

    #[test]
    fn footers_are_read_while_listing_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node0/dbs/1/2/2025-01-01/00-00");
        fs::create_dir_all(&dir).unwrap();
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "fixtures/influxdb3-3.10/small/node0/dbs/2/0/2026-11-18/03-50/0000000104.parquet",
        );
        let rows = crate::format::parquet::read_footer(&real).unwrap().num_rows;
        fs::copy(&real, dir.join("1.parquet")).unwrap();
        fs::write(dir.join("2.parquet"), b"not parquet at all").unwrap();
        // A file of more than 64 KiB is read after a stat, and those after it still right.
        let mut big = vec![0u8; 70_000];
        big.extend(fs::read(&real).unwrap());
        fs::write(dir.join("3.parquet"), &big).unwrap();
        fs::copy(&real, dir.join("4.parquet")).unwrap();
        let size = fs::metadata(&real).unwrap().len();
        let one = EntryPath::from("node0/dbs/1/2/2025-01-01/00-00/1.parquet");
        let two = EntryPath::from("node0/dbs/1/2/2025-01-01/00-00/2.parquet");
        let three = EntryPath::from("node0/dbs/1/2/2025-01-01/00-00/3.parquet");
        let four = EntryPath::from("node0/dbs/1/2/2025-01-01/00-00/4.parquet");
        let seen = |footers| {
            let mut files = DiskFiles::list(tmp.path(), "node0/dbs", footers).unwrap();
            assert_eq!(files.footers(), footers);
            let mut seen = Vec::new();
            files.refer_each([&one, &two].into_iter(), |p| p, |_, d| seen.push(d));
            let mut others = Vec::new();
            files.refer_each([&three, &four].into_iter(), |p| p, |_, d| others.push(d));
            let read = footers == Footers::Read;
            assert_eq!(
                others,
                [
                    Some(OnDisk {
                        size: big.len() as u64,
                        rows: read.then_some(rows)
                    }),
                    Some(OnDisk {
                        size,
                        rows: read.then_some(rows)
                    })
                ]
            );
            seen
        };
        assert_eq!(
            seen(Footers::Read),
            [
                Some(OnDisk {
                    size,
                    rows: Some(rows)
                }),
                Some(OnDisk {
                    size: 18,
                    rows: None
                })
            ]
        );
        assert_eq!(
            seen(Footers::Skip),
            [
                Some(OnDisk { size, rows: None }),
                Some(OnDisk {
                    size: 18,
                    rows: None
                })
            ]
        );
    }

    #[test]
    fn a_missing_dbs_dir_holds_no_files() {
        let tmp = tempfile::tempdir().unwrap();
        let files = DiskFiles::list(tmp.path(), "node0/dbs", Footers::Skip).unwrap();
        assert!(!files.contains(&EntryPath::from("node0/dbs/1.parquet")));
        assert!(files.unreferenced().unwrap().is_empty());
    }
}
