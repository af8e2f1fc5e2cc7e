//! The run journal: what a run intends to change, durable before it changes anything, so
//! that a crash at any moment can be finished or undone by the next invocation.
//!
//! A run lives in `<data-dir>/.kompactor/runs/<run-id>/`:
//! - `state.json`: where the run is (see [`RunState`]), rewritten atomically at each step;
//! - `plan.json`: the plan it executes;
//! - `manifest.json`: every change of the commit, per node (written before the first one);
//! - `staged/<node>/...`: the complete new metadata files;
//! - `original/<node>/...`: the metadata files as they were before the run.
//!
//! The commit point is the `state.json` transition to [`RunState::Committed`]. Before it, no
//! metadata file of a node has changed, and recovery rolls back (removes the run's outputs).
//! From it on, recovery rolls forward (puts every staged file in place again; each step is
//! idempotent). While a node's metadata may be inconsistent, a guard file in its
//! `snapshots/` makes any InfluxDB 3 server refuse to start.

use crate::pipeline::discover::STATE_DIR;
use crate::error::{Error, Result};
use crate::durable::fsutil::{atomic_write, create_dir_all, fsync_dir, Batch};
use crate::format::ids::SnapshotSeq;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The name of the guard file placed in `snapshots/` while a node's metadata changes.
pub const GUARD_NAME: &str = "KOMPACTOR-COMMIT-IN-PROGRESS";

/// Where a run keeps its files inside the data dir.
#[derive(Clone, Debug)]
pub struct RunDirs {
    pub data_dir: PathBuf,
    pub run_id: String,
}

impl RunDirs {
    pub fn new(data_dir: &Path, run_id: &str) -> RunDirs {
        RunDirs {
            data_dir: data_dir.to_path_buf(),
            run_id: run_id.to_string(),
        }
    }
    pub fn state_dir(data_dir: &Path) -> PathBuf {
        data_dir.join(STATE_DIR)
    }
    pub fn tmp(&self) -> PathBuf {
        Self::state_dir(&self.data_dir)
            .join("tmp")
            .join(&self.run_id)
    }
    pub fn run(&self) -> PathBuf {
        Self::state_dir(&self.data_dir)
            .join("runs")
            .join(&self.run_id)
    }
    pub fn trash(&self) -> PathBuf {
        Self::state_dir(&self.data_dir)
            .join("trash")
            .join(&self.run_id)
    }
}

/// The states of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Groups are being merged into the temporary directory; nothing in a node has changed.
    Merging,
    /// The manifest and the staged metadata are durable; outputs may be moving into nodes.
    Staged,
    /// The commit point: the new metadata is (being) put in place.
    Committed,
    /// Finished: metadata in place, guards removed, replaced files in the trash.
    Done,
    /// Recovery undid an interrupted run before its commit point.
    RolledBack,
    /// `undo` is restoring the data dir as it was before the run.
    Undoing,
    /// `undo` finished.
    Undone,
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateFile {
    pub state: RunState,
    /// Seconds since the epoch when the run started.
    pub started: u64,
    /// Set by `purge` once the run's trash is deleted (it can no longer be undone).
    #[serde(default)]
    pub purged: bool,
}

/// One metadata file the commit puts in place.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetaWrite {
    /// Relative to the data dir.
    pub dest: String,
    /// Relative to the run dir.
    pub staged: String,
    /// The modification time the staged file carries (a rewritten snapshot keeps its own).
    pub mtime: Option<(u64, u32)>,
    /// The copy of the file as it was, relative to the run dir; `None` if it is new.
    pub original: Option<String>,
}

/// A file move: `from` and `to` relative to the data dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
}

/// Everything the commit changes on one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeManifest {
    pub node: String,
    pub new_snapshot: SnapshotSeq,
    /// Verified outputs: from the temporary directory into the node.
    pub outputs: Vec<Move>,
    pub writes: Vec<MetaWrite>,
    /// Derived state set aside for the server to rebuild: from the node into the trash.
    pub set_aside: Vec<Move>,
    /// Replaced Parquet files: from the node into the trash.
    pub replaced: Vec<Move>,
}

/// The archive directory's part of an archive or restore run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveSide {
    /// The archive directory (absolute).
    pub dir: String,
    /// Files an archive run writes into it (relative to it); removed if the run rolls back.
    pub files: Vec<String>,
    /// The archive run's manifest (relative to it).
    pub manifest: String,
    /// A restore's moves of the restored files out of the archive's partitions, done once
    /// the node's commit is durable.
    pub restore_moves: Vec<Move>,
}

/// `manifest.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub nodes: Vec<NodeManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSide>,
}

