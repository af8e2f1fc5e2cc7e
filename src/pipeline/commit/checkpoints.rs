//! The checkpoints a commit writes: every existing one without the files that leave, and one
//! that covers the new snapshot.

use crate::error::Result;
use crate::format::ids::{FileId, SnapshotSeq, TableKey};
use crate::format::model::{Checkpoint, DbFiles, Doc, EntryRc, FileEntry, Snapshot};
use crate::pipeline::discover::load::{merge_checkpoints, select, snapshots_loaded};
use crate::pipeline::discover::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

/// A checkpoint file to write: where, what, and the modification time to keep (none for a
/// new file).
pub(super) type CheckpointWrite = (PathBuf, Doc<Checkpoint>, Option<SystemTime>);

/// Checkpoint files to write (none on a node without checkpoints): every existing one that
/// lists a dropped file, without it, and one for the newest month whose
/// `last_snapshot_sequence_number` is the new snapshot's, so that the checkpoints cover the
/// commit (a server that starts with checkpoints reads no snapshot before them) and the ones
/// the server will merge give exactly `after`, each table's files in its order.
///
/// The new checkpoint lists every file of `after` that the earlier months it is merged with
/// do not, in the order of `after`, and removes (`pending_removed_files`) what those months
/// list beyond it: which months those are follows from the sequence numbers, as the server
/// selects them ([`select`]).
pub(super) fn plan_checkpoints(
    node: &Node,
    dropped: &dyn Fn(&FileEntry) -> bool,
    in_place: &HashMap<FileId, Vec<EntryRc>>,
    after: &BTreeMap<TableKey, Vec<EntryRc>>,
    new_snap: &Snapshot,
    new_seq: SnapshotSeq,
) -> Result<Vec<CheckpointWrite>> {
    let Some(template) = node
        .checkpoints
        .iter()
        .max_by_key(|c| c.doc.value.last_snapshot_sequence_number)
    else {
        return Ok(Vec::new());
    };
    let mut writes = Vec::new();
    let mut rewritten: Vec<Checkpoint> = Vec::new();
    for c in &node.checkpoints {
        let mut doc = c.doc.clone();
        let n = doc.value.databases.replace_files(in_place)
            + doc.value.databases.retain_files(|f| !dropped(f))
            + doc
                .value
                .pending_removed_files
                .retain_files(|f| !dropped(f));
        if n > 0 {
            doc.value.recompute_totals();
            writes.push((c.path.clone(), doc.clone(), Some(c.mtime)));
        }
        rewritten.push(doc.value);
    }
    let now_month = chrono::Utc::now().format("%Y-%m").to_string();
    let newest_month = rewritten
        .iter()
        .map(|c| c.year_month.clone())
        .max()
        .unwrap_or_default();
    let month = now_month.max(newest_month);

    // The months the server will merge with the new checkpoint: those before its month.
    // The new checkpoint is the last of `keys`.
    let keys: Vec<(usize, &str, SnapshotSeq)> = rewritten
        .iter()
        .map(|c| (c.year_month.as_str(), c.last_snapshot_sequence_number))
        .chain([(month.as_str(), new_seq)])
        .enumerate()
        .map(|(i, (m, seq))| (i, m, seq))
        .collect();
    let window = snapshots_loaded(node.generation, node.load_window);
    let earlier_docs: Vec<&Checkpoint> = select(&keys, Some(new_seq), window, |k| (k.1, k.2))
        .into_iter()
        .filter(|&&(_, m, _)| m < month.as_str())
        .map(|&(i, _, _)| &rewritten[i])
        .collect();
    let earlier = merge_checkpoints(&earlier_docs);

    let mut cp = template.doc.clone();
    {
        let v = &mut cp.value;
        v.year_month = month.clone();
        v.last_snapshot_sequence_number = new_seq;
        v.next_file_id = Some(new_snap.next_file_id);
        v.wal_file_sequence_number = new_snap.wal_file_sequence_number;
        v.catalog_sequence_number = new_snap.catalog_sequence_number;
        v.databases = DbFiles::default();
        v.pending_removed_files = DbFiles::default();
        let ids = |lists: &BTreeMap<TableKey, Vec<EntryRc>>, t: &TableKey| -> BTreeSet<FileId> {
            lists
                .get(t)
                .map_or_else(BTreeSet::new, |l| l.iter().map(|f| f.id).collect())
        };
        for (t, files) in after {
            let held = ids(&earlier, t);
            for f in files.iter().filter(|f| !held.contains(&f.id)) {
                v.databases.push(t.db, t.table, EntryRc::clone(f));
            }
        }
        for (t, files) in &earlier {
            let kept = ids(after, t);
            for f in files.iter().filter(|f| !kept.contains(&f.id)) {
                v.pending_removed_files
                    .push(t.db, t.table, EntryRc::clone(f));
            }
        }
        v.recompute_totals();
    }
    let path = node
        .dir
        .join("snapshot-checkpoints")
        .join(&month)
        .join(format!("{}.checkpoint.json", new_seq.inverted_name()));
    writes.push((path, cp, None));
    Ok(writes)
}
