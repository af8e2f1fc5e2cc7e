//! The server's startup load, step by step: which files it lists for each table, and in what
//! order.
//!
//! The order is part of the answer. At query time the server sorts a table's list by
//! `min_time`, largest first, with a stable sort, and numbers the files in that order; of the
//! versions of a point in files of one `chunk_time`, each field takes its value from the
//! highest-numbered file that has one. Files whose `min_time` is equal therefore keep the
//! order of the list built here, and that order depends on the load path
//! (`docs/on-disk-format.md`, "Precedence", gives the releases and the source of each rule):
//!
//! - **snapshots** (every release without checkpoints): the newest `window` snapshots, newest
//!   first; each appends its files, then drops its `removed_files` by id: ignored by 3.0 and
//!   3.1, `Vec::remove` (order kept) from 3.2, `swap_remove` (the last file takes the
//!   removed one's place) from 3.8.2;
//! - **checkpoints** (3.8.2+): the newest checkpoint of each month whose range reaches the
//!   load window, months in order, each appending its files and then removing (order kept)
//!   its `pending_removed_files` (not the first one's); then the snapshots after the newest
//!   of them, newest first, each appending the files the list does not hold yet and
//!   `swap_remove`-ing its `removed_files`.

use super::live::Generation;
use crate::format::ids::{FileId, FileIdMap, FileIdSet, SnapshotSeq, TableKey};
use crate::format::model::{Checkpoint, DbFiles, EntryRc, FileEntry, Snapshot};
use std::collections::BTreeMap;

/// How a load path drops the files a removal names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Removals are not read (3.0, 3.1).
    Ignored,
    /// The first file of that id leaves; the others keep their order (3.2 to 3.8.1).
    Ordered,
    /// The first file of that id leaves and the table's last file takes its place (3.8.2+).
    Swapped,
}

/// The least number of snapshots a 3.8.2+ server loads, whatever its lookback.
const MIN_SNAPSHOTS_LOADED: usize = 100;

/// What the load is computed from: a node's documents, as they are or as a commit would
/// leave them.
pub struct Inputs<'a> {
    /// Every snapshot, ascending by sequence number.
    pub snapshots: Vec<(SnapshotSeq, &'a Snapshot)>,
    /// Every checkpoint (not only the newest of each month).
    pub checkpoints: Vec<&'a Checkpoint>,
    pub generation: Generation,
    /// How many of the newest snapshots the server loads.
    pub window: usize,
}

/// The server's file list per table after its startup load, in its order.
pub struct Loaded {
    /// Per table, the files in the order the server holds them (a file listed twice is
    /// there twice, as in the server).
    pub lists: BTreeMap<TableKey, Vec<EntryRc>>,
    /// How many snapshots were read: all loaded ones on the snapshot path, the ones after
    /// the newest checkpoint on the checkpoint path.
    pub snapshots_loaded: usize,
    /// The checkpoints merged, oldest month first (empty on the snapshot path).
    pub checkpoints_used: Vec<SnapshotSeq>,
}

/// Loads as the server does at startup (see the module's documentation).
pub fn load(inputs: &Inputs) -> Loaded {
    let window = snapshots_loaded(inputs.generation, inputs.window);
    let newest: Vec<(SnapshotSeq, &Snapshot)> = inputs
        .snapshots
        .iter()
        .rev()
        .take(window)
        .copied()
        .collect();
    let selected = select_checkpoints(inputs, window);
    let ids = || {
        let cps = selected.iter().flat_map(|c| {
            c.databases
                .iter()
                .chain(c.pending_removed_files.iter())
                .map(|(_, _, f)| f.id)
        });
        let snaps = newest.iter().flat_map(|(_, s)| {
            s.databases
                .iter()
                .chain(s.removed_files.iter().flat_map(|r| r.iter()))
                .map(|(_, _, f)| f.id)
        });
        cps.chain(snaps)
    };
    let mut lists = Lists::for_ids(ids);
    if selected.is_empty() {
        let removal = match inputs.generation {
            Generation::Alpha | Generation::V3_0 => Removal::Ignored,
            g if g >= Generation::V3_8_2 => Removal::Swapped,
            _ => Removal::Ordered,
        };
        for (_, s) in &newest {
            lists.append(&s.databases, false);
            if let Some(r) = &s.removed_files {
                lists.remove(r, removal);
            }
        }
        return Loaded {
            lists: lists.finish(),
            snapshots_loaded: newest.len(),
            checkpoints_used: Vec::new(),
        };
    }
    lists.merge(&selected);
    let covered = selected
        .iter()
        .map(|c| c.last_snapshot_sequence_number)
        .max()
        .expect("checkpoints selected");
    let after: Vec<&Snapshot> = newest
        .iter()
        .filter(|(seq, _)| *seq > covered)
        .map(|(_, s)| *s)
        .collect();
    for s in &after {
        lists.append(&s.databases, true);
        if let Some(r) = &s.removed_files {
            lists.remove(r, Removal::Swapped);
        }
    }
    Loaded {
        lists: lists.finish(),
        snapshots_loaded: after.len(),
        checkpoints_used: selected
            .iter()
            .map(|c| c.last_snapshot_sequence_number)
            .collect(),
    }
}

