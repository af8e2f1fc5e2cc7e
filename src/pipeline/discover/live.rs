//! The server's rules for what it loads at startup: generations, load window, the live set.

use super::disk::DiskFiles;
use super::findings::Finding;
use super::load::load;
use super::node::{newest_time, Node};
use crate::format::ids::{FileId, FileIdMap, FileIdSet, LoadPos, Nanos, TableKey};
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

/// Builds the file set exactly as the server does at startup ([`load`]), and where each file
/// stands in the server's list of its table.
pub(super) fn compute_live(node: &mut Node) {
    let loaded = load(&node.load_inputs());
    node.loaded_snapshots = loaded.snapshots_loaded;
    node.checkpoints_loaded = loaded.checkpoints_used.len();
    let (live, positions) = by_id(loaded.lists);
    node.live = live;
    node.load_pos = positions;
}

/// The lists in the server's order as the node keeps them: each table's files once, ordered
/// by id, and each file's position in its table's list (the last, for a file listed twice:
/// the copy that counts as the latest).
pub(crate) fn by_id(
    mut lists: BTreeMap<TableKey, Vec<EntryRc>>,
) -> (BTreeMap<TableKey, Vec<EntryRc>>, FileIdMap<LoadPos>) {
    let mut positions = FileIdMap::for_ids(lists.values().flatten().map(|f| f.id));
    for list in lists.values_mut() {
        for (at, f) in list.iter().enumerate() {
            positions.insert(f.id, LoadPos(at as u32));
        }
        list.sort_by_key(|f| f.id);
        list.dedup_by_key(|f| f.id);
    }
    (lists, positions)
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
