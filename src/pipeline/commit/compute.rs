//! Computing one node's commit: the new snapshot, the rewritten snapshots and checkpoints,
//! and the check that the server would load exactly the intended files from them.

use super::checkpoints::{plan_checkpoints, CheckpointWrite};
use super::entries::{new_entries, rewrite_snapshots, NewEntries};
use super::{order, Change, Committed, MetaDoc, MetaFile, NodeCommit};
use crate::durable::journal::{Move, NodeManifest, RunDirs};
use crate::error::{Error, Result};
use crate::format::ids::{FileId, SnapshotSeq, TableKey};
use crate::format::layout::TABLE_INDEX_PATHS;
use crate::format::model::{Checkpoint, DbFiles, Doc, EntryRc, FileEntry, Snapshot};
use crate::pipeline::discover::load::Inputs;
use crate::pipeline::discover::{Node, SnapshotFile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Computes the commit of one node's changes; writes nothing.
///
/// Before anything is staged, the server's startup load is computed from the new documents
/// ([`order::check_load`]): it must give exactly the files intended, in the server's order.
pub fn compute_node(node: &Node, changes: &[Change], dirs: &RunDirs) -> Result<NodeCommit> {
    let newest = node
        .newest_snapshot()
        .ok_or_else(|| Error::at(&node.dir, "the node has no snapshot to build on"))?;
    let new_seq = SnapshotSeq(newest.seq.0 + 1);
    let entries = new_entries(node, changes, dirs);
    let purged_ids: BTreeSet<FileId> = node
        .purged
        .values()
        .flat_map(|t| t.entries.iter().map(|f| f.id))
        .collect();
    let replaced_ids = &entries.replaced_ids;
    let dropped = |f: &FileEntry| replaced_ids.contains(&f.id) || purged_ids.contains(&f.id);

    let (rewrites, relisted) = rewrite_snapshots(node, &dropped, &purged_ids, &entries.in_place);
    let new_snap = new_snapshot(&newest.doc, new_seq, &entries, &relisted);

    let before = order::live_in_load_order(node);
    let expected = expected_lists(&before, &entries);
    let checkpoint_writes = plan_checkpoints(
        node,
        &dropped,
        &entries.in_place,
        &expected,
        &new_snap.value,
        new_seq,
    )?;
    let after = after_inputs(
        node,
        &rewrites,
        (new_seq, &new_snap.value),
        &checkpoint_writes,
    );
    order::check_load(node, &after, &before, &expected)?;
    drop(after);

    let set_aside = set_aside_table_index(node, dirs);
    let committed = Committed {
        table_index_set_aside: !set_aside.is_empty(),
        purged_entries_dropped: purged_ids.len(),
        snapshots_rewritten: rewrites.len(),
        entries_relisted: relisted.iter().count(),
        checkpoints_written: checkpoint_writes.len(),
        metadata_bytes_before: bytes_rewritten(&rewrites, &checkpoint_writes),
        ..committed_entries(node, new_seq, &entries)
    };
    let new_snap_path = node
        .dir
        .join("snapshots")
        .join(format!("{}.info.json", new_seq.inverted_name()));
    let NewEntries {
        replaced, outputs, ..
    } = entries;
    Ok(NodeCommit {
        files: meta_files((new_snap_path, new_snap), rewrites, checkpoint_writes),
        manifest: NodeManifest {
            node: node.id.clone(),
            new_snapshot: new_seq,
            outputs,
            writes: Vec::new(),
            set_aside,
            replaced: Vec::new(),
        },
        committed,
        replaced,
    })
}

/// The new snapshot: the newest one's header with the next sequence number and file id,
/// listing the added and relisted files and naming the replaced ones as removed.
fn new_snapshot(
    newest: &Doc<Snapshot>,
    seq: SnapshotSeq,
    entries: &NewEntries,
    relisted: &DbFiles,
) -> Doc<Snapshot> {
    let mut doc = newest.clone();
    let v = &mut doc.value;
    v.snapshot_sequence_number = seq;
    v.next_file_id = entries.next_id;
    v.databases = entries.added.clone();
    for (d, t, f) in relisted.iter() {
        v.databases.push(d, t, EntryRc::clone(f));
    }
    v.removed_files = Some(entries.replaced.clone());
    v.recompute_totals();
    doc
}

/// The server's lists after the commit: as they are (`before`), less what leaves, with the
/// outputs in place of their inputs or at the end.
fn expected_lists(
    before: &BTreeMap<TableKey, Vec<EntryRc>>,
    entries: &NewEntries,
) -> BTreeMap<TableKey, Vec<EntryRc>> {
    let mut expected = before.clone();
    for list in expected.values_mut() {
        *list = list
            .iter()
            .flat_map(|f| match entries.in_place.get(&f.id) {
                Some(new) => new.clone(),
                None if entries.replaced_ids.contains(&f.id) => Vec::new(),
                None => vec![EntryRc::clone(f)],
            })
            .collect();
    }
    for (db, table, f) in entries.added.iter() {
        expected
            .entry(TableKey { db, table })
            .or_default()
            .push(EntryRc::clone(f));
    }
    expected.retain(|_, l| !l.is_empty());
    expected
}

/// What the commit adds and replaces, counted; the rest of [`Committed`] left at zero.
fn committed_entries(node: &Node, seq: SnapshotSeq, entries: &NewEntries) -> Committed {
    let in_place: usize = entries.in_place.values().map(Vec::len).sum();
    Committed {
        node: node.id.clone(),
        snapshot: seq,
        files_added: entries.added.iter().count() + in_place,
        files_replaced: entries.replaced_ids.len(),
        snapshots_rewritten: 0,
        entries_relisted: 0,
        checkpoints_written: 0,
        table_index_set_aside: false,
        trash_bytes: entries.replaced.iter().map(|(_, _, f)| f.size_bytes).sum(),
        purged_entries_dropped: 0,
        metadata_bytes_before: 0,
        metadata_bytes_after: 0,
        metadata_files_prepared: 0,
    }
}

/// The bytes of the existing snapshot and checkpoint files the commit rewrites.
fn bytes_rewritten(
    rewrites: &[(&SnapshotFile, Doc<Snapshot>)],
    checkpoints: &[CheckpointWrite],
) -> u64 {
    let old_size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    rewrites.iter().map(|(s, _)| s.size).sum::<u64>()
        + checkpoints
            .iter()
            .filter(|(_, _, mtime)| mtime.is_some())
            .map(|(p, _, _)| old_size(p))
            .sum::<u64>()
}

/// Every metadata file the commit writes, the new snapshot first.
fn meta_files(
    new_snap: (std::path::PathBuf, Doc<Snapshot>),
    rewrites: Vec<(&SnapshotFile, Doc<Snapshot>)>,
    checkpoints: Vec<CheckpointWrite>,
) -> Vec<MetaFile> {
    let mut files = vec![MetaFile {
        path: new_snap.0,
        doc: MetaDoc::Snapshot(new_snap.1),
        mtime: None,
        existed: false,
    }];
    for (s, doc) in rewrites {
        files.push(MetaFile {
            path: s.path.clone(),
            doc: MetaDoc::Snapshot(doc),
            mtime: Some(s.mtime),
            existed: true,
        });
    }
    for (path, doc, mtime) in checkpoints {
        files.push(MetaFile {
            path,
            doc: MetaDoc::Checkpoint(doc),
            existed: mtime.is_some(),
            mtime,
        });
    }
    files
}

/// The documents a server would start from after the commit: every snapshot (rewritten
/// where the commit rewrites it) and the new one, every checkpoint likewise.
fn after_inputs<'a>(
    node: &'a Node,
    rewrites: &'a [(&SnapshotFile, Doc<Snapshot>)],
    new_snap: (SnapshotSeq, &'a Snapshot),
    checkpoints: &'a [CheckpointWrite],
) -> Inputs<'a> {
    let rewritten: HashMap<SnapshotSeq, &Snapshot> =
        rewrites.iter().map(|(s, d)| (s.seq, &d.value)).collect();
    let mut snapshots: Vec<(SnapshotSeq, &Snapshot)> = node
        .snapshots
        .iter()
        .map(|s| {
            (
                s.seq,
                rewritten.get(&s.seq).copied().unwrap_or(&s.doc.value),
            )
        })
        .collect();
    snapshots.push(new_snap);
    let written: HashMap<&Path, &Checkpoint> = checkpoints
        .iter()
        .map(|(p, d, _)| (p.as_path(), &d.value))
        .collect();
    let mut cps: Vec<&Checkpoint> = node
        .checkpoints
        .iter()
        .map(|c| {
            written
                .get(c.path.as_path())
                .copied()
                .unwrap_or(&c.doc.value)
        })
        .collect();
    cps.extend(
        checkpoints
            .iter()
            .filter(|(_, _, mtime)| mtime.is_none())
            .map(|(_, d, _)| &d.value),
    );
    Inputs {
        snapshots,
        checkpoints: cps,
        generation: node.generation,
        window: node.load_window,
    }
}

/// The table index's files, moved into the run's trash so that the server rebuilds the index
/// from the snapshots at its next start.
fn set_aside_table_index(node: &Node, dirs: &RunDirs) -> Vec<Move> {
    TABLE_INDEX_PATHS
        .iter()
        .filter(|name| node.dir.join(name).exists())
        .map(|name| {
            let rel = format!("{}/{name}", node.id);
            Move {
                to: format!("{}/{rel}", dirs.rel_trash()),
                from: rel,
            }
        })
        .collect()
}
