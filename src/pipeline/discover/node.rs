//! A node as discovery found it: its metadata files, its live files, and what is wrong.

use super::disk::ListedDirs;
use super::findings::Finding;
use super::live::Generation;
use super::load;
use super::purged::PurgedTable;
use crate::format::ids::{
    FileId, FileIdMap, FileIdSet, LoadPos, Nanos, SnapshotSeq, TableKey, WalSeq,
};
use crate::format::layout::ParquetPath;
use crate::format::model::EntryRc;
use crate::format::model::{Checkpoint, DbFiles, Doc, FileEntry, Snapshot, TableIndexMarker};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// A snapshot file as read from disk.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub seq: SnapshotSeq,
    pub doc: Doc<Snapshot>,
    pub mtime: SystemTime,
    /// Bytes on disk.
    pub size: u64,
}

/// A checkpoint file as read from disk.
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    pub path: PathBuf,
    pub doc: Doc<Checkpoint>,
    /// How many of its entries are not also a snapshot's (equal entries are one shared
    /// entry): when none, a check of every snapshot's files has seen all of its files.
    pub own_entries: usize,
    pub mtime: SystemTime,
    /// Bytes on disk.
    pub size: u64,
}

/// A file of a table, with its table: an input of a merge.
///
/// The node's own lists ([`Node::live`], [`Node::hidden`]) hold the entries alone, under
/// their table's key: a deep history's millions of files, 16 bytes less each.
#[derive(Clone, Debug, Serialize)]
pub struct LiveFile {
    pub table: TableKey,
    #[serde(flatten)]
    pub entry: EntryRc,
    /// Where the server holds it in its list of the table ([`Node::load_pos`]).
    #[serde(rename = "load_position")]
    pub load_pos: LoadPos,
}

impl AsRef<FileEntry> for LiveFile {
    fn as_ref(&self) -> &FileEntry {
        &self.entry
    }
}

/// Everything known about one node directory.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub generation: Generation,
    /// Ascending by sequence number.
    pub snapshots: Vec<SnapshotFile>,
    pub checkpoints: Vec<CheckpointFile>,
    pub table_index_marker: Option<TableIndexMarker>,
    /// Files under `db-indices/` and `table-snapshots/`.
    pub table_index_files: Vec<PathBuf>,
    pub wal: Vec<WalSeq>,
    /// The file set the server would load, per table, ordered by id.
    pub live: BTreeMap<TableKey, Vec<EntryRc>>,
    /// Where each live file stands in the server's list of its table (its order among
    /// versions of a point).
    pub load_pos: FileIdMap<LoadPos>,
    pub findings: Vec<Finding>,
    /// Snapshots the server reads at startup: the newest ones, or those after the newest
    /// checkpoint it merges.
    pub loaded_snapshots: usize,
    /// Checkpoints the server merges at startup (the newest of each month that reaches its
    /// load window); none means it loads snapshots alone.
    pub checkpoints_loaded: usize,
    /// Entries of files the server purged (retention, hard deletes), per table; not in `live`.
    pub purged: BTreeMap<TableKey, PurgedTable>,
    /// Files on disk that the server does not load (beyond its load window), per table,
    /// ordered by id.
    pub hidden: BTreeMap<TableKey, Vec<EntryRc>>,
    /// How many entries each directory under `dbs/` held when it was listed.
    pub listed_dirs: ListedDirs,
    /// How many of the newest snapshots the server loads when it has no checkpoints.
    pub load_window: usize,
    /// Database and table names from the node's catalog, where kompactor can read it
    /// ([`crate::format::catalog`]).
    pub catalog_names: BTreeMap<TableKey, (String, String)>,
}

impl Node {
    pub fn newest_snapshot(&self) -> Option<&SnapshotFile> {
        self.snapshots.last()
    }

    /// The first file id that no snapshot or checkpoint has used or promised.
    pub fn next_free_file_id(&self) -> FileId {
        let mut next = 0u64;
        for s in &self.snapshots {
            let v = &s.doc.value;
            next = next.max(v.next_file_id.0);
            let removed = v.removed_files.iter().flat_map(|r| r.iter());
            for (_, _, f) in v.databases.iter().chain(removed) {
                next = next.max(f.id.0 + 1);
            }
        }
        for c in &self.checkpoints {
            let v = &c.doc.value;
            next = next.max(v.next_file_id.map_or(0, |n| n.0));
            for (_, _, f) in v.databases.iter().chain(v.pending_removed_files.iter()) {
                next = next.max(f.id.0 + 1);
            }
        }
        FileId(next)
    }

