//! The `[[db_id, {"tables": [[table_id, [file, ...]], ...]}], ...]` lists of files that
//! snapshots and checkpoints hold, and their totals.

use super::de::{self, deserialize_with_extra};
use super::{EntryRc, Extra, FileEntry, FileList};
use crate::format::ids::{DbId, FileId, Nanos, TableId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// The tables of one database: `{"tables": [[table_id, [file, ...]], ...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DbTables {
    pub tables: Vec<(TableId, FileList)>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A database's tables as they are read: each entry through the pool ([`de::Shared`]).
struct DbTablesRead {
    tables: Vec<(TableId, SmallVec<[de::Shared; 1]>)>,
    extra: Map<String, Value>,
}

deserialize_with_extra!(DbTablesRead, "a database's tables", required: [tables], defaulted: []);

impl<'de> Deserialize<'de> for DbTables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DbTables, D::Error> {
        let read = DbTablesRead::deserialize(d)?;
        // The outer conversion keeps its vector's allocation; a list of one is never on the heap.
        let tables = read
            .tables
            .into_iter()
            .map(|(table, files)| (table, files.into_iter().map(|f| f.0).collect()))
            .collect();
        Ok(DbTables {
            tables,
            extra: read.extra.into(),
        })
    }
}

/// The `[[db_id, {"tables": ...}], ...]` pair map used for added and removed files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DbFiles(pub Vec<(DbId, DbTables)>);

impl DbFiles {
    /// Every file entry with the database and table it is listed under.
    pub fn iter(&self) -> impl Iterator<Item = (DbId, TableId, &EntryRc)> + Clone {
        self.0.iter().flat_map(|(db, t)| {
            t.tables
                .iter()
                .flat_map(move |(table, files)| files.iter().map(move |f| (*db, *table, f)))
        })
    }

    /// Whether no file is listed at all.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Gives back the room parsing left in the lists: with one file per table a list keeps
    /// room for four, and a deep history holds millions of entries.
    ///
    /// Each list moves to an allocation of its exact size rather than shrinking in place:
    /// shrinking leaves the rest of the old block as a gap too small for the next list,
    /// and over millions of lists those gaps held a third of a deep history's heap. A
    /// whole freed block is the size the next document's lists grow to, and is reused.
    pub fn shrink_to_fit(&mut self) {
        fit(&mut self.0);
        for (_, db) in &mut self.0 {
            fit(&mut db.tables);
            for (_, files) in &mut db.tables {
                if files.spilled() && files.capacity() > files.len() {
                    *files = files.drain(..).collect();
                }
            }
        }
    }

    /// Removes every entry whose id `drop` selects; returns how many were removed.
    ///
    /// Databases and tables stay listed even when they end up empty, as the server itself
    /// leaves them: only file entries change.
    pub fn retain_files(&mut self, mut keep: impl FnMut(&FileEntry) -> bool) -> usize {
        let mut removed = 0;
        for (_, db) in &mut self.0 {
            for (_, files) in &mut db.tables {
                let before = files.len();
                files.retain(|f| keep(f));
                removed += before - files.len();
            }
        }
        removed
    }

    /// Puts `with[id]`'s entries in place of each entry of that id (in its table's list, where
    /// it stood); returns how many entries were replaced.
    pub fn replace_files(
        &mut self,
        with: &std::collections::HashMap<FileId, Vec<EntryRc>>,
    ) -> usize {
        let mut n = 0;
        for (_, db) in &mut self.0 {
            for (_, files) in &mut db.tables {
                if !files.iter().any(|f| with.contains_key(&f.id)) {
                    continue;
                }
                let mut out = FileList::new();
                for f in files.drain(..) {
                    match with.get(&f.id) {
                        Some(new) => {
                            n += 1;
                            out.extend(new.iter().cloned());
                        }
                        None => out.push(f),
                    }
                }
                *files = out;
            }
        }
        n
    }

    /// Appends a file under its database and table, creating either only if missing, so a
    /// key is never listed twice (the server rejects duplicate keys).
    pub fn push(&mut self, db: DbId, table: TableId, file: EntryRc) {
        let pos = match self.0.iter().position(|(d, _)| *d == db) {
            Some(p) => p,
            None => {
                self.0.push((db, DbTables::default()));
                self.0.len() - 1
            }
        };
        let tables = &mut self.0[pos].1.tables;
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, files)) => files.push(file),
            None => tables.push((table, smallvec::smallvec![file])),
        }
    }

    /// Sums of size, rows and the time range over all entries, as the totals keys hold them.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::empty();
        for (_, _, f) in self.iter() {
            t.parquet_size_bytes += f.size_bytes;
            t.row_count += f.row_count;
            t.min_time = t.min_time.min(f.min_time);
            t.max_time = t.max_time.max(f.max_time);
        }
        t
    }
}

/// Moves `v` to an allocation that holds exactly its elements (see [`DbFiles::shrink_to_fit`]).
fn fit<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() {
        let mut exact = Vec::with_capacity(v.len());
        exact.append(v);
        *v = exact;
    }
}

/// The summary keys every snapshot and checkpoint carries about its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub parquet_size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
}

impl Totals {
    /// The server's values for "no files": zero sums, `i64::MAX` / `i64::MIN` times.
    pub fn empty() -> Totals {
        Totals {
            parquet_size_bytes: 0,
            row_count: 0,
            min_time: Nanos::MAX,
            max_time: Nanos::MIN,
        }
    }

    /// The four summary keys' values, in the order documents hold them.
    pub(super) fn parts(self) -> (u64, u64, Nanos, Nanos) {
        (
            self.parquet_size_bytes,
            self.row_count,
            self.min_time,
            self.max_time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_never_lists_a_key_twice() {
        let mut d = DbFiles::default();
        let f = |id| {
            EntryRc::new(FileEntry {
                id: FileId(id),
                path: "".into(),
                size_bytes: 1,
                row_count: 1,
                chunk_time: Nanos(0),
                min_time: Nanos(0),
                max_time: Nanos(1),
                extra: Extra::default(),
            })
        };
        d.push(DbId(1), TableId(0), f(1));
        d.push(DbId(1), TableId(0), f(2));
        d.push(DbId(1), TableId(1), f(3));
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].1.tables.len(), 2);
        assert_eq!(d.retain_files(|e| e.id != FileId(2)), 1);
        assert_eq!(d.totals().row_count, 2);
    }
}
