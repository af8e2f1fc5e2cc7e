//! The commit: the new metadata that makes the server see the merged files instead of their
//! inputs (spec §6), prepared in full before any node changes.
//!
//! [`compute_node`] computes every file the commit writes: one new snapshot (new ids, the
//! replaced files in `removed_files`), every older snapshot that listed a replaced file
//! rewritten without it (keeping its modification time), the checkpoints rewritten and one
//! added that covers the new snapshot, and the table index set aside for the server to
//! rebuild. [`prepare_node`] also stages them in the run directory with links to the
//! originals, and lists the moves of the replaced files into the trash; the journal
//! ([`crate::durable::apply::apply`]) then puts them in place in a crash-safe order.

mod checkpoints;
mod order;
mod trash;

use crate::durable::apply::apply_or_recover;
use crate::durable::fsutil::Batch;
use crate::durable::journal::{to_mtime, Manifest, MetaWrite, Move, NodeManifest, RunDirs};
use crate::error::{Error, Result};
use crate::format::ids::{FileId, SnapshotSeq, TableKey};
use crate::format::layout::TABLE_INDEX_PATHS;
use crate::format::model::EntryRc;
use crate::format::model::{Checkpoint, DbFiles, Doc, FileEntry, Snapshot};
use crate::pipeline::discover::load::{snapshots_loaded, Inputs};
use crate::pipeline::discover::{LiveFile, Node, SnapshotFile};
use crate::pipeline::merge::{Merged, Output};
use crate::pipeline::plan::Group;
use crate::pipeline::prepared::Prepared;
use checkpoints::{plan_checkpoints, CheckpointWrite};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use trash::trash_moves;

/// What a commit changes on one node.
#[derive(Clone, Debug, Serialize)]
pub struct Committed {
    pub node: String,
    pub snapshot: SnapshotSeq,
    pub files_added: usize,
    pub files_replaced: usize,
    pub snapshots_rewritten: usize,
    /// Entries moved from the snapshot that falls out of the load window into the new one.
    pub entries_relisted: usize,
    pub checkpoints_written: usize,
    pub table_index_set_aside: bool,
    pub trash_bytes: u64,
    /// Entries of files the server had purged, dropped from every snapshot and checkpoint.
    pub purged_entries_dropped: usize,
    /// Bytes of the snapshot and checkpoint files this commit rewrites, before and after
    /// (the new snapshot and checkpoint not counted).
    pub metadata_bytes_before: u64,
    pub metadata_bytes_after: u64,
    /// Rewritten snapshot and checkpoint files `prepare` had written already, taken as they
    /// were rather than written again while the server is stopped.
    pub metadata_files_prepared: usize,
}

fn rel_to_data_dir(dirs: &RunDirs, p: &Path) -> String {
    p.strip_prefix(&dirs.data_dir)
        .expect("under the data dir")
        .to_string_lossy()
        .into_owned()
}

/// One change to a table: files that leave the node, and verified files that join it.
///
/// Compaction replaces a window's inputs by its outputs; archiving removes a window's files
/// (their data is in the archive); restoring adds archived files back.
pub struct Change<'a> {
    pub table: TableKey,
    pub removes: &'a [LiveFile],
    pub adds: &'a [Output],
    /// The new files take the place of the first of `removes` (by id) in every document
    /// that lists it, instead of being listed in the new snapshot: they stay where the server
    /// held their inputs (in its order, and visible or hidden as they were). A delete's
    /// rewritten files.
    pub in_place: bool,
}

impl<'a> Change<'a> {
    /// The change a merged group makes: its inputs replaced by its outputs.
    pub fn merge(g: &'a Group, m: &'a Merged) -> Change<'a> {
        Change {
            table: g.table,
            removes: &g.inputs,
            adds: &m.outputs,
            in_place: false,
        }
    }
}

/// The document a metadata file holds.
enum MetaDoc {
    Snapshot(Doc<Snapshot>),
    Checkpoint(Doc<Checkpoint>),
}

/// One metadata file a commit writes: a new snapshot or checkpoint, or a rewritten one.
pub struct MetaFile {
    pub path: PathBuf,
    doc: MetaDoc,
    /// The modification time it keeps (that of the file it rewrites).
    pub mtime: Option<SystemTime>,
    /// Whether it replaces an existing file.
    pub existed: bool,
}

impl MetaFile {
    /// The file's path relative to its node's directory.
    pub fn in_node(&self, node: &Node) -> String {
        self.path
            .strip_prefix(&node.dir)
            .expect("under the node dir")
            .to_string_lossy()
            .into_owned()
    }

