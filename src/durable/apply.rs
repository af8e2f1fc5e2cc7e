//! Putting a staged commit in place, and bringing interrupted runs to an end.
//!
//! [`apply`] changes the nodes in a crash-safe order (guard, outputs, commit point, metadata,
//! set-aside, trash, guard removed); [`recover`] finishes or rolls back whatever a crash left.

use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{fsync_dir, Batch};
use crate::durable::journal::{run_ids, Manifest, MetaWrite, Move, RunDirs, RunState, GUARD_NAME};
use crate::error::{Error, Result};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// Moves `m.from` to `m.to` (both relative to `base`) unless that already happened.
pub(crate) fn move_rel(base: &Path, m: &Move, batch: &mut Batch) -> Result<bool> {
    let from = base.join(&m.from);
    let to = base.join(&m.to);
    if from.exists() {
        if to.exists() {
            return Err(Error::at(
                &to,
                format!(
                    "cannot move {} here: the destination exists",
                    from.display()
                ),
            ));
        }
        batch.rename(&from, &to)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

impl RunDirs {
    pub(crate) fn guard(&self, node: &str) -> PathBuf {
        self.data_dir.join(node).join("snapshots").join(GUARD_NAME)
    }

    /// Places the guard that keeps a server from starting on `node` mid-change.
    pub fn place_guard(&self, node: &str) -> Result<()> {
        use std::io::Write;
        let path = self.guard(node);
        let text = format!(
            "kompactor run {} is changing this node's metadata (or was interrupted doing so).\n\
             Do not start the server: run `kompactor {} --hosts {node}` first; it finishes or\n\
             rolls back the interrupted run and removes this file.\n",
            self.run_id,
            self.data_dir.display()
        );
        let mut f =
            fs::File::create(&path).map_err(|e| Error::io(&path, "create the commit guard", e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&path, "write the commit guard", e))?;
        fsync_dir(path.parent().expect("has parent"))
    }

    /// Removes this run's guard from `node`, if present.
    pub fn remove_guard(&self, node: &str) -> Result<()> {
        let path = self.guard(node);
        match fs::read_to_string(&path) {
            Ok(text) if text.contains(&format!("run {} ", self.run_id)) => {
                fs::remove_file(&path)
                    .map_err(|e| Error::io(&path, "remove the commit guard", e))?;
                fsync_dir(path.parent().expect("has parent"))
            }
            _ => Ok(()),
        }
    }

    /// Moves `m.from` to `m.to` (relative to the data dir) unless that already happened.
    pub(crate) fn move_once(&self, m: &Move, batch: &mut Batch) -> Result<bool> {
        move_rel(&self.data_dir, m, batch)
    }

    /// Batch a prepared file (staged, or an original for undo) over its destination. A
    /// missing source means an earlier attempt already did it.
    pub(crate) fn put_in_place(&self, w: &MetaWrite, from: &Path, batch: &mut Batch) -> Result<()> {
        let dest = self.data_dir.join(&w.dest);
        if from.exists() {
            batch.rename(from, &dest)
        } else if dest.exists() {
            Ok(())
        } else {
            Err(Error::at(
                from,
                format!(
                    "neither this file nor {} exists: the run's journal is damaged",
                    dest.display()
                ),
            ))
        }
    }
}

/// Applies a prepared commit from its manifest: the part of a run that changes nodes.
pub fn apply(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    for n in &m.nodes {
        dirs.place_guard(&n.node)?;
    }
    failpoint("after-guard")?;
    let mut batch = Batch::default();
    for n in &m.nodes {
        for o in &n.outputs {
            dirs.move_once(o, &mut batch)?;
            failpoint("after-output-moved")?;
        }
    }
    batch.finish()?;
    dirs.set_state(RunState::Committed)?;
    failpoint("after-commit-point")?;
    roll_forward(dirs, m)
}

/// Applies a commit; if that fails, brings the data dir back to a consistent state at once
/// (back before the commit point, forward after it) and returns the error. Should that fail
/// too, the next invocation does it.
pub fn apply_or_recover(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    dirs.write_manifest(m)?;
    dirs.set_state(RunState::Staged)?;
    failpoint("after-staged")?;
    apply(dirs, m).inspect_err(|_| {
        if let Err(r) = recover(&dirs.data_dir, false) {
            log::error!("recovery after the failed commit failed too: {r}");
        }
    })
}

/// Finishes a run past its commit point; every step can run again after a crash.
fn roll_forward(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    let steps: usize = m
        .nodes
        .iter()
        .map(|n| n.writes.len() + n.replaced.len())
        .sum();
    let bar = crate::progress::bar(steps as u64, "committing");
    let mut batch = Batch::default();
    for n in &m.nodes {
        bar.set_message(n.node.clone());
        let mut clock = crate::progress::StepClock::new(&n.node);
        dirs.place_guard(&n.node)?;
        for w in &n.writes {
            dirs.put_in_place(w, &dirs.run().join(&w.staged), &mut batch)?;
            bar.inc(1);
            failpoint("after-metadata-write")?;
        }
        for s in &n.set_aside {
            // Already in the trash: an earlier attempt set it aside, and what the node holds
            // there now a server built after the guard went, from the new metadata.
            if !dirs.data_dir.join(&s.to).exists() {
                dirs.move_once(s, &mut batch)?;
            }
        }
        // The metadata is durable before any replaced file leaves the node.
        batch.finish()?;
        failpoint("after-set-aside")?;
        // Still under the guard: a window directory moved whole takes everything in it, and
        // only while no server can run is that exactly the replaced files. A server started
        // before an interrupted run is finished could write into such a directory.
        clock.done("putting the metadata in place");
        with_read_ahead(&dirs.data_dir, &n.replaced, || {
            for r in &n.replaced {
                // In the trash already: an earlier attempt moved it, and a directory of that
                // name in the node now is a server's, made after that attempt removed the guard.
                let to = dirs.data_dir.join(&r.to);
                if !to.exists() {
                    batch.rename_if_present(&dirs.data_dir.join(&r.from), &to)?;
                }
                bar.inc(1);
                failpoint("after-trash-move")?;
            }
            Ok(())
        })?;
        batch.finish()?;
        clock.done("moving the replaced files into the trash");
        dirs.remove_guard(&n.node)?;
        failpoint("after-guard-removed")?;
    }
    bar.finish_and_clear();
    if let Some(a) = &m.archive {
        for mv in &a.restore_moves {
            move_rel(Path::new(&a.dir), mv, &mut batch)?;
        }
        remove_archive_tmp(a, &dirs.run_id)?;
    }
    batch.finish()?;
    dirs.set_state(RunState::Done)?;
    remove_tmp(dirs)
}

/// Runs `moving`, which moves `moves` in order, while a few threads read each source ahead.
///
/// Moving a directory to another parent rewrites its `..` entry, which the kernel reads
/// first. After a long merge a deep history's window directories are rarely still cached,
/// and read one rename at a time, hundreds of thousands of them took most of the commit.
/// Read ahead in parallel (listing a directory reads that entry), the renames find them
/// cached. Reading changes nothing: a source already moved is simply not found.
fn with_read_ahead(
    data_dir: &Path,
    moves: &[Move],
    moving: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use crate::durable::fsutil::IO_THREADS;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..IO_THREADS.min(moves.len() / 64) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(m) = moves.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Ok(entries) = fs::read_dir(data_dir.join(&m.from)) {
                        entries.for_each(drop);
                    }
                }
            });
        }
        let moved = moving();
        stop.store(true, Ordering::Relaxed);
        moved
    })
}