/// The files the server's merge of `checkpoints` (months in order) lists per table, in its
/// order.
pub fn merge_checkpoints(checkpoints: &[&Checkpoint]) -> BTreeMap<TableKey, Vec<EntryRc>> {
    let mut lists = Lists::for_ids(|| {
        checkpoints.iter().flat_map(|c| {
            c.databases
                .iter()
                .chain(c.pending_removed_files.iter())
                .map(|(_, _, f)| f.id)
        })
    });
    lists.merge(checkpoints);
    lists.finish()
}

/// The checkpoints a 3.8.2+ server merges: the newest of each month, months in order, of
/// which only those whose range reaches the load window (their own sequence, or the next
/// month's, at least the newest snapshot's minus `window`). None before 3.8.2.
fn select_checkpoints<'a>(inputs: &Inputs<'a>, window: usize) -> Vec<&'a Checkpoint> {
    if inputs.generation < Generation::V3_8_2 {
        return Vec::new();
    }
    select(
        &inputs.checkpoints,
        inputs.snapshots.last().map(|s| s.0),
        window,
        |c| (c.year_month.as_str(), c.last_snapshot_sequence_number),
    )
    .into_iter()
    .copied()
    .collect()
}

/// Of `items` (checkpoints, each with its month and last sequence), the ones the server
/// merges when its newest snapshot is `newest` and it loads `window` snapshots, months in
/// order ([`select_checkpoints`]).
pub fn select<T>(
    items: &[T],
    newest: Option<SnapshotSeq>,
    window: usize,
    key: impl Fn(&T) -> (&str, SnapshotSeq),
) -> Vec<&T> {
    let mut by_month: BTreeMap<&str, &T> = BTreeMap::new();
    for c in items {
        let (month, seq) = key(c);
        let e = by_month.entry(month).or_insert(c);
        if seq > key(e).1 {
            *e = c;
        }
    }
    let months: Vec<&T> = by_month.into_values().collect();
    let Some(newest) = newest else {
        return months;
    };
    let cutoff = newest.0.saturating_sub(window as u64);
    let reaches = |c: &T| key(c).1 .0 >= cutoff;
    months
        .iter()
        .enumerate()
        .filter(|(i, c)| reaches(c) || months.get(i + 1).is_some_and(|n| reaches(n)))
        .map(|(_, c)| *c)
        .collect()
}

/// How many snapshots a server of `generation` loads when told `window`: from 3.8.2 at
/// least 100.
pub fn snapshots_loaded(generation: Generation, window: usize) -> usize {
    if generation >= Generation::V3_8_2 {
        window.max(MIN_SNAPSHOTS_LOADED)
    } else {
        window
    }
}

/// The fields the server compares when it asks whether a list holds a file already.
fn same_file(a: &FileEntry, b: &FileEntry) -> bool {
    a.id == b.id
        && a.path == b.path
        && a.size_bytes == b.size_bytes
        && a.row_count == b.row_count
        && a.chunk_time == b.chunk_time
        && a.min_time == b.min_time
        && a.max_time == b.max_time
}

/// The tables' lists while they are built, with where each id first stands.
///
/// Removals find a file by id: the position of each id's first occurrence is kept (a slot
/// per id), and only an id seen twice, or in two tables, is looked for along the list.
struct Lists {
    tables: BTreeMap<TableKey, Vec<Option<EntryRc>>>,
    /// Position of the first occurrence of each id in its table's list; `u32::MAX` if none.
    first: FileIdMap<u32>,
    /// Ids appended more than once.
    seen: FileIdSet,
    twice: FileIdSet,
}

const NOWHERE: u32 = u32::MAX;

impl Lists {
    fn for_ids<I: Iterator<Item = FileId> + Clone>(ids: impl Fn() -> I) -> Lists {
        Lists {
            tables: BTreeMap::new(),
            first: FileIdMap::for_ids(ids()),
            seen: FileIdSet::empty_for(ids()),
            twice: FileIdSet::empty_for(ids()),
        }
    }

