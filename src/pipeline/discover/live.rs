//! The server's rules for what it loads at startup: generations, load window, the live set.

use super::disk::DiskFiles;
use super::findings::Finding;
use super::node::{newest_time, Node, SnapshotFile};
use crate::format::ids::{FileId, FileIdSet, Nanos, TableKey};
use crate::format::model::DbFiles;
use crate::format::model::EntryRc;
use serde::Serialize;
use std::collections::BTreeMap;

/// The on-disk generation of a node, from the newest feature its files show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Generation {
    /// Snapshots without a `version` key (Jan 2025 alpha).
    #[serde(rename = "alpha")]
    Alpha,
    /// `version: "1"` snapshots without `removed_files`.
    #[serde(rename = "3.0-3.1")]
    V3_0,
    /// Snapshots carry `removed_files`.
    #[serde(rename = "3.2+")]
    V3_2,
    /// A table index (`db-indices/`, marker) exists.
    #[serde(rename = "3.3+")]
    V3_3,
    /// Parquet paths use ids only (`dbs/<db_id>/<table_id>/...`).
    #[serde(rename = "3.6+")]
    V3_6,
    /// Snapshot checkpoints exist.
    #[serde(rename = "3.8.2+")]
    V3_8_2,
}

impl Generation {
    /// How many of the newest snapshots a server of this generation loads by default (a
    /// server run with another `--gen1-lookback-duration` loads lookback / gen1 duration).
    pub fn default_load_window(self) -> usize {
        match self {
            Generation::Alpha | Generation::V3_0 => 1000,
            // --gen1-lookback-duration 1 month / gen1 10m.
            _ => 4383,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Generation::Alpha => "alpha",
            Generation::V3_0 => "3.0-3.1",
            Generation::V3_2 => "3.2+ (removed_files)",
            Generation::V3_3 => "3.3+ (table index)",
            Generation::V3_6 => "3.6+ (id-only paths)",
            Generation::V3_8_2 => "3.8.2+ (checkpoints)",
        }
    }
}

/// Builds the file set exactly as the server does at startup (spec §3).
pub(super) fn compute_live(node: &mut Node) {
    let mut replay = Replay::default();
    let cps = node.effective_checkpoints();
    let loaded = if let Some(newest) = cps
        .iter()
        .map(|c| c.doc.value.last_snapshot_sequence_number)
        .max()
    {
        for c in &cps {
            replay.add(&c.doc.value.databases);
            replay.remove(&c.doc.value.pending_removed_files);
        }
        let newer: Vec<&SnapshotFile> = node.snapshots.iter().filter(|s| s.seq > newest).collect();
        for s in &newer {
            replay.add(&s.doc.value.databases);
            if let Some(r) = &s.doc.value.removed_files {
                replay.remove(r);
            }
        }
        newer.len()
    } else {
        let window = node.load_window;
        let apply_removals = node.generation >= Generation::V3_2;
        for s in node.snapshots.iter().rev().take(window) {
            replay.add(&s.doc.value.databases);
            if apply_removals {
                if let Some(r) = &s.doc.value.removed_files {
                    replay.remove(r);
                }
            }
        }
        node.snapshots.len().min(window)
    };
    let live = replay.live();
    node.loaded_snapshots = loaded;
    node.live = live;
}

/// The server's replay: files added and removed by id, in order; of several operations on one
/// id, the last decides.
///
/// The lists are walked newest first, and the first operation met on an id decides; a
/// bitmap of the ids met is all the replay holds. A deep history replays millions of
/// operations, and noting them down to sort them took 60 MB at discovery's peak.
#[derive(Default)]
struct Replay<'a> {
    /// The lists applied, in order, and whether each adds its files or removes them.
    steps: Vec<(Op, &'a DbFiles)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Add,
    Remove,
}

impl<'a> Replay<'a> {
    fn add(&mut self, files: &'a DbFiles) {
        self.steps.push((Op::Add, files));
    }

    fn remove(&mut self, files: &'a DbFiles) {
        self.steps.push((Op::Remove, files));
    }

    /// The files present at the end, per table, ordered by id.
    fn live(self) -> BTreeMap<TableKey, Vec<EntryRc>> {
        let ids = self
            .steps
            .iter()
            .flat_map(|(_, f)| f.iter().map(|e| e.2.id));
        let mut met = FileIdSet::empty_for(ids);
        // Counted first: the lists live as long as the run (see `by_table`).
        let mut counts: BTreeMap<TableKey, usize> = BTreeMap::new();
        self.each_present(&mut met, |table, files| {
            *counts.entry(table).or_default() += files.len()
        });
        met.clear();
        let mut out: BTreeMap<TableKey, Vec<EntryRc>> = counts
            .into_iter()
            .map(|(table, n)| (table, Vec::with_capacity(n)))
            .collect();
        self.each_present(&mut met, |table, files| {
            let list = out.get_mut(&table).expect("counted above");
            list.extend(files.iter().map(|&f| EntryRc::clone(f)));
        });
        for list in out.values_mut() {
            list.sort_unstable_by_key(|f| f.id);
        }
        out
    }

