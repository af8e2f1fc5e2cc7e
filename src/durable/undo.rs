//! Undo: restoring a data dir as it was before a finished run, and when that is refused.

use crate::durable::apply::{move_rel, remove_tmp};
use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{fsync_dir, Batch};
use crate::durable::journal::{run_ids, Manifest, Move, NodeManifest, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::SnapshotSeq;
use crate::format::layout::TABLE_INDEX_PATHS;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Why a finished run cannot be undone, if it cannot.
pub fn undo_blocker(
    data_dir: &Path,
    run_id: &str,
    newest_snapshots: &dyn Fn(&str) -> Result<Option<SnapshotSeq>>,
) -> Result<Option<String>> {
    let dirs = RunDirs::new(data_dir, run_id);
    if !dirs.run().join("state.json").is_file() {
        let known = run_ids(data_dir)?;
        return Ok(Some(format!(
            "there is no run `{run_id}` (runs: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )));
    }
    let st = dirs.read_state()?;
    if st.state != RunState::Done {
        return Ok(Some(format!(
            "the run is {:?}, not done; only a finished run can be undone",
            st.state
        )));
    }
    if st.purged {
        return Ok(Some(
            "its trash was purged, so the replaced files are gone".into(),
        ));
    }
    let m = dirs.read_manifest()?;
    for later in run_ids(data_dir)?
        .into_iter()
        .filter(|id| id.as_str() > run_id)
    {
        let l = RunDirs::new(data_dir, &later);
        if l.read_state()?.state == RunState::Done {
            let lm = l.read_manifest()?;
            if lm
                .nodes
                .iter()
                .any(|n| m.nodes.iter().any(|x| x.node == n.node))
            {
                return Ok(Some(format!(
                    "run {later} was made after it on the same node(s); undo that one first"
                )));
            }
        }
    }
    for n in &m.nodes {
        let newest = newest_snapshots(&n.node)?;
        if newest != Some(n.new_snapshot) {
            return Ok(Some(format!(
                "node {} has snapshots newer than this run's ({}): the server wrote data since, which undo would hide",
                n.node, n.new_snapshot
            )));
        }
        for r in &n.replaced {
            if !dirs.data_dir.join(&r.to).exists() {
                return Ok(Some(format!("{} is no longer in the trash", r.to)));
            }
        }
    }
    Ok(None)
}

/// Moves into the run's trash (`undone/`) what a server started after the run wrote from the
/// run's metadata: the table index it rebuilt and the checkpoints it wrote. Both list the
/// run's outputs, which the undo takes away, and the server would trust them over the
/// restored snapshots. Safe to repeat: what was moved, or put back, is not moved again.
fn set_aside_server_files(
    dirs: &RunDirs,
    n: &NodeManifest,
    started: u64,
    batch: &mut Batch,
) -> Result<()> {
    let undone = |rel: &str| Move {
        from: rel.to_string(),
        to: format!("{}/undone/{rel}", dirs.rel_trash()),
    };
    for name in TABLE_INDEX_PATHS {
        let rel = format!("{}/{name}", n.node);
        // Not there at the commit, or set aside then and not yet put back: the node's is
        // the server's.
        let servers = n
            .set_aside
            .iter()
            .find(|s| s.from == rel)
            .is_none_or(|s| dirs.data_dir.join(&s.to).exists());
        if servers {
            dirs.move_once(&undone(&rel), batch)?;
        }
    }
    let written: BTreeSet<&str> = n.writes.iter().map(|w| w.dest.as_str()).collect();
    let checkpoints = dirs.data_dir.join(&n.node).join("snapshot-checkpoints");
    for e in walkdir::WalkDir::new(&checkpoints).into_iter().flatten() {
        let since_run = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_secs() > started);
        let rel = e
            .path()
            .strip_prefix(&dirs.data_dir)
            .expect("under the data dir");
        let rel = rel.to_string_lossy();
        if e.file_type().is_file() && since_run && !written.contains(rel.as_ref()) {
            dirs.move_once(&undone(&rel), batch)?;
        }
    }
    Ok(())
}

/// Moves a replaced file, or a window directory the commit moved whole, back from the
/// trash. Should something have made that directory again since, the trashed one is emptied
/// into it file by file instead (each move once, so a repeat after a crash goes on).
fn put_back(dirs: &RunDirs, r: &Move, batch: &mut Batch) -> Result<()> {
    let back = Move {
        from: r.to.clone(),
        to: r.from.clone(),
    };
    let trashed = dirs.data_dir.join(&back.from);
    if !(trashed.is_dir() && dirs.data_dir.join(&back.to).is_dir()) {
        return dirs.move_once(&back, batch).map(|_| ());
    }
    for e in fs::read_dir(&trashed).map_err(|e| Error::io(&trashed, "list", e))? {
        let e = e.map_err(|e| Error::io(&trashed, "list", e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let file = Move {
            from: format!("{}/{name}", back.from),
            to: format!("{}/{name}", back.to),
        };
        dirs.move_once(&file, batch)?;
    }
    fs::remove_dir(&trashed).map_err(|e| Error::io(&trashed, "remove the emptied", e))
}

/// How many replaced files a run's undo brings back from its trash.
pub fn files_in_trash(dirs: &RunDirs, n: &NodeManifest) -> usize {
    n.replaced
        .iter()
        .map(|r| {
            let trashed = dirs.data_dir.join(&r.to);
            match fs::read_dir(&trashed) {
                Ok(entries) => entries.count(),
                Err(_) => 1,
            }
        })
        .sum()
}

/// Restores the data dir as it was before a finished run.
pub fn undo(data_dir: &Path, run_id: &str) -> Result<()> {
    let dirs = RunDirs::new(data_dir, run_id);
    let m = dirs.read_manifest()?;
    dirs.set_state(RunState::Undoing)?;
    failpoint("undo-started")?;
    undo_steps(&dirs, &m)
}

pub(crate) fn undo_steps(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    let started = dirs.read_state()?.started;
    let mut batch = Batch::default();
    for n in &m.nodes {
        dirs.place_guard(&n.node)?;
        for r in &n.replaced {
            put_back(dirs, r, &mut batch)?;
        }
        set_aside_server_files(dirs, n, started, &mut batch)?;
        for s in &n.set_aside {
            dirs.move_once(
                &Move {
                    from: s.to.clone(),
                    to: s.from.clone(),
                },
                &mut batch,
            )?;
        }
        // Originals back first, new files last: until the new snapshot goes, it still
        // hides the replaced files, and until then the guard stays.
        for w in n.writes.iter().filter(|w| w.original.is_some()) {
            let orig = dirs.run().join(w.original.as_ref().expect("filtered"));
            dirs.put_in_place(w, &orig, &mut batch)?;
            failpoint("undo-metadata-write")?;
        }
        batch.finish()?;
        for w in n.writes.iter().filter(|w| w.original.is_none()) {
            let p = dirs.data_dir.join(&w.dest);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| Error::io(&p, "remove", e))?;
                fsync_dir(p.parent().expect("has parent"))?;
            }
        }
        for o in &n.outputs {
            let to = format!("{}/undone/{}", dirs.rel_trash(), o.to);
            if dirs.move_once(
                &Move {
                    from: o.to.clone(),
                    to,
                },
                &mut batch,
            )? {
                // The run created the output's window directory; leave no empty one behind.
                if let Some(parent) = dirs.data_dir.join(&o.to).parent() {
                    let _ = fs::remove_dir(parent);
                }
            }
        }
        batch.finish()?;
        dirs.remove_guard(&n.node)?;
    }
    if let Some(a) = &m.archive {
        let base = Path::new(&a.dir);
        // An undone archive run's windows are back in the node: its archived copies leave the
        // archive's partitions. An undone restore puts the archive's files back.
        for f in a
            .files
            .iter()
            .chain(std::iter::once(&a.manifest))
            .filter(|f| !f.is_empty())
        {
            move_rel(
                base,
                &Move {
                    from: f.clone(),
                    to: format!("{}/{f}.undone", a.undone_dir(&dirs.run_id)),
                },
                &mut batch,
            )?;
        }
        for mv in &a.restore_moves {
            move_rel(
                base,
                &Move {
                    from: mv.to.clone(),
                    to: mv.from.clone(),
                },
                &mut batch,
            )?;
        }
        batch.finish()?;
    }
    dirs.set_state(RunState::Undone)?;
    remove_tmp(dirs)
}
