//! The commit: make the server see the merged files instead of their inputs (spec §6).
//!
//! Order matters. A guard file in `snapshots/` makes any server refuse to start until the
//! commit is complete. Then the outputs move into the node, the new snapshot is written
//! (at this point no row is lost, whatever happens next), old snapshots and checkpoints are
//! rewritten without the replaced files, the table index is set aside for the server to
//! rebuild, the guard is removed, and only then are the replaced files moved to the trash.

use crate::discover::{Node, STATE_DIR};
use crate::error::{Error, Result};
use crate::fsutil::{atomic_write, create_dir_all, fsync_dir, move_file};
use crate::merge::Merged;
use crate::model::{Checkpoint, DbFiles, Doc, FileEntry, Snapshot};
use crate::plan::Group;
use crate::types::{FileId, SnapshotSeq, TableKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The name of the guard file placed in `snapshots/` while a commit is in progress.
pub const GUARD_NAME: &str = "KOMPACTOR-COMMIT-IN-PROGRESS";

/// Where a run keeps its files inside the data dir.
#[derive(Clone, Debug)]
pub struct RunDirs {
    pub data_dir: PathBuf,
    pub run_id: String,
}

impl RunDirs {
    pub fn state(&self) -> PathBuf {
        self.data_dir.join(STATE_DIR)
    }
    pub fn tmp(&self) -> PathBuf {
        self.state().join("tmp").join(&self.run_id)
    }
    pub fn run(&self) -> PathBuf {
        self.state().join("runs").join(&self.run_id)
    }
    pub fn trash(&self) -> PathBuf {
        self.state().join("trash").join(&self.run_id)
    }
}

/// What a commit changed on one node.
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
}

/// Commits the merged groups of one node.
pub fn commit_node(node: &Node, merged: &[(&Group, Merged)], dirs: &RunDirs) -> Result<Committed> {
    let newest = node
        .newest_snapshot()
        .ok_or_else(|| Error::at(&node.dir, "the node has no snapshot to build on"))?;
    let new_seq = SnapshotSeq(newest.seq.0 + 1);
    let mut next_id = node.next_free_file_id();

    // New entries and the entries they replace.
    let mut added = DbFiles::default();
    let mut replaced = DbFiles::default();
    let mut replaced_ids = BTreeSet::new();
    let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (group, m) in merged {
        for f in &group.inputs {
            replaced.push(group.table.db, group.table.table, f.entry.clone());
            replaced_ids.insert(f.entry.id);
        }
        for o in &m.outputs {
            added.push(
                group.table.db,
                group.table.table,
                FileEntry {
                    id: next_id,
                    path: o.final_path.clone(),
                    size_bytes: o.size_bytes,
                    row_count: o.row_count,
                    chunk_time: group.window_start,
                    min_time: o.min_time,
                    max_time: o.max_time,
                    extra: Default::default(),
                },
            );
            next_id = FileId(next_id.0 + 1);
            moves.push((o.tmp_path.clone(), dirs.data_dir.join(&o.final_path)));
        }
    }

    // Snapshots rewritten without the replaced files.
    let mut rewrites: Vec<(&Path, Doc<Snapshot>, SystemTime)> = Vec::new();
    let mut relisted = 0;
    let falls_out = if node.checkpoints.is_empty() {
        let count_after = node.snapshots.len() + 1;
        let window = node.generation.default_load_window();
        count_after
            .checked_sub(window + 1)
            .map(|i| node.snapshots[i].seq)
    } else {
        None
    };
    let live_ids: BTreeSet<FileId> = node.live.values().flatten().map(|f| f.entry.id).collect();
    for s in &node.snapshots {
        let mut doc = s.doc.clone();
        let mut n = doc
            .value
            .databases
            .retain_files(|f| !replaced_ids.contains(&f.id));
        if Some(s.seq) == falls_out {
            // Keep the snapshot's still-live files visible by listing them in the new one.
            let keep: Vec<(crate::types::DbId, crate::types::TableId, FileEntry)> = doc
                .value
                .databases
                .iter()
                .filter(|(_, _, f)| live_ids.contains(&f.id))
                .map(|(d, t, f)| (d, t, f.clone()))
                .collect();
            for (d, t, f) in keep {
                added.push(d, t, f);
                relisted += 1;
                n += 1;
            }
            doc.value
                .databases
                .retain_files(|f| !live_ids.contains(&f.id));
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
    let mut final_set: BTreeMap<FileId, (TableKey, FileEntry)> = node
        .live
        .values()
        .flatten()
        .filter(|f| !replaced_ids.contains(&f.entry.id))
        .map(|f| (f.entry.id, (f.table, f.entry.clone())))
        .collect();
    for (db, table, f) in added.iter() {
        final_set.insert(f.id, (TableKey { db, table }, f.clone()));
    }
    let checkpoint_writes =
        plan_checkpoints(node, &replaced_ids, &final_set, &new_snap.value, new_seq)?;

    // Keep the originals of everything rewritten, so a run can be inspected or undone.
    let originals = dirs.run().join("original").join(&node.id);
    for path in rewrites
        .iter()
        .map(|(p, _, _)| *p)
        .chain(node.checkpoints.iter().map(|c| c.path.as_path()))
    {
        let rel = path.strip_prefix(&node.dir).expect("under the node dir");
        copy_preserving_mtime(path, &originals.join(rel))?;
    }

    let guard = node.dir.join("snapshots").join(GUARD_NAME);
    let guard_text = format!(
        "kompactor run {} is committing (or was interrupted while committing) on this node.\n\
         The server must not start until it is done: run `kompactor {} --hosts {}` to finish it.\n",
        dirs.run_id,
        dirs.data_dir.display(),
        node.id
    );
    write_guard(&guard, guard_text.as_bytes())?;

    for (from, to) in &moves {
        move_file(from, to)?;
    }
    let meta_tmp = dirs.tmp().join("meta");
    atomic_write(&new_snap_path, &new_snap.to_bytes(), &meta_tmp, None)?;
    for (path, doc, mtime) in &rewrites {
        atomic_write(path, &doc.to_bytes(), &meta_tmp, Some(*mtime))?;
    }
    for (path, doc, mtime) in &checkpoint_writes {
        atomic_write(path, &doc.to_bytes(), &meta_tmp, *mtime)?;
    }
    let table_index_set_aside = set_aside_table_index(node, dirs)?;

    fs::remove_file(&guard).map_err(|e| Error::io(&guard, "remove the commit guard", e))?;
    fsync_dir(guard.parent().expect("has parent"))?;

    let mut trash_bytes = 0;
    for (_, _, f) in replaced.iter() {
        let from = dirs.data_dir.join(&f.path);
        if from.exists() {
            trash_bytes += f.size_bytes;
            move_file(&from, &dirs.trash().join(&f.path))?;
        }
    }

    Ok(Committed {
        node: node.id.clone(),
        snapshot: new_seq,
        files_added: added.iter().count() - relisted,
        files_replaced: replaced_ids.len(),
        snapshots_rewritten: rewrites.len(),
        entries_relisted: relisted,
        checkpoints_written: checkpoint_writes.len(),
        table_index_set_aside,
        trash_bytes,
    })
}

fn write_guard(path: &Path, text: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f =
        fs::File::create(path).map_err(|e| Error::io(path, "create the commit guard", e))?;
    f.write_all(text)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, "write the commit guard", e))?;
    fsync_dir(path.parent().expect("has parent"))
}