    /// Tells `present`, a table's list at a time, the files whose last operation adds them;
    /// `met` is empty on the way in.
    fn each_present(&self, met: &mut FileIdSet, mut present: impl FnMut(TableKey, &[&'a EntryRc])) {
        let mut decided = Vec::new();
        for &(op, files) in self.steps.iter().rev() {
            for (db, tables) in files.0.iter().rev() {
                for (table, list) in tables.tables.iter().rev() {
                    decided.clear();
                    // Later in a list is later in the replay.
                    for f in list.iter().rev() {
                        if met.insert(f.id) && op == Op::Add {
                            decided.push(f);
                        }
                    }
                    if !decided.is_empty() {
                        let table = TableKey {
                            db: *db,
                            table: *table,
                        };
                        present(table, &decided);
                    }
                }
            }
        }
    }
}

/// Copies entries into per-table lists, keeping their order.
///
/// The lists live as long as the run and hold every file of the node, so each is allocated
/// at its exact size up front: growing by doubling would leave a third of them empty, and
/// shrinking afterwards would leave that room as gaps in the heap.
fn by_table<'a>(
    files: impl Iterator<Item = (TableKey, &'a EntryRc)> + Clone,
) -> BTreeMap<TableKey, Vec<EntryRc>> {
    let mut counts: BTreeMap<TableKey, usize> = BTreeMap::new();
    for (table, _) in files.clone() {
        *counts.entry(table).or_default() += 1;
    }
    let mut out: BTreeMap<TableKey, Vec<EntryRc>> = counts
        .into_iter()
        .map(|(table, n)| (table, Vec::with_capacity(n)))
        .collect();
    for (table, f) in files {
        out.get_mut(&table)
            .expect("counted above")
            .push(EntryRc::clone(f));
    }
    out
}

/// Finds the files the server does not load although they are on disk and nothing removed
/// them: listed only in snapshots beyond its load window, or (with checkpoints) in snapshots
/// its checkpoints were built without. Their rows are invisible to queries.
/// `removed` holds the ids of the files a removal names ([`Node::removal_named_ids`]).
pub(super) fn compute_hidden(node: &mut Node, disk: &DiskFiles, removed: &FileIdSet) {
    let live = node.live_ids();
    let mut hidden: BTreeMap<FileId, (TableKey, &EntryRc)> = BTreeMap::new();
    for files in node.listings() {
        for (db, table, f) in files.iter() {
            if live.contains(f.id)
                || removed.contains(f.id)
                || hidden.contains_key(&f.id)
                || !disk.contains(&f.path)
            {
                continue;
            }
            hidden.insert(f.id, (TableKey { db, table }, f));
        }
    }
    let by_table = by_table(hidden.values().copied());
    for (table, files) in &by_table {
        let min_time = files.iter().map(|f| f.min_time).min().unwrap_or(Nanos::MAX);
        node.findings.push(Finding::Hidden {
            table: *table,
            files: files.len(),
            rows: files.iter().map(|f| f.row_count).sum(),
            bytes: files.iter().map(|f| f.size_bytes).sum(),
            min_time,
            max_time: newest_time(files),
        });
    }
    node.hidden = by_table;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ids::{DbId, TableId};
    use crate::format::model::FileEntry;

    fn entry(id: u64, size: u64) -> EntryRc {
        EntryRc::new(FileEntry {
            id: FileId(id),
            path: format!("n/dbs/1/0/2026-11-16/00-10/{id}.parquet").into(),
            size_bytes: size,
            row_count: 1,
            chunk_time: Nanos(0),
            min_time: Nanos(0),
            max_time: Nanos(1),
            extra: Default::default(),
        })
    }

    fn list(files: &[(u64, &EntryRc)]) -> DbFiles {
        let mut d = DbFiles::default();
        for (table, f) in files {
            d.push(DbId(1), TableId(*table), EntryRc::clone(f));
        }
        d
    }

    #[test]
    fn the_last_operation_on_an_id_decides() {
        let (one, two, three) = (entry(1, 10), entry(2, 10), entry(3, 10));
        let (two_again, one_moved) = (entry(2, 20), entry(1, 30));
        let first = list(&[(0, &one), (0, &two), (1, &three)]);
        let removal = list(&[(0, &two), (0, &entry(9, 1))]);
        let second = list(&[(0, &two_again), (1, &one_moved)]);
        let last_removal = list(&[(1, &three)]);
        let mut replay = Replay::default();
        replay.add(&first);
        replay.remove(&removal);
        replay.add(&second);
        replay.remove(&last_removal);
        let live = replay.live();
        let table = |t| TableKey {
            db: DbId(1),
            table: TableId(t),
        };
        let ids = |t| -> Vec<(u64, u64)> {
            live.get(&table(t)).map_or(Vec::new(), |files| {
                files.iter().map(|f| (f.id.0, f.size_bytes)).collect()
            })
        };
        // 2 was removed and added again; 1 moved to table 1; 3 and 9 are gone.
        assert_eq!(ids(0), [(2, 20)]);
        assert_eq!(ids(1), [(1, 30)]);
        assert!(EntryRc::ptr_eq(&live[&table(0)][0], &two_again));
        assert_eq!(
            live.keys().copied().collect::<Vec<_>>(),
            [table(0), table(1)]
        );
    }
}