    /// The file's bytes, as the server writes them.
    ///
    /// Made when needed and dropped once written: a deep history rewrites tens of thousands
    /// of snapshots, and holding all their bytes beside their documents would double the
    /// commit's memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.doc {
            MetaDoc::Snapshot(d) => d.to_bytes(),
            MetaDoc::Checkpoint(d) => d.to_bytes(),
        }
    }
}

/// Everything the commit of one node's changes consists of, computed but not yet staged.
pub struct NodeCommit {
    /// The new snapshot first: from the moment it is in place no row can be missing.
    pub files: Vec<MetaFile>,
    /// The manifest without its `writes` and `replaced`: staging fills them in, the moves
    /// from what the replaced files' directories hold once the server is stopped.
    pub manifest: NodeManifest,
    /// Without `metadata_bytes_after`, which staging adds up as it writes.
    pub committed: Committed,
    replaced: DbFiles,
}

/// Stages the commit of each node's changes (`changes`: a node's index in `nodes`, and its
/// changes; a node without any is left out) into `manifest`, then commits every node in one
/// journaled step, recovering if that fails: how every command but compaction (which stages
/// each node as soon as its merges are done) ends. What each node committed, by index.
pub fn commit_nodes(
    nodes: &[Node],
    changes: &[(usize, Vec<Change>)],
    dirs: &RunDirs,
    mut manifest: Manifest,
) -> Result<Vec<(usize, Committed)>> {
    let mut committed = Vec::new();
    for (i, changes) in changes.iter().filter(|(_, c)| !c.is_empty()) {
        let (m, c) = prepare_node(&nodes[*i], changes, dirs, None)?;
        manifest.nodes.push(m);
        committed.push((*i, c));
    }
    apply_or_recover(dirs, &manifest)?;
    Ok(committed)
}

/// Computes and stages the commit of one node's changes; changes nothing in the node.
///
/// A rewritten file whose exact bytes `prestaged` holds (written by `prepare` while the
/// server ran) is moved into the run instead of written and flushed again.
pub fn prepare_node(
    node: &Node,
    changes: &[Change],
    dirs: &RunDirs,
    prestaged: Option<&Prepared>,
) -> Result<(NodeManifest, Committed)> {
    let c = compute_node(node, changes, dirs)?;
    stage_node(node, c, dirs, prestaged)
}

/// The entries a commit adds and removes, and the outputs it moves into the node.
struct NewEntries {
    added: DbFiles,
    /// Outputs that take the place of an input (keyed by it) where it is listed.
    in_place: HashMap<FileId, Vec<EntryRc>>,
    replaced: DbFiles,
    replaced_ids: BTreeSet<FileId>,
    outputs: Vec<Move>,
    next_id: FileId,
}

