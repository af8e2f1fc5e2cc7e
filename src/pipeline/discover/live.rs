//! The server's rules for what it loads at startup: generations, load window, the live set.

use super::disk::DiskFiles;
use super::findings::Finding;
use super::node::{newest_time, LiveFile, Node, SnapshotFile};
use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::model::{DbFiles, FileEntry};
use foldhash::HashSet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

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
///
/// The replay keeps references to the documents' entries and copies only the survivors: a
/// deep history adds and removes millions of entries on the way.
pub(super) fn compute_live(node: &mut Node) {
    type Replay<'a> = BTreeMap<FileId, (TableKey, &'a Arc<FileEntry>)>;
    fn add<'a>(live: &mut Replay<'a>, files: &'a DbFiles) {
        for (db, table, f) in files.iter() {
            live.insert(f.id, (TableKey { db, table }, f));
        }
    }
    fn remove(live: &mut Replay<'_>, files: &DbFiles) {
        for (_, _, f) in files.iter() {
            live.remove(&f.id);
        }
    }

    let mut live: Replay = BTreeMap::new();
    let cps = node.effective_checkpoints();
    let loaded = if let Some(newest) = cps
        .iter()
        .map(|c| c.doc.value.last_snapshot_sequence_number)
        .max()
    {
        for c in &cps {
            add(&mut live, &c.doc.value.databases);
            remove(&mut live, &c.doc.value.pending_removed_files);
        }
        let newer: Vec<&SnapshotFile> = node.snapshots.iter().filter(|s| s.seq > newest).collect();
        for s in &newer {
            add(&mut live, &s.doc.value.databases);
            if let Some(r) = &s.doc.value.removed_files {
                remove(&mut live, r);
            }
        }
        newer.len()
    } else {
        let window = node.load_window;
        let apply_removals = node.generation >= Generation::V3_2;
        for s in node.snapshots.iter().rev().take(window) {
            add(&mut live, &s.doc.value.databases);
            if apply_removals {
                if let Some(r) = &s.doc.value.removed_files {
                    remove(&mut live, r);
                }
            }
        }
        node.snapshots.len().min(window)
    };
    let by_table = by_table(live.values().copied());
    node.loaded_snapshots = loaded;
    node.live = by_table;
}

/// Copies entries into per-table lists, keeping their order.
///
/// The lists live as long as the run and hold every file of the node, so each is allocated
/// at its exact size up front: growing by doubling would leave a third of them empty, and
/// shrinking afterwards would leave that room as gaps in the heap.
fn by_table<'a>(
    files: impl Iterator<Item = (TableKey, &'a Arc<FileEntry>)> + Clone,
) -> BTreeMap<TableKey, Vec<LiveFile>> {
    let mut counts: BTreeMap<TableKey, usize> = BTreeMap::new();
    for (table, _) in files.clone() {
        *counts.entry(table).or_default() += 1;
    }
    let mut out: BTreeMap<TableKey, Vec<LiveFile>> = counts
        .into_iter()
        .map(|(table, n)| (table, Vec::with_capacity(n)))
        .collect();
    for (table, f) in files {
        out.get_mut(&table).expect("counted above").push(LiveFile {
            table,
            entry: f.clone(),
        });
    }
    out
}

/// Finds the files the server does not load although they are on disk and nothing removed
/// them: listed only in snapshots beyond its load window, or (with checkpoints) in snapshots
/// its checkpoints were built without. Their rows are invisible to queries.
/// `removed` holds the ids of the files a removal names ([`Node::removal_named_ids`]).
pub(super) fn compute_hidden(node: &mut Node, disk: &DiskFiles, removed: &HashSet<FileId>) {
    let live: HashSet<FileId> = node.live.values().flatten().map(|f| f.entry.id).collect();
    let mut hidden: BTreeMap<FileId, (TableKey, &Arc<FileEntry>)> = BTreeMap::new();
    for files in node.listings() {
        for (db, table, f) in files.iter() {
            if live.contains(&f.id)
                || removed.contains(&f.id)
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
        let min_time = files
            .iter()
            .map(|f| f.entry.min_time)
            .min()
            .unwrap_or(Nanos::MAX);
        node.findings.push(Finding::Hidden {
            table: *table,
            files: files.len(),
            rows: files.iter().map(|f| f.entry.row_count).sum(),
            bytes: files.iter().map(|f| f.entry.size_bytes).sum(),
            min_time,
            max_time: newest_time(files),
        });
    }
    node.hidden = by_table;
}