    /// The file lists of every snapshot, and of every checkpoint that lists a file no
    /// snapshot does: every listed file, without the checkpoints' repeats of millions of the
    /// snapshots' entries, for checks that look at each file on its own.
    pub fn listings(&self) -> impl Iterator<Item = &DbFiles> {
        let snapshots = self.snapshots.iter().map(|s| &s.doc.value.databases);
        let checkpoints = self.checkpoints.iter().filter(|c| c.own_entries > 0);
        snapshots.chain(checkpoints.map(|c| &c.doc.value.databases))
    }

    /// The ids of the live files.
    pub fn live_ids(&self) -> FileIdSet {
        FileIdSet::new(self.live.values().flatten().map(|f| f.id))
    }

    /// The ids of every file a snapshot's `removed_files` or a checkpoint's
    /// `pending_removed_files` names.
    pub fn removal_named_ids(&self) -> FileIdSet {
        let snapshots = self
            .snapshots
            .iter()
            .flat_map(|s| s.doc.value.removed_files.iter().flat_map(|r| r.iter()));
        let checkpoints = self
            .checkpoints
            .iter()
            .flat_map(|c| c.doc.value.pending_removed_files.iter());
        FileIdSet::new(snapshots.chain(checkpoints).map(|(_, _, f)| f.id))
    }

    /// The checkpoints the server merges at startup: the newest of each month whose range
    /// reaches its load window, oldest month first ([`load::select`]).
    pub fn effective_checkpoints(&self) -> Vec<&CheckpointFile> {
        if self.generation < Generation::V3_8_2 {
            return Vec::new();
        }
        load::select(
            &self.checkpoints,
            self.newest_snapshot().map(|s| s.seq),
            load::snapshots_loaded(self.generation, self.load_window),
            |c| {
                (
                    c.doc.value.year_month.as_str(),
                    c.doc.value.last_snapshot_sequence_number,
                )
            },
        )
    }

    /// What the server's startup load is computed from: this node's documents.
    pub fn load_inputs(&self) -> load::Inputs<'_> {
        load::Inputs {
            snapshots: self
                .snapshots
                .iter()
                .map(|s| (s.seq, &s.doc.value))
                .collect(),
            checkpoints: self.checkpoints.iter().map(|c| &c.doc.value).collect(),
            generation: self.generation,
            window: self.load_window,
        }
    }

    /// Where every file on record would stand if the server loaded every snapshot and
    /// checkpoint: the order among live and hidden files that `--include-hidden` merges.
    pub fn unbounded_load_positions(&self) -> FileIdMap<LoadPos> {
        let mut inputs = self.load_inputs();
        inputs.window = usize::MAX;
        // Every month's checkpoint reaches an unbounded window.
        super::live::by_id(load::load(&inputs).lists).1
    }

    /// Display name of a table: `db/table` names from `name-id` paths (up to 3.5), else ids.
    pub fn table_label(&self, key: TableKey) -> String {
        match self.table_names(key) {
            Some((db, table)) => format!("{db}.{table}"),
            None => format!("{}/{}", key.db, key.table),
        }
    }

    /// The database and table names of a table: from the node's catalog (3.0 to 3.9), else
    /// from its Parquet paths (up to 3.5).
    pub fn table_names(&self, key: TableKey) -> Option<(String, String)> {
        if let Some(n) = self.catalog_names.get(&key) {
            return Some(n.clone());
        }
        let f = self
            .live
            .get(&key)
            .or_else(|| self.hidden.get(&key))?
            .first()?;
        f.path
            .with_str(|p| ParquetPath::parse(p)?.names(key.db, key.table))
    }
}

/// The newest data time of some files (`Nanos::MIN` for none).
pub fn newest_time<'a, F: AsRef<FileEntry> + 'a>(files: impl IntoIterator<Item = &'a F>) -> Nanos {
    files
        .into_iter()
        .map(|f| f.as_ref().max_time)
        .max()
        .unwrap_or(Nanos::MIN)
}
