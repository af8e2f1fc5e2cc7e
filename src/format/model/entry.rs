//! A Parquet file as the metadata lists it, and the sharing of those entries between
//! documents.

use super::EntryPath;
use crate::format::ids::{FileId, FileIdMap, Nanos};
use serde::Serialize;
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::sync::Arc;

/// One Parquet file as the metadata records it.
///
/// Documents hold entries behind an [`EntryRc`]: the snapshots, the checkpoints, the live
/// set and the plan of a deep history all refer to the same millions of files, and share
/// them rather than copy them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileEntry {
    pub id: FileId,
    pub path: EntryPath,
    pub size_bytes: u64,
    pub row_count: u64,
    pub chunk_time: Nanos,
    pub min_time: Nanos,
    pub max_time: Nanos,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The keys of a file entry or a database's tables that kompactor does not know, kept to be
/// written back.
///
/// Boxed and absent when empty (almost always): an inline map would take 72 bytes of every
/// entry, and a deep history holds millions of entries, several times over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extra(Option<Box<Map<String, Value>>>);

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(m) => m.serialize(s),
            None => s.collect_map(std::iter::empty::<(&str, &Value)>()),
        }
    }
}

impl From<Map<String, Value>> for Extra {
    fn from(m: Map<String, Value>) -> Extra {
        Extra((!m.is_empty()).then(|| Box::new(m)))
    }
}

/// A shared [`FileEntry`].
///
/// Counted without weak references (`triomphe::Arc`): an entry (80 bytes) and its count then
/// take 96 bytes of glibc's heap, where std's `Arc` and its two counts took 112; a deep
/// history holds two million of them.
pub type EntryRc = triomphe::Arc<FileEntry>;

super::de::deserialize_with_extra!(FileEntry, "a file entry",
    required: [id, path, size_bytes, row_count, chunk_time, min_time, max_time], defaulted: []);

/// The files a document lists under one table, in order.
///
/// A snapshot lists one file per table, almost always; the list holds that one in place,
/// where a `Vec` would take a heap block for it: on a deep history, millions of blocks.
pub type FileList = SmallVec<[EntryRc; 1]>;

/// File entries that a document being read takes instead of its own equal copies, by id.
///
/// A checkpoint lists again every file of the snapshots it covers: on a deep history a
/// million entries. Read through a pool of the snapshots' entries, it allocates none of
/// them, where reading them first and sharing them after held them all twice.
///
/// Cloning it shares it: the checkpoints are read side by side, through one pool.
///
/// A slot per id ([`FileIdMap`]): 8 bytes per file of a deep history, where a hash map
/// of its two million entries took 36 MB at discovery's peak.
#[derive(Clone)]
pub struct EntryPool(Arc<FileIdMap<EntryRc>>);

impl EntryPool {
    /// A pool of `entries`; of two with one id, the later.
    pub fn new<'a>(entries: impl Iterator<Item = &'a EntryRc> + Clone) -> EntryPool {
        let mut map = FileIdMap::for_ids(entries.clone().map(|f| f.id));
        for f in entries {
            map.insert(f.id, EntryRc::clone(f));
        }
        EntryPool(Arc::new(map))
    }

    /// The pool's entry of `id`.
    pub fn get(&self, id: FileId) -> Option<&EntryRc> {
        self.0.get(id)
    }
}