    /// Appends every file of `files` to its table's list; with `unless_held`, only the files
    /// the list does not hold already (the server's check at run time, by value).
    fn append(&mut self, files: &DbFiles, unless_held: bool) {
        for (db, table, f) in files.iter() {
            let key = TableKey { db, table };
            let list = self.tables.entry(key).or_default();
            if unless_held
                && find(list, &self.first, &self.twice, f.id, |e| same_file(e, f)).is_some()
            {
                continue;
            }
            if !self.seen.insert(f.id) {
                self.twice.insert(f.id);
            }
            let at = list.len() as u32;
            if self.first.get(f.id).is_none_or(|&p| p == NOWHERE) {
                self.first.insert(f.id, at);
            }
            list.push(Some(EntryRc::clone(f)));
        }
    }

    /// Removes the first file of each id `files` names from its table's list.
    fn remove(&mut self, files: &DbFiles, how: Removal) {
        if how == Removal::Ignored {
            return;
        }
        for (db, table, f) in files.iter() {
            let Some(list) = self.tables.get_mut(&TableKey { db, table }) else {
                continue;
            };
            let Some(at) = find(list, &self.first, &self.twice, f.id, |_| true) else {
                continue;
            };
            match how {
                Removal::Ordered => list[at] = None,
                _ => {
                    list.swap_remove(at);
                    if let Some(Some(moved)) = list.get(at) {
                        if self.first.get(moved.id) == Some(&(list.len() as u32)) {
                            self.first.insert(moved.id, at as u32);
                        }
                    }
                }
            }
            // The id's first occurrence is gone; a later one, if any, is found by looking.
            if self.first.get(f.id) == Some(&(at as u32)) {
                self.first.insert(f.id, NOWHERE);
            }
        }
    }

    /// Merges checkpoints, months in order: each appends its files, and each but the first
    /// then removes its `pending_removed_files` (the server's merge reads the first
    /// month's as they stand, and never its removals).
    fn merge(&mut self, checkpoints: &[&Checkpoint]) {
        for (i, c) in checkpoints.iter().enumerate() {
            self.append(&c.databases, false);
            if i > 0 {
                self.remove(&c.pending_removed_files, Removal::Ordered);
            }
        }
        self.compact();
    }

    /// Closes the gaps ordered removals left, and finds each id's first occurrence again.
    fn compact(&mut self) {
        for list in self.tables.values_mut() {
            list.retain(Option::is_some);
            for (at, f) in list.iter().enumerate().rev() {
                self.first.insert(f.as_ref().expect("kept").id, at as u32);
            }
        }
    }

    fn finish(self) -> BTreeMap<TableKey, Vec<EntryRc>> {
        self.tables
            .into_iter()
            .map(|(k, list)| (k, list.into_iter().flatten().collect::<Vec<_>>()))
            .filter(|(_, list)| !list.is_empty())
            .collect()
    }
}