/// Moves `m.from` to `m.to` (both relative to `base`) unless that already happened.
fn move_rel(base: &Path, m: &Move, batch: &mut Batch) -> Result<bool> {
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

pub fn to_mtime(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn write_json<T: Serialize>(path: &Path, v: &T, tmp: &Path) -> Result<()> {
    atomic_write(
        path,
        &serde_json::to_vec_pretty(v).expect("journal serialises"),
        tmp,
        None,
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::at(path, format!("kompactor's run journal is damaged: {e}"))
            .hint("inspect the run directory by hand; the replaced files are in .kompactor/trash/<run-id>/")
    })
}

impl RunDirs {
    fn journal_tmp(&self) -> PathBuf {
        Self::state_dir(&self.data_dir)
            .join("tmp")
            .join(format!("{}-journal", self.run_id))
    }

    pub fn read_state(&self) -> Result<StateFile> {
        read_json(&self.run().join("state.json"))
    }

    pub fn set_state(&self, state: RunState) -> Result<()> {
        let mut s = match self.read_state() {
            Ok(s) => s,
            Err(_) => StateFile {
                state,
                started: to_mtime(SystemTime::now()).0,
                purged: false,
            },
        };
        s.state = state;
        self.write_state(&s)
    }

    pub fn write_state(&self, s: &StateFile) -> Result<()> {
        create_dir_all(&self.run())?;
        write_json(&self.run().join("state.json"), s, &self.run())
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        write_json(&self.run().join("manifest.json"), m, &self.run())
    }

    pub fn read_manifest(&self) -> Result<Manifest> {
        let p = self.run().join("manifest.json");
        if p.exists() {
            read_json(&p)
        } else {
            Ok(Manifest::default())
        }
    }

    /// Writes a file under the run dir durably (staged metadata, originals).
    pub fn write_run_file(&self, rel: &str, bytes: &[u8], mtime: Option<SystemTime>) -> Result<()> {
        atomic_write(&self.run().join(rel), bytes, &self.run(), mtime)
    }

    fn guard(&self, node: &str) -> PathBuf {
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
    fn move_once(&self, m: &Move, batch: &mut Batch) -> Result<bool> {
        move_rel(&self.data_dir, m, batch)
    }

    /// Batch a prepared file (staged, or an original for undo) over its destination. A
    /// missing source means an earlier attempt already did it.
    fn put_in_place(&self, w: &MetaWrite, from: &Path, batch: &mut Batch) -> Result<()> {
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

/// Named places where tests make the process fail as a crash (or a fault) would.
///
/// Built only with the `failpoints` feature; `KOMPACTOR_FAILPOINT=<name>` aborts the
/// process there, `KOMPACTOR_FAILPOINT=<name>=error` returns an error instead.
pub fn failpoint(name: &str) -> Result<()> {
    if fault_injected(name) {
        eprintln!("kompactor: failpoint {name}: aborting");
        std::process::abort();
    }
    if fault_injected(&format!("{name}=error")) {
        return Err(Error::new(format!("injected fault at failpoint {name}")));
    }
    Ok(())
}

/// Whether the tests asked for the named fault (`KOMPACTOR_FAILPOINT=<name>`); also for
/// faults that change data instead of stopping the process. Always false without the
/// `failpoints` feature.
pub fn fault_injected(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var("KOMPACTOR_FAILPOINT").is_ok_and(|v| v == name) {
        return true;
    }
    let _ = name;
    false
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
        dirs.place_guard(&n.node)?;
        for w in &n.writes {
            dirs.put_in_place(w, &dirs.run().join(&w.staged), &mut batch)?;
            bar.inc(1);
            failpoint("after-metadata-write")?;
        }
        for s in &n.set_aside {
            dirs.move_once(s, &mut batch)?;
        }
        // The metadata is durable before the guard goes.
        batch.finish()?;
        failpoint("after-set-aside")?;
        dirs.remove_guard(&n.node)?;
        failpoint("after-guard-removed")?;
        for r in &n.replaced {
            dirs.move_once(r, &mut batch)?;
            bar.inc(1);
            failpoint("after-trash-move")?;
        }
    }
    bar.finish_and_clear();
    if let Some(a) = &m.archive {
        for mv in &a.restore_moves {
            move_rel(Path::new(&a.dir), mv, &mut batch)?;
        }
        let tmp = Path::new(&a.dir).join("_kompactor/tmp").join(&dirs.run_id);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "remove", e))?;
        }
    }
    batch.finish()?;
    dirs.set_state(RunState::Done)?;
    remove_tmp(dirs)
}

/// Undoes a run that did not reach its commit point: no metadata changed, so removing the
/// run's outputs from the nodes restores the data dir.
fn roll_back(dirs: &RunDirs, m: &Manifest) -> Result<()> {
    let mut batch = Batch::default();
    for n in &m.nodes {
        for o in &n.outputs {
            let to = format!("{}/rolled-back/{}", rel_trash(dirs), o.to);
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
        let tmp = Path::new(&a.dir).join("_kompactor/tmp").join(&dirs.run_id);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "remove", e))?;
        }
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
    dirs.set_state(RunState::RolledBack)?;
    remove_tmp(dirs)
}

fn remove_tmp(dirs: &RunDirs) -> Result<()> {
    for p in [dirs.tmp(), dirs.journal_tmp()] {
        if p.exists() {
            fs::remove_dir_all(&p)
                .map_err(|e| Error::io(&p, "remove the temporary directory", e))?;
        }
    }
    Ok(())
}

/// Lists the ids of the runs in a data dir, oldest first.
pub fn run_ids(data_dir: &Path) -> Result<Vec<String>> {
    let runs = RunDirs::state_dir(data_dir).join("runs");
    if !runs.is_dir() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<String> = fs::read_dir(&runs)
        .map_err(|e| Error::io(&runs, "list", e))?
        .flatten()
        .filter(|e| e.path().join("state.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Ok(ids)
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
                RunState::Undoing => undo_steps(&dirs, &m)?,
                _ => unreachable!(),
            }
        }
        out.push(Recovery {
            run_id: id,
            was: st.state,
            action,
        });
    }
    Ok(out)
}

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

fn undo_steps(dirs: &RunDirs, m: &Manifest) -> Result<()> {
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
            let to = format!("{}/undone/{}", rel_trash(dirs), o.to);
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
                    to: format!("_kompactor/undone/{}/{f}.undone", dirs.run_id),
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

/// The run's trash directory relative to the data dir.
pub fn rel_trash(dirs: &RunDirs) -> String {
    format!("{STATE_DIR}/trash/{}", dirs.run_id)
}

/// Total size of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