/// Gives each output a new id (above every id the node has used or promised) and its entry.
fn new_entries(node: &Node, changes: &[Change], dirs: &RunDirs) -> NewEntries {
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
fn rewrite_snapshots<'a>(
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

/// Computes the commit of one node's changes; writes nothing.
///
/// Before anything is staged, the server's startup load is computed from the new documents
/// ([`order::check_load`]): it must give exactly the files intended, in the server's order.
pub fn compute_node(node: &Node, changes: &[Change], dirs: &RunDirs) -> Result<NodeCommit> {
    let newest = node
        .newest_snapshot()
        .ok_or_else(|| Error::at(&node.dir, "the node has no snapshot to build on"))?;
    let new_seq = SnapshotSeq(newest.seq.0 + 1);
    let NewEntries {
        added,
        in_place,
        replaced,
        replaced_ids,
        outputs,
        next_id,
    } = new_entries(node, changes, dirs);
    let purged_ids: BTreeSet<FileId> = node
        .purged
        .values()
        .flat_map(|t| t.entries.iter().map(|f| f.id))
        .collect();
    let dropped = |f: &FileEntry| replaced_ids.contains(&f.id) || purged_ids.contains(&f.id);

    let (rewrites, relisted) = rewrite_snapshots(node, &dropped, &purged_ids, &in_place);
    let mut new_snap = newest.doc.clone();
    {
        let v = &mut new_snap.value;
        v.snapshot_sequence_number = new_seq;
        v.next_file_id = next_id;
        v.databases = added.clone();
        for (d, t, f) in relisted.iter() {
            v.databases.push(d, t, EntryRc::clone(f));
        }
        v.removed_files = Some(replaced.clone());
        v.recompute_totals();
    }
    let new_snap_path = node
        .dir
        .join("snapshots")
        .join(format!("{}.info.json", new_seq.inverted_name()));

    // The server's lists after the commit: as they are, less what leaves, with the outputs.
    let before = order::live_in_load_order(node);
    let mut expected = before.clone();
    for list in expected.values_mut() {
        *list = list
            .iter()
            .flat_map(|f| match in_place.get(&f.id) {
                Some(new) => new.clone(),
                None if replaced_ids.contains(&f.id) => Vec::new(),
                None => vec![EntryRc::clone(f)],
            })
            .collect();
    }
    for (db, table, f) in added.iter() {
        expected
            .entry(TableKey { db, table })
            .or_default()
            .push(EntryRc::clone(f));
    }
    expected.retain(|_, l| !l.is_empty());
    let checkpoint_writes = plan_checkpoints(
        node,
        &dropped,
        &in_place,
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

    let old_size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let metadata_bytes_before = rewrites.iter().map(|(s, _)| s.size).sum::<u64>()
        + checkpoint_writes
            .iter()
            .filter(|(_, _, mtime)| mtime.is_some())
            .map(|(p, _, _)| old_size(p))
            .sum::<u64>();
    let committed = Committed {
        node: node.id.clone(),
        snapshot: new_seq,
        files_added: added.iter().count() + in_place.values().map(Vec::len).sum::<usize>(),
        files_replaced: replaced_ids.len(),
        snapshots_rewritten: rewrites.len(),
        entries_relisted: relisted.iter().count(),
        checkpoints_written: checkpoint_writes.len(),
        table_index_set_aside: false,
        trash_bytes: replaced.iter().map(|(_, _, f)| f.size_bytes).sum(),
        purged_entries_dropped: purged_ids.len(),
        metadata_bytes_before,
        metadata_bytes_after: 0,
        metadata_files_prepared: 0,
    };
    let mut files = vec![MetaFile {
        path: new_snap_path,
        doc: MetaDoc::Snapshot(new_snap),
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
    for (path, doc, mtime) in checkpoint_writes {
        files.push(MetaFile {
            path,
            doc: MetaDoc::Checkpoint(doc),
            existed: mtime.is_some(),
            mtime,
        });
    }
    let set_aside = set_aside_table_index(node, dirs);
    Ok(NodeCommit {
        files,
        manifest: NodeManifest {
            node: node.id.clone(),
            new_snapshot: new_seq,
            outputs,
            writes: Vec::new(),
            set_aside: set_aside.clone(),
            replaced: Vec::new(),
        },
        committed: Committed {
            table_index_set_aside: !set_aside.is_empty(),
            ..committed
        },
        replaced,
    })
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

/// Stages a computed commit in the run directory: every file with the modification time it
/// will have, and the original of every file it replaces (a second link to it: no copy, and
/// its mtime stays).
fn stage_node(
    node: &Node,
    c: NodeCommit,
    dirs: &RunDirs,
    prestaged: Option<&Prepared>,
) -> Result<(NodeManifest, Committed)> {
    let NodeCommit {
        files,
        mut manifest,
        mut committed,
        replaced,
    } = c;
    let mut clock = crate::progress::StepClock::new(&node.id);
    manifest.replaced = trash_moves(node, &replaced, &manifest.outputs, dirs);
    clock.done(&format!(
        "planning {} trash move(s)",
        manifest.replaced.len()
    ));
    let mut batch = Batch::default();
    for f in &files {
        let bytes = f.to_bytes();
        if f.existed {
            committed.metadata_bytes_after += bytes.len() as u64;
        }
        let in_node = f.in_node(node);
        let staged = format!("staged/{}/{in_node}", node.id);
        let staged_path = dirs.run().join(&staged);
        let ready = prestaged
            .filter(|_| f.existed)
            .and_then(|p| p.metadata_file(&node.id, &in_node, &bytes, f.mtime));
        match ready {
            // Flushed by `prepare`: only the move is new.
            Some(ready) => {
                batch.rename(&ready, &staged_path)?;
                committed.metadata_files_prepared += 1;
            }
            None => batch.write(&staged_path, &bytes, f.mtime)?,
        }
        let original = if f.existed {
            let rel = format!("original/{}/{in_node}", node.id);
            batch.link(&f.path, &dirs.run().join(&rel))?;
            Some(rel)
        } else {
            None
        };
        manifest.writes.push(MetaWrite {
            dest: rel_to_data_dir(dirs, &f.path),
            staged,
            mtime: f.mtime.map(to_mtime),
            original,
        });
    }
    clock.done(&format!("staging {} metadata file(s)", files.len()));
    batch.finish()?;
    clock.done("flushing them");
    Ok((manifest, committed))
}