/// The position of the first file in `list` with id `id` that `matches` accepts.
fn find(
    list: &[Option<EntryRc>],
    first: &FileIdMap<u32>,
    twice: &FileIdSet,
    id: FileId,
    matches: impl Fn(&FileEntry) -> bool,
) -> Option<usize> {
    let hit = |at: usize| {
        list.get(at)?
            .as_ref()
            .filter(|e| e.id == id && matches(e))
            .map(|_| at)
    };
    if twice.contains(id) {
        return (0..list.len()).find_map(hit);
    }
    // Listed once: where it stands, if in this table.
    match first.get(id) {
        Some(&at) if at != NOWHERE => hit(at as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ids::{DbId, Nanos, TableId};

    fn entry(id: u64, min: i64) -> EntryRc {
        EntryRc::new(FileEntry {
            id: FileId(id),
            path: format!("n/dbs/1/0/2026-11-16/00-10/{id}.parquet").into(),
            size_bytes: 10,
            row_count: 1,
            chunk_time: Nanos(0),
            min_time: Nanos(min),
            max_time: Nanos(min + 1),
            extra: Default::default(),
        })
    }

    fn files(ids: &[u64]) -> DbFiles {
        let mut d = DbFiles::default();
        for &id in ids {
            d.push(DbId(1), TableId(0), entry(id, 0));
        }
        d
    }

    fn snapshot(seq: u64, added: &[u64], removed: Option<&[u64]>) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "1", "node_id": "n", "next_file_id": 100, "snapshot_sequence_number": seq,
            "wal_file_sequence_number": seq, "catalog_sequence_number": 1,
            "parquet_size_bytes": 0, "row_count": 0, "min_time": 0, "max_time": 0,
            "databases": []
        }))
        .unwrap();
        s.databases = files(added);
        s.removed_files = removed.map(files);
        s
    }

    fn checkpoint(month: &str, seq: u64, listed: &[u64], pending: &[u64]) -> Checkpoint {
        let mut c: Checkpoint = serde_json::from_value(serde_json::json!({
            "version": "1", "year_month": month, "last_snapshot_sequence_number": seq,
            "wal_file_sequence_number": seq, "catalog_sequence_number": 1,
            "parquet_size_bytes": 0, "row_count": 0, "min_time": 0, "max_time": 0,
            "databases": []
        }))
        .unwrap();
        c.databases = files(listed);
        c.pending_removed_files = files(pending);
        c
    }

    fn order(
        snaps: &[Snapshot],
        cps: &[Checkpoint],
        generation: Generation,
        window: usize,
    ) -> Vec<u64> {
        let inputs = Inputs {
            snapshots: snaps
                .iter()
                .map(|s| (s.snapshot_sequence_number, s))
                .collect(),
            checkpoints: cps.iter().collect(),
            generation,
            window,
        };
        let loaded = load(&inputs);
        loaded.lists.values().flatten().map(|f| f.id.0).collect()
    }

    #[test]
    fn snapshots_load_newest_first_and_removals_follow_the_release() {
        let snaps = [
            snapshot(1, &[1, 2], Some(&[])),
            snapshot(2, &[3, 4], Some(&[])),
            // Removes 5 (its own) and 1 (an older snapshot's, not loaded yet: no effect).
            snapshot(3, &[5, 6, 7], Some(&[5, 1])),
        ];
        assert_eq!(
            order(&snaps, &[], Generation::V3_0, 1000),
            [5, 6, 7, 3, 4, 1, 2]
        );
        assert_eq!(
            order(&snaps, &[], Generation::V3_3, 1000),
            [6, 7, 3, 4, 1, 2]
        );
        // swap_remove: the last file (7) takes the place of the removed one.
        assert_eq!(
            order(&snaps, &[], Generation::V3_8_2, 1000),
            [7, 6, 3, 4, 1, 2]
        );
        // Only the newest two.
        assert_eq!(order(&snaps, &[], Generation::V3_3, 2), [6, 7, 3, 4]);
    }

    #[test]
    fn checkpoints_come_first_then_newer_snapshots_newest_first() {
        let snaps: Vec<Snapshot> = (1..=6)
            .map(|s| match s {
                5 => snapshot(5, &[50, 51], Some(&[11])),
                6 => snapshot(6, &[60, 20], Some(&[])),
                s => snapshot(s, &[s * 10], Some(&[])),
            })
            .collect();
        let cps = [
            checkpoint("2026-10", 2, &[10, 11, 20], &[]),
            // An older checkpoint of November, replaced by the newer one.
            checkpoint("2026-11", 3, &[30], &[]),
            checkpoint("2026-11", 4, &[30, 40], &[10]),
        ];
        // October's list, less 10 (November's pending removal); November's; then snapshot 6
        // (20 is held already) and snapshot 5, whose removal of 11 lets 51 take its place.
        assert_eq!(
            order(&snaps, &cps, Generation::V3_8_2, 1000),
            [51, 20, 30, 40, 60, 50]
        );
    }

    #[test]
    fn checkpoints_out_of_the_load_window_are_not_read() {
        let snaps: Vec<Snapshot> = (1..=300).map(|s| snapshot(s, &[s], Some(&[]))).collect();
        let cps = [
            checkpoint("2026-08", 10, &(1..=10).collect::<Vec<_>>(), &[]),
            checkpoint("2026-09", 150, &(11..=150).collect::<Vec<_>>(), &[]),
            checkpoint("2026-10", 250, &(151..=250).collect::<Vec<_>>(), &[]),
        ];
        // 300 - 100 = 200: October reaches it, September through October's; August does not.
        let got = order(&snaps, &cps, Generation::V3_8_2, 100);
        assert_eq!(got.len(), 290);
        assert_eq!(got[0], 11);
        assert!(!got.contains(&1));
        // None reaches it: the snapshots alone, the newest 100.
        let got = order(&snaps[..], &cps[..1], Generation::V3_8_2, 100);
        assert_eq!(got.len(), 100);
        assert_eq!(got[0], 300);
    }
}
