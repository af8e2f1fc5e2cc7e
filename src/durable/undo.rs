//! Undo: restoring a data dir as it was before a finished run, and when that is refused.

use crate::durable::apply::{move_rel, remove_tmp};
use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{fsync_dir, Batch};
use crate::durable::journal::{run_ids, Manifest, Move, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::SnapshotSeq;
use std::fs;
use std::path::Path;

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

/// Restores the data dir as it was before a finished run.
pub fn undo(data_dir: &Path, run_id: &str) -> Result<()> {
    let dirs = RunDirs::new(data_dir, run_id);
    let m = dirs.read_manifest()?;
    dirs.set_state(RunState::Undoing)?;
    failpoint("undo-started")?;
    undo_steps(&dirs, &m)
}

pub(crate) fn undo_steps(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    let mut batch = Batch::default();
    for n in &m.nodes {
        dirs.place_guard(&n.node)?;
        for r in &n.replaced {
            dirs.move_once(
                &Move {
                    from: r.to.clone(),
                    to: r.from.clone(),
                },
                &mut batch,
            )?;
        }
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

