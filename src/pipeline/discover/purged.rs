//! Files the server removed (retention, hard deletes) that snapshots and checkpoints still list.
//!
//! The server deletes expired files and the files of hard-deleted tables, but often leaves
//! their entries in snapshots and checkpoints (`docs/on-disk-format.md`, section 6). Such an
//! entry is normal state, not damage: this module tells it apart from a lost file, so that
//! discovery can leave it out of the live set and the commit can drop it from the metadata.

use super::disk::DiskFiles;
use super::node::Node;
use crate::format::ids::{FileId, FileIdSet, Nanos, SnapshotSeq, TableKey};
use crate::format::model::{EntryRc, TableIndexFiles};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the table index (3.3+) says about the node's files.
struct TableIndexView {
    /// Snapshots up to this sequence number have been folded into the index.
    seen_up_to: SnapshotSeq,
    /// Every file id the index still lists (`db-indices/` and `table-snapshots/`).
    listed: HashSet<FileId>,
}

impl TableIndexView {
    /// Reads the index, or `None` when the node has none (3.0 to 3.2) or it cannot be read,
    /// in which case no file is judged purged by it.
    fn read(node: &Node) -> Option<TableIndexView> {
        let marker = node.table_index_marker.as_ref()?;
        let mut listed = HashSet::new();
        for p in &node.table_index_files {
            let bytes = std::fs::read(p).ok()?;
            if p.to_string_lossy().ends_with("index.info.json")
                && p.starts_with(node.dir.join("db-indices"))
            {
                let index: TableIndexFiles = serde_json::from_slice(&bytes).ok()?;
                listed.extend(index.files.iter().map(|f| f.id));
            } else {
                // A table snapshot not yet folded into the index: every file entry it names
                // counts as listed, so that nothing it may still hold is taken for purged.
                let v: Value = serde_json::from_slice(&bytes).ok()?;
                collect_entry_ids(&v, &mut listed);
            }
        }
        Some(TableIndexView {
            seen_up_to: marker.last_sequence_number,
            listed,
        })
    }
}

/// Adds the id of every object in `v` that looks like a file entry (has `id` and `path`).
fn collect_entry_ids(v: &Value, out: &mut HashSet<FileId>) {
    match v {
        Value::Object(m) => {
            if let (Some(id), Some(Value::String(_))) =
                (m.get("id").and_then(Value::as_u64), m.get("path"))
            {
                out.insert(FileId(id));
            }
            m.values().for_each(|x| collect_entry_ids(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_entry_ids(x, out)),
        _ => {}
    }
}

/// The purged entries of one table: files the metadata lists that the server removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgedTable {
    /// The entries, one per file id, ordered by id: shared with the documents that list
    /// them, as a retention period leaves most of a deep history's entries here.
    pub entries: Vec<EntryRc>,
}

impl PurgedTable {
    /// The bytes the removed files held.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|f| f.size_bytes).sum()
    }

    /// The rows the removed files held.
    pub fn rows(&self) -> u64 {
        self.entries.iter().map(|f| f.row_count).sum()
    }

    /// The time range of the removed files' data.
    pub fn time_range(&self) -> (Nanos, Nanos) {
        let min = self
            .entries
            .iter()
            .map(|f| f.min_time)
            .min()
            .unwrap_or(Nanos::MAX);
        let max = self
            .entries
            .iter()
            .map(|f| f.max_time)
            .max()
            .unwrap_or(Nanos::MIN);
        (min, max)
    }
}

/// Finds the entries the server purged: listed in a snapshot or checkpoint, missing on disk,
/// and either named by a later removal or no longer listed by a table index that has seen them.
///
/// A missing file that the table index still lists, or that nothing marks as removed on a
/// node without a table index, is lost, not purged: it is left to the damage checks.
/// `removal_named` holds the ids of the files a removal names ([`Node::removal_named_ids`]).
///
/// The live files were looked for already ([`super::findings::check_live_files`]):
/// `live_absent` holds those that are not on disk. Every other entry of a live id names the
/// same path, unless the id is reused (`reused`): only the rest are looked for, and a live
/// file found absent is not looked for again.
pub(super) fn find_purged(
    node: &Node,
    data_dir: &Path,
    disk: &DiskFiles,
    removal_named: &FileIdSet,
    live_absent: &BTreeSet<FileId>,
    reused: &BTreeSet<FileId>,
) -> BTreeMap<TableKey, PurgedTable> {
    let listings = || {
        let snapshots = node
            .snapshots
            .iter()
            .map(|s| (&s.doc.value.databases, s.seq));
        let checkpoints = node.checkpoints.iter().map(|c| {
            (
                &c.doc.value.databases,
                c.doc.value.last_snapshot_sequence_number,
            )
        });
        snapshots.chain(checkpoints)
    };
    // Only a file that is gone can have been purged. A healthy node has none, so these ids
    // are found first, and only their entries are gathered below.
    let mut gone: HashSet<FileId> = live_absent.iter().copied().collect();
    let live = node.live_ids();
    let listed = node
        .listings()
        .flat_map(|files| files.iter())
        .filter(|(_, _, f)| !live.contains(f.id) || reused.contains(&f.id));
    disk.contains_each(
        listed,
        |(_, _, f)| &f.path,
        |(_, _, f), present| {
            if !present {
                gone.insert(f.id);
            }
        },
    );
    if gone.is_empty() {
        return BTreeMap::new();
    }
    let index = TableIndexView::read(node);

    // Each listed entry with the earliest snapshot that covers it.
    let mut listed: HashMap<FileId, (TableKey, &EntryRc, SnapshotSeq)> = HashMap::new();
    for (files, seq) in listings() {
        for (db, table, f) in files.iter().filter(|(_, _, f)| gone.contains(&f.id)) {
            let e = listed
                .entry(f.id)
                .or_insert((TableKey { db, table }, f, seq));
            e.2 = e.2.min(seq);
        }
    }

    let mut out: BTreeMap<TableKey, PurgedTable> = BTreeMap::new();
    for (id, (table, f, first_seq)) in listed {
        let looked_for = live_absent.contains(&id) && !reused.contains(&id);
        let on_disk = !looked_for && (disk.contains(&f.path) || f.path.under(data_dir).exists());
        if on_disk {
            continue;
        }
        let by_index = index
            .as_ref()
            .is_some_and(|ix| first_seq <= ix.seen_up_to && !ix.listed.contains(&id));
        if removal_named.contains(id) || by_index {
            out.entry(table).or_default().entries.push(f.clone());
        }
    }
    for t in out.values_mut() {
        t.entries.sort_by_key(|f| f.id);
    }
    out
}
