//! The entries a commit lists: the outputs' new entries, and the snapshots rewritten
//! without the files that leave.

use super::rel_to_data_dir;
use super::Change;
use crate::durable::journal::{Move, RunDirs};
use crate::format::ids::{FileId, SnapshotSeq};
use crate::format::model::{DbFiles, Doc, EntryRc, FileEntry, Snapshot};
use crate::pipeline::discover::load::snapshots_loaded;
use crate::pipeline::discover::{Node, SnapshotFile};
use std::collections::{BTreeSet, HashMap};

/// The entries a commit adds and removes, and the outputs it moves into the node.
pub(super) struct NewEntries {
    pub added: DbFiles,
    /// Outputs that take the place of an input (keyed by it) where it is listed.
    pub in_place: HashMap<FileId, Vec<EntryRc>>,
    pub replaced: DbFiles,
    pub replaced_ids: BTreeSet<FileId>,
    pub outputs: Vec<Move>,
    pub next_id: FileId,
}

/// Gives each output a new id (above every id the node has used or promised) and its entry.
pub(super) fn new_entries(node: &Node, changes: &[Change], dirs: &RunDirs) -> NewEntries {
    let mut e = NewEntries {
        added: DbFiles::default(),
        in_place: HashMap::new(),
        replaced: DbFiles::default(),
        replaced_ids: BTreeSet::new(),
        outputs: Vec::new(),
        next_id: node.next_free_file_id(),
    };
    for c in changes {
        for f in c.removes {
            e.replaced.push(c.table.db, c.table.table, f.entry.clone());
            e.replaced_ids.insert(f.entry.id);
        }
        let place = c
            .in_place
            .then(|| c.removes.iter().map(|f| f.entry.id).min())
            .flatten();
        if let Some(id) = place {
            e.in_place.entry(id).or_default();
        }
        for o in c.adds {
            let entry = EntryRc::new(FileEntry {
                id: e.next_id,
                path: o.final_path.as_str().into(),
                size_bytes: o.size_bytes,
                row_count: o.row_count,
                chunk_time: o.chunk_time,
                min_time: o.min_time,
                max_time: o.max_time,
                extra: Default::default(),
            });
            match place {
                Some(id) => e.in_place.entry(id).or_default().push(entry),
                None => e.added.push(c.table.db, c.table.table, entry),
            }
            e.next_id = FileId(e.next_id.0 + 1);
            e.outputs.push(Move {
                from: rel_to_data_dir(dirs, &o.tmp_path),
                to: o.final_path.clone(),
            });
        }
    }
    e
}

/// The snapshot that falls out of the server's load window when the commit adds one, on a
/// node that loads snapshots alone: its live files are listed again in the new snapshot.
fn falls_out(node: &Node) -> Option<SnapshotSeq> {
    if !node.checkpoints.is_empty() {
        return None;
    }
    let window = snapshots_loaded(node.generation, node.load_window);
    (node.snapshots.len() + 1)
        .checked_sub(window + 1)
        .map(|i| node.snapshots[i].seq)
}

/// The snapshots that list a file that leaves (or hold a stale removal of a purged one),
/// rewritten without it; the snapshot that falls out of the load window also gives up its
/// live files, returned to be listed in the new snapshot.
pub(super) fn rewrite_snapshots<'a>(
    node: &'a Node,
    dropped: &dyn Fn(&FileEntry) -> bool,
    purged_ids: &BTreeSet<FileId>,
    in_place: &HashMap<FileId, Vec<EntryRc>>,
) -> (Vec<(&'a SnapshotFile, Doc<Snapshot>)>, DbFiles) {
    let falls_out = falls_out(node);
    let replaced_live: BTreeSet<FileId> = in_place.values().flatten().map(|f| f.id).collect();
    let live = node.live_ids();
    let live_ids = |id: FileId| live.contains(id) || replaced_live.contains(&id);
    let mut rewrites = Vec::new();
    let mut relisted = DbFiles::default();
    for s in &node.snapshots {
        // Most snapshots of a deep history list nothing that changes: they are not copied.
        let v = &s.doc.value;
        let touched = Some(s.seq) == falls_out
            || v.databases.iter().any(|(_, _, f)| dropped(f))
            || v.removed_files
                .iter()
                .flat_map(|r| r.iter())
                .any(|(_, _, f)| purged_ids.contains(&f.id));
        if !touched {
            continue;
        }
        let mut doc = s.doc.clone();
        let mut n = doc.value.databases.replace_files(in_place);
        n += doc.value.databases.retain_files(|f| !dropped(f));
        // A removal of a purged file is stale too: nothing lists that file any more.
        if let Some(r) = &mut doc.value.removed_files {
            n += r.retain_files(|f| !purged_ids.contains(&f.id));
        }
        if Some(s.seq) == falls_out {
            // Keep the snapshot's still-live files visible by listing them in the new one.
            for (d, t, f) in doc.value.databases.iter() {
                if live_ids(f.id) {
                    relisted.push(d, t, EntryRc::clone(f));
                    n += 1;
                }
            }
            doc.value.databases.retain_files(|f| !live_ids(f.id));
        }
        if n > 0 {
            doc.value.recompute_totals();
            rewrites.push((s, doc));
        }
    }
    (rewrites, relisted)
}
