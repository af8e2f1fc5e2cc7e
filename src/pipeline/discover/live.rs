//! The server's rules for what it loads at startup: generations, load window, the live set.

use super::node::{LiveFile, Node, SnapshotFile};
use super::findings::Finding;
use crate::format::ids::{FileId, TableKey};
use crate::format::model::DbFiles;
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
    /// How many of the newest snapshots a server of this generation loads by default.
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
    let mut live: BTreeMap<FileId, LiveFile> = BTreeMap::new();
    let add = |live: &mut BTreeMap<FileId, LiveFile>, files: &DbFiles| {
        for (db, table, f) in files.iter() {
            live.insert(
                f.id,
                LiveFile {
                    table: TableKey { db, table },
                    entry: f.clone(),
                },
            );
        }
    };
    let remove = |live: &mut BTreeMap<FileId, LiveFile>, files: &DbFiles| {
        for (_, _, f) in files.iter() {
            live.remove(&f.id);
        }
    };

    let cps = node.effective_checkpoints();
    if let Some(newest) = cps
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
        node.loaded_snapshots = newer.len();
    } else {
        let window = node.generation.default_load_window();
        let apply_removals = node.generation >= Generation::V3_2;
        let loaded = node.snapshots.len().min(window);
        for s in node.snapshots.iter().rev().take(window) {
            add(&mut live, &s.doc.value.databases);
            if apply_removals {
                if let Some(r) = &s.doc.value.removed_files {
                    remove(&mut live, r);
                }
            }
        }
        node.loaded_snapshots = loaded;
        let outside = node.snapshots.len() - loaded;
        for s in &node.snapshots[..outside] {
            let n = s.doc.value.databases.iter().count();
            if n > 0 {
                node.findings.push(Finding::OutsideLoadWindow {
                    snapshot: s.seq,
                    files: n,
                });
            }
        }
    }

    let mut by_table: BTreeMap<TableKey, Vec<LiveFile>> = BTreeMap::new();
    for (_, f) in live {
        by_table.entry(f.table).or_default().push(f);
    }
    node.live = by_table;
}

