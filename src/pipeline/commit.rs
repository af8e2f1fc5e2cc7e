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

use crate::durable::fsutil::Batch;
use crate::durable::journal::{to_mtime, trash_name, MetaWrite, Move, NodeManifest, RunDirs};
use crate::error::{Error, Result};
use crate::format::ids::{FileId, Nanos, SnapshotSeq, TableKey};
use crate::format::layout::{ParquetPath, TABLE_INDEX_PATHS};
use crate::format::model::EntryRc;
use crate::format::model::{Checkpoint, DbFiles, Doc, FileEntry, Snapshot};
use crate::pipeline::discover::LiveFile;
use crate::pipeline::discover::Node;
use crate::pipeline::merge::{Merged, Output};
use crate::pipeline::plan::Group;
use crate::pipeline::prepared::Prepared;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
    /// The `chunk_time` the new files get: the start of their window.
    pub chunk_time: Nanos,
    pub removes: &'a [LiveFile],
    pub adds: &'a [Output],
}

impl<'a> Change<'a> {
    /// The change a merged group makes: its inputs replaced by its outputs.
    pub fn merge(g: &'a Group, m: &'a Merged) -> Change<'a> {
        Change {
            table: g.table,
            chunk_time: g.window_start,
            removes: &g.inputs,
            adds: &m.outputs,
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

/// Computes the commit of one node's changes; writes nothing.
pub fn compute_node(node: &Node, changes: &[Change], dirs: &RunDirs) -> Result<NodeCommit> {
    let newest = node
        .newest_snapshot()
        .ok_or_else(|| Error::at(&node.dir, "the node has no snapshot to build on"))?;
    let new_seq = SnapshotSeq(newest.seq.0 + 1);
    let mut next_id = node.next_free_file_id();

    // New entries and the entries they replace.
    let mut added = DbFiles::default();
    let mut replaced = DbFiles::default();
    let mut replaced_ids = BTreeSet::new();
    let mut outputs: Vec<Move> = Vec::new();
    for c in changes {
        for f in c.removes {
            replaced.push(c.table.db, c.table.table, f.entry.clone());
            replaced_ids.insert(f.entry.id);
        }
        for o in c.adds {
            added.push(
                c.table.db,
                c.table.table,
                EntryRc::new(FileEntry {
                    id: next_id,
                    path: o.final_path.as_str().into(),
                    size_bytes: o.size_bytes,
                    row_count: o.row_count,
                    chunk_time: c.chunk_time,
                    min_time: o.min_time,
                    max_time: o.max_time,
                    extra: Default::default(),
                }),
            );
            next_id = FileId(next_id.0 + 1);
            outputs.push(Move {
                from: rel_to_data_dir(dirs, &o.tmp_path),
                to: o.final_path.clone(),
            });
        }
    }

    // Snapshots rewritten without the replaced files.
    let mut rewrites: Vec<(&Path, Doc<Snapshot>, SystemTime)> = Vec::new();
    let mut relisted = 0;
    let falls_out = if node.checkpoints.is_empty() {
        let count_after = node.snapshots.len() + 1;
        let window = node.load_window;
        count_after
            .checked_sub(window + 1)
            .map(|i| node.snapshots[i].seq)
    } else {
        None
    };
    let live_ids = node.live_ids();
    let purged_ids: BTreeSet<FileId> = node
        .purged
        .values()
        .flat_map(|t| t.entries.iter().map(|f| f.id))
        .collect();
    let dropped = |f: &FileEntry| replaced_ids.contains(&f.id) || purged_ids.contains(&f.id);
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
        let mut n = doc.value.databases.retain_files(|f| !dropped(f));
        // A removal of a purged file is stale too: nothing lists that file any more.
        if let Some(r) = &mut doc.value.removed_files {
            n += r.retain_files(|f| !purged_ids.contains(&f.id));
        }
        if Some(s.seq) == falls_out {
            // Keep the snapshot's still-live files visible by listing them in the new one.
            let keep: Vec<(
                crate::format::ids::DbId,
                crate::format::ids::TableId,
                EntryRc,
            )> = doc
                .value
                .databases
                .iter()
                .filter(|(_, _, f)| live_ids.contains(f.id))
                .map(|(d, t, f)| (d, t, f.clone()))
                .collect();
            for (d, t, f) in keep {
                added.push(d, t, f);
                relisted += 1;
                n += 1;
            }
            doc.value
                .databases
                .retain_files(|f| !live_ids.contains(f.id));
        }
        if n > 0 {
            doc.value.recompute_totals();
            rewrites.push((&s.path, doc, s.mtime));
        }
    }

    let mut new_snap = newest.doc.clone();
    {
        let v = &mut new_snap.value;
        v.snapshot_sequence_number = new_seq;
        v.next_file_id = next_id;
        v.databases = added.clone();
        v.removed_files = Some(replaced.clone());
        v.recompute_totals();
    }
    let new_snap_path = node
        .dir
        .join("snapshots")
        .join(format!("{}.info.json", new_seq.inverted_name()));

    // The final file set, for the checkpoint that covers the new snapshot.
    let mut final_set: BTreeMap<FileId, (TableKey, EntryRc)> = node
        .live
        .iter()
        .flat_map(|(table, files)| files.iter().map(move |f| (*table, f)))
        .filter(|(_, f)| !replaced_ids.contains(&f.id))
        .map(|(table, f)| (f.id, (table, EntryRc::clone(f))))
        .collect();
    for (db, table, f) in added.iter() {
        final_set.insert(f.id, (TableKey { db, table }, f.clone()));
    }
    let checkpoint_writes = plan_checkpoints(node, &dropped, &final_set, &new_snap.value, new_seq)?;
    let old_size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let metadata_bytes_before = rewrites.iter().map(|(p, _, _)| old_size(p)).sum::<u64>()
        + checkpoint_writes
            .iter()
            .filter(|(_, _, mtime)| mtime.is_some())
            .map(|(p, _, _)| old_size(p))
            .sum::<u64>();

    let snapshots_rewritten = rewrites.len();
    let checkpoints_written = checkpoint_writes.len();
    let mut files = vec![MetaFile {
        path: new_snap_path,
        doc: MetaDoc::Snapshot(new_snap),
        mtime: None,
        existed: false,
    }];
    for (path, doc, mtime) in rewrites {
        files.push(MetaFile {
            path: path.to_path_buf(),
            doc: MetaDoc::Snapshot(doc),
            mtime: Some(mtime),
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

    let set_aside: Vec<Move> = TABLE_INDEX_PATHS
        .iter()
        .filter(|name| node.dir.join(name).exists())
        .map(|name| {
            let rel = format!("{}/{name}", node.id);
            Move {
                to: format!("{}/{rel}", dirs.rel_trash()),
                from: rel,
            }
        })
        .collect();

    let committed = Committed {
        node: node.id.clone(),
        snapshot: new_seq,
        files_added: added.iter().count() - relisted,
        files_replaced: replaced_ids.len(),
        snapshots_rewritten,
        entries_relisted: relisted,
        checkpoints_written,
        table_index_set_aside: !set_aside.is_empty(),
        trash_bytes: replaced.iter().map(|(_, _, f)| f.size_bytes).sum(),
        purged_entries_dropped: purged_ids.len(),
        metadata_bytes_before,
        metadata_bytes_after: 0,
        metadata_files_prepared: 0,
    };
    let manifest = NodeManifest {
        node: node.id.clone(),
        new_snapshot: new_seq,
        outputs,
        writes: Vec::new(),
        set_aside,
        replaced: Vec::new(),
    };
    Ok(NodeCommit {
        files,
        manifest,
        committed,
        replaced,
    })
}

/// The moves of the replaced files into the trash: a window directory (`.../HH-MM`) that
/// holds nothing but replaced files is moved whole, every other replaced file on its own.
///
/// A deep history replaces millions of files, several per window directory, and each
/// rename is a journaled directory change made while the server is stopped. A directory
/// that will receive an output, or holds anything else (a hidden file left alone, a file
/// the metadata does not list), keeps it and gives up only the replaced files.
///
/// What a directory holds is what discovery listed ([`Node::listed_dirs`]): the replaced
/// files are distinct names in it that the merge has read, so a directory that held as
/// many entries as it has replaced files holds nothing else.
fn trash_moves(node: &Node, replaced: &DbFiles, outputs: &[Move], dirs: &RunDirs) -> Vec<Move> {
    let trash = |rel: &str| format!("{}/{rel}", dirs.rel_trash());
    let receives_output: HashSet<&str> = outputs
        .iter()
        .filter_map(|o| o.to.rsplit_once('/').map(|(dir, _)| dir))
        .collect();
    // Each replaced path once, with its directory, sorted: so that the journal lists the
    // moves the same way every time, and each directory's files come together.
    let paths: Vec<String> = replaced
        .iter()
        .map(|(_, _, f)| f.path.to_string())
        .collect();
    let mut files: Vec<(&str, &str)> = paths
        .iter()
        .map(|p| (p.rsplit_once('/').map_or("", |(dir, _)| dir), p.as_str()))
        .collect();
    files.sort_unstable();
    files.dedup();
    let mut moves = Vec::new();
    let mut single = Vec::new();
    for in_dir in files.chunk_by(|a, b| a.0 == b.0) {
        let dir = in_dir[0].0;
        if is_window_dir(&node.id, dir)
            && !receives_output.contains(dir)
            && node.listed_dirs.entries(dir) == Some(in_dir.len())
        {
            moves.push(Move {
                from: dir.to_string(),
                to: trash(dir),
            });
        } else {
            single.extend(in_dir.iter().map(|&(_, path)| path));
        }
    }
    // Two paths fold to one trash name only if names hold `__` (the server writes none);
    // such a file gets a name of its own, so that no move can fail after the commit point.
    let mut taken = HashSet::new();
    for path in single {
        let mut name = trash_name(path);
        let mut n = 0;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{path}.{n}");
        }
        moves.push(Move {
            from: path.to_string(),
            to: trash(&name),
        });
    }
    moves
}

/// Whether `dir` (relative to the data dir) is one of the node's window directories,
/// `<node>/dbs/<db>/<table>/<date>/<window>`, never a table's or a database's own.
fn is_window_dir(node: &str, dir: &str) -> bool {
    let file = format!("{dir}/f.parquet");
    let Some(p) = ParquetPath::parse(&file) else {
        return false;
    };
    let below_table = dir
        .strip_prefix(p.table_dir)
        .and_then(|r| r.strip_prefix('/'));
    dir.starts_with(&format!("{node}/"))
        && below_table
            .is_some_and(|r| r.split('/').count() == 2 && !r.split('/').any(str::is_empty))
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

/// A metadata file to write: where, what, and the modification time to keep (if any).
type CheckpointWrite = (PathBuf, Doc<Checkpoint>, Option<SystemTime>);

/// Checkpoint files to write: every existing one without the dropped files, plus one for
/// the newest month whose `last_snapshot_sequence_number` is the new snapshot, so that the
/// checkpoints cover the commit (spec §3.3) and merge to exactly the final file set.
fn plan_checkpoints(
    node: &Node,
    dropped: &dyn Fn(&FileEntry) -> bool,
    final_set: &BTreeMap<FileId, (TableKey, EntryRc)>,
    new_snap: &Snapshot,
    new_seq: SnapshotSeq,
) -> Result<Vec<CheckpointWrite>> {
    if node.checkpoints.is_empty() {
        return Ok(Vec::new());
    }
    let mut writes = Vec::new();
    let mut rewritten: BTreeMap<PathBuf, Checkpoint> = BTreeMap::new();
    for c in &node.checkpoints {
        let mut doc = c.doc.clone();
        let n = doc.value.databases.retain_files(|f| !dropped(f))
            + doc
                .value
                .pending_removed_files
                .retain_files(|f| !dropped(f));
        if n > 0 {
            doc.value.recompute_totals();
            writes.push((c.path.clone(), doc.clone(), Some(c.mtime)));
        }
        rewritten.insert(c.path.clone(), doc.value);
    }
    let now_month = chrono::Utc::now().format("%Y-%m").to_string();
    let effective = node.effective_checkpoints();
    let newest_month = effective
        .iter()
        .map(|c| c.doc.value.year_month.clone())
        .max()
        .unwrap_or_default();
    let month = now_month.max(newest_month);

    // What the checkpoints of the earlier months merge to.
    let mut earlier: BTreeMap<FileId, (TableKey, EntryRc)> = BTreeMap::new();
    for c in effective.iter().filter(|c| c.doc.value.year_month < month) {
        let v = &rewritten[&c.path];
        for (db, table, f) in v.databases.iter() {
            earlier.insert(f.id, (TableKey { db, table }, f.clone()));
        }
        for (_, _, f) in v.pending_removed_files.iter() {
            earlier.remove(&f.id);
        }
    }
    let template = effective.last().expect("checkpoints exist");
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
        for (id, (k, f)) in final_set {
            if !earlier.contains_key(id) {
                v.databases.push(k.db, k.table, f.clone());
            }
        }
        for (id, (k, f)) in &earlier {
            if !final_set.contains_key(id) {
                v.pending_removed_files.push(k.db, k.table, f.clone());
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

#[cfg(test)]
mod tests {
    use super::is_window_dir;

    #[test]
    fn only_a_nodes_window_directories_are_moved_whole() {
        assert!(is_window_dir("node0", "node0/dbs/1/0/2025-01-06/00-10"));
        assert!(is_window_dir(
            "node0",
            "node0/dbs/cpu-1/load-0/2025-01-06/00-10"
        ));
        // A table's, a day's or another node's directory, or no window at all.
        assert!(!is_window_dir("node0", "node0/dbs/1/0"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0/2025-01-06"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0/2025-01-06/00-10/x"));
        assert!(!is_window_dir("node0", "node1/dbs/1/0/2025-01-06/00-10"));
        assert!(!is_window_dir("node0", "node0/wal/1/0/2025-01-06/00-10"));
        assert!(!is_window_dir("node0", "node0/dbs/1/0//00-10"));
    }
}