fn copy_preserving_mtime(from: &Path, to: &Path) -> Result<()> {
    create_dir_all(to.parent().expect("has parent"))?;
    fs::copy(from, to).map_err(|e| Error::io(from, &format!("copy to {}", to.display()), e))?;
    let mtime = fs::metadata(from)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(from, "stat", e))?;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(to)
        .map_err(|e| Error::io(to, "open", e))?;
    f.set_modified(mtime)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(to, "fsync", e))
}

/// Checkpoint files to write: every existing one without the replaced files, plus one for
/// the newest month whose `last_snapshot_sequence_number` is the new snapshot, so that the
/// checkpoints cover the commit (spec §3.3) and merge to exactly the final file set.
fn plan_checkpoints(
    node: &Node,
    replaced: &BTreeSet<FileId>,
    final_set: &BTreeMap<FileId, (TableKey, FileEntry)>,
    new_snap: &Snapshot,
    new_seq: SnapshotSeq,
) -> Result<Vec<(PathBuf, Doc<Checkpoint>, Option<SystemTime>)>> {
    if node.checkpoints.is_empty() {
        return Ok(Vec::new());
    }
    let mut writes = Vec::new();
    let mut rewritten: BTreeMap<PathBuf, Checkpoint> = BTreeMap::new();
    for c in &node.checkpoints {
        let mut doc = c.doc.clone();
        let n = doc
            .value
            .databases
            .retain_files(|f| !replaced.contains(&f.id))
            + doc
                .value
                .pending_removed_files
                .retain_files(|f| !replaced.contains(&f.id));
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
    let mut earlier: BTreeMap<FileId, (TableKey, FileEntry)> = BTreeMap::new();
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

/// Moves the table index (marker, `db-indices/`, `table-snapshots/`) to the run's trash; the
/// server rebuilds it from every snapshot at its next start (spec §3.4).
fn set_aside_table_index(node: &Node, dirs: &RunDirs) -> Result<bool> {
    let mut any = false;
    for name in [
        "table-index-conversion-completed",
        "db-indices",
        "table-snapshots",
    ] {
        let p = node.dir.join(name);
        if p.exists() {
            move_file(&p, &dirs.trash().join(&node.id).join(name))?;
            any = true;
        }
    }
    Ok(any)
}
