//! Walking a node's `dbs/` tree: one thread per table directory, each subdirectory opened
//! relative to its parent, and what each file's probe reads.

use super::dir::{size_of_open, Kind, OpenDir};
use super::{Listed, NOT_READ};
use crate::error::{Error, Result};
use crate::format::parquet::{
    is_small_file, quick_row_count, small_file_row_count, FooterScratch, SmallFile,
};
use crate::pipeline::discover::fingerprint::PathKey;
use std::path::Path;

/// What a walk reads of each file besides its name.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Probe {
    /// Nothing: sizes and row counts come back as 0 and [`NOT_READ`].
    Nothing,
    /// Its size: a `statx`.
    Size,
    /// Its size and its footer's row count: an open and a read (and a stat of the open file,
    /// for files of 64 KiB or more).
    Footer,
}

/// What a walk kept of the files of some directories, and how many entries each held.
pub(super) struct Part<T> {
    pub kept: Vec<T>,
    pub dirs: Vec<(PathKey, u32)>,
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
/// `keep` with its path relative to the data dir and what `probe` read of it, and returns
/// what it kept, in parts; none when that directory is absent.
///
/// Each table's directory is walked on one of sixteen threads: on a deep history they hold
/// hundreds of thousands of window directories, and right after the server stops those are
/// rarely cached, so most of the walk waits on the disk.
pub(super) fn walk<T: Send>(
    data_dir: &Path,
    rel: &str,
    probe: Probe,
    keep: &(dyn Fn(&str, Listed) -> Option<T> + Sync),
) -> Result<Vec<Part<T>>> {
    let dbs = data_dir.join(rel);
    if !dbs.is_dir() {
        return Ok(Vec::new());
    }
    // Files above the table directories (there should be none) go in the first part.
    let mut top = Lister::new(data_dir, probe, keep);
    let mut dbs_dir = OpenDir::open(&dbs).map_err(|e| Error::io(&dbs, "list", e))?;
    let mut tables = Vec::new();
    for db in top.list(&mut dbs_dir, rel)? {
        let db_rel = format!("{rel}/{db}");
        let mut db_dir = dbs_dir
            .child(&db)
            .map_err(|e| Error::io(data_dir.join(&db_rel), "list", e))?;
        let in_db = top.list(&mut db_dir, &db_rel)?;
        tables.extend(in_db.into_iter().map(|t| format!("{db_rel}/{t}")));
    }
    let parts = crate::pipeline::workers::parallel_map_io(&tables, |table_rel| {
        let abs = data_dir.join(table_rel);
        let mut dir = OpenDir::open(&abs).map_err(|e| Error::io(&abs, "list", e))?;
        let mut lister = Lister::new(data_dir, probe, keep);
        lister.walk_tree(&mut dir, &mut table_rel.clone())?;
        // Held with every other part until they are merged: at their size, not at the
        // doubled capacity they grew to (a sixth of the listing's memory, on average).
        lister.part.kept.shrink_to_fit();
        lister.part.dirs.shrink_to_fit();
        Ok::<_, Error>(lister.part)
    });
    std::iter::once(Ok(top.part)).chain(parts).collect()
}

/// One thread's walk: what it keeps, and what reading one footer after another keeps.
struct Lister<'a, T> {
    data_dir: &'a Path,
    probe: Probe,
    keep: &'a (dyn Fn(&str, Listed) -> Option<T> + Sync),
    part: Part<T>,
    footers: FooterScratch,
    /// Whether the last file whose footer was read was under 64 KiB: a table's files are
    /// alike, so the next one is then read whole, without a stat.
    small_files: bool,
}

impl<'a, T> Lister<'a, T> {
    fn new(
        data_dir: &'a Path,
        probe: Probe,
        keep: &'a (dyn Fn(&str, Listed) -> Option<T> + Sync),
    ) -> Lister<'a, T> {
        Lister {
            data_dir,
            probe,
            keep,
            part: Part::default(),
            footers: FooterScratch::default(),
            small_files: true,
        }
    }

    /// Lists `dir` (at `rel`) and everything below it, depth first. Each subdirectory is
    /// opened relative to its parent: one name to look up rather than a whole path, and no
    /// more open directories than levels.
    fn walk_tree(&mut self, dir: &mut OpenDir, rel: &mut String) -> Result<()> {
        for name in self.list(dir, rel)? {
            let len = rel.len();
            rel.push('/');
            rel.push_str(&name);
            let mut child = dir
                .child(&name)
                .map_err(|e| Error::io(self.data_dir.join(&*rel), "list", e))?;
            self.walk_tree(&mut child, rel)?;
            rel.truncate(len);
        }
        Ok(())
    }

    /// Lists one directory (at `rel`): passes each `.parquet` file in it to `keep` with what
    /// was read of it, records how many entries of any kind it holds, and returns its
    /// subdirectories.
    fn list(&mut self, dir: &mut OpenDir, rel: &str) -> Result<Vec<String>> {
        let is_parquet = |name: &str| name.ends_with(".parquet");
        let entries = dir
            .entries(&|name| self.probe == Probe::Size && is_parquet(name))
            .map_err(|e| Error::io(self.data_dir.join(rel), "list", e))?;
        self.part.dirs.push((
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
                    let listed = match self.probe {
                        Probe::Footer => self.read_footer(dir, &e.name),
                        Probe::Size | Probe::Nothing => {
                            e.size.unwrap_or(Ok(0)).map(|size| Listed {
                                size,
                                rows: NOT_READ,
                            })
                        }
                    };
                    let listed =
                        listed.map_err(|err| Error::io(self.data_dir.join(&path), "stat", err))?;
                    self.part.kept.extend((self.keep)(&path, listed));
                }
                Kind::File | Kind::Other => {}
            }
        }
        Ok(subdirs)
    }

    /// The size and row count of the file `name` in `dir`. A file that cannot be opened
    /// (permissions) is only sized: whoever needs its rows reads it again, and is told why
    /// that fails.
    fn read_footer(&mut self, dir: &OpenDir, name: &str) -> std::io::Result<Listed> {
        let Ok(file) = dir.open_file(name) else {
            return Ok(Listed {
                size: dir.size_of(name)?,
                rows: NOT_READ,
            });
        };
        let as_u32 = |rows: u64| u32::try_from(rows).unwrap_or(NOT_READ);
        if self.small_files {
            if let SmallFile::Read { size, rows } = small_file_row_count(&file, &mut self.footers) {
                return Ok(Listed {
                    size,
                    rows: as_u32(rows),
                });
            }
        }
        let size = size_of_open(&file)?;
        self.small_files = is_small_file(size);
        let rows = quick_row_count(&file, size, &mut self.footers).map_or(NOT_READ, as_u32);
        Ok(Listed { size, rows })
    }
}