/// Undoes a run that did not reach its commit point: no metadata changed, so removing the
/// run's outputs from the nodes restores the data dir.
fn roll_back(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    let mut batch = Batch::default();
    for n in &m.nodes {
        for o in &n.outputs {
            let to = format!("{}/rolled-back/{}", dirs.rel_trash(), o.to);
            dirs.move_once(
                &Move {
                    from: o.to.clone(),
                    to,
                },
                &mut batch,
            )?;
        }
        batch.finish()?;
        dirs.remove_guard(&n.node)?;
    }
    if let Some(a) = &m.archive {
        remove_archive_tmp(a, &dirs.run_id)?;
        // The archived copies of windows that stay in the node go, so they are not counted twice.
        for f in a
            .files
            .iter()
            .chain(std::iter::once(&a.manifest))
            .filter(|f| !f.is_empty())
        {
            let p = Path::new(&a.dir).join(f);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| Error::io(&p, "remove the archived copy", e))?;
                fsync_dir(p.parent().expect("has parent"))?;
            }
        }
    }
    // Scratch first: after a full disk, that frees the room the state file needs.
    remove_tmp(dirs)?;
    dirs.set_state(RunState::RolledBack)
}

/// Removes the run's scratch directory in the archive.
fn remove_archive_tmp(a: &crate::durable::journal::ArchiveSide, run_id: &str) -> Result<()> {
    let tmp = Path::new(&a.dir).join(a.tmp_dir(run_id));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "remove", e))?;
    }
    Ok(())
}

pub(crate) fn remove_tmp(dirs: &RunDirs) -> Result<()> {
    for p in [dirs.tmp(), dirs.journal_tmp()] {
        if p.exists() {
            fs::remove_dir_all(&p)
                .map_err(|e| Error::io(&p, "remove the temporary directory", e))?;
        }
    }
    Ok(())
}

/// What recovery found and did about one run.
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    pub run_id: String,
    pub was: RunState,
    pub action: &'static str,
}

/// Brings every unfinished run to an end: back before the commit point, forward after it.
/// With `report_only`, says what it would do and changes nothing.
pub fn recover(data_dir: &Path, report_only: bool) -> Result<Vec<Recovery>> {
    let mut out = Vec::new();
    for id in run_ids(data_dir)? {
        let dirs = RunDirs::new(data_dir, &id);
        let st = dirs.read_state()?;
        let action = match st.state {
            RunState::Merging | RunState::Staged => {
                "rolled back (the commit point was not reached)"
            }
            RunState::Committed => "finished (the commit point was passed)",
            RunState::Undoing => "undo finished",
            RunState::Done | RunState::RolledBack | RunState::Undone => continue,
        };
        if !report_only {
            let m = dirs.read_manifest()?;
            match st.state {
                RunState::Merging | RunState::Staged => roll_back(&dirs, &m)?,
                RunState::Committed => roll_forward(&dirs, &m)?,
                RunState::Undoing => crate::durable::undo::undo_steps(&dirs, &m)?,
                _ => unreachable!(),
            }
        }
        out.push(Recovery {
            run_id: id,
            was: st.state,
            action,
        });
    }
    if !report_only {
        sweep_scratch(data_dir)?;
    }
    Ok(out)
}

/// Removes what interrupted processes left in `.kompactor/tmp/` (a `prepare` killed while
/// merging, say). Called with the lock held once every run is finished, so nothing there is
/// in use or needed by a recovery.
pub fn sweep_scratch(data_dir: &Path) -> Result<()> {
    let root = RunDirs::state_dir(data_dir).join("tmp");
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let gone = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        gone.map_err(|e| Error::io(&p, "remove the leftover temporary file", e))?;
        log::info!("removed {}, left by an interrupted kompactor", p.display());
    }
    Ok(())
}
