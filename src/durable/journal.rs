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

use crate::durable::fsutil::{atomic_write, create_dir_all};
use crate::error::{Error, Result};
use crate::format::ids::SnapshotSeq;
use crate::format::layout::STATE_DIR;
use crate::json::FORMAT_VERSION;
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

impl RunState {
    /// Whether the run has come to an end (nothing for recovery to do).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Done | RunState::RolledBack | RunState::Undone
        )
    }
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateFile {
    /// The layout version (1); journals written before it carried none.
    #[serde(default = "format_version")]
    pub format_version: u32,
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
    /// Replaced Parquet files, and window directories that held nothing else (moved whole):
    /// from the node into the trash.
    pub replaced: Vec<Move>,
}

/// The archive directory's part of an archive or restore run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveSide {
    /// The archive directory (absolute).
    pub dir: String,
    /// The run's scratch directory inside the archive (relative to it), removed when the run
    /// ends either way.
    #[serde(default)]
    pub tmp: String,
    /// Where an undo moves the run's archived files (relative to the archive directory).
    #[serde(default)]
    pub undone: String,
    /// Files an archive run writes into it (relative to it); removed if the run rolls back.
    pub files: Vec<String>,
    /// The archive run's manifest (relative to it).
    pub manifest: String,
    /// A restore's moves of the restored files out of the archive's partitions, done once
    /// the node's commit is durable.
    pub restore_moves: Vec<Move>,
}

impl ArchiveSide {
    /// The run's scratch directory in the archive; runs journaled before `tmp` was recorded
    /// used the archive's own default.
    pub fn tmp_dir(&self, run_id: &str) -> String {
        if self.tmp.is_empty() {
            format!("_kompactor/tmp/{run_id}")
        } else {
            self.tmp.clone()
        }
    }

    /// Where an undo moves the run's archived files; same fallback as [`Self::tmp_dir`].
    pub fn undone_dir(&self, run_id: &str) -> String {
        if self.undone.is_empty() {
            format!("_kompactor/undone/{run_id}")
        } else {
            self.undone.clone()
        }
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout version (1); journals written before it carried none.
    #[serde(default = "format_version")]
    pub format_version: u32,
    pub nodes: Vec<NodeManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSide>,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            nodes: Vec::new(),
            archive: None,
        }
    }
}

fn format_version() -> u32 {
    FORMAT_VERSION
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
    pub(crate) fn journal_tmp(&self) -> PathBuf {
        Self::state_dir(&self.data_dir)
            .join("tmp")
            .join(format!("{}-journal", self.run_id))
    }

    pub fn read_state(&self) -> Result<StateFile> {
        read_json(&self.run().join("state.json"))
    }

    /// Moves the run to `state`; starts `state.json` for a new run, and refuses to overwrite
    /// a damaged one (it is the only record of where the run was).
    pub fn set_state(&self, state: RunState) -> Result<()> {
        let mut s = if self.run().join("state.json").exists() {
            self.read_state()?
        } else {
            StateFile {
                format_version: FORMAT_VERSION,
                state,
                started: to_mtime(SystemTime::now()).0,
                purged: false,
            }
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

/// Where a replaced file goes inside a run's trash (relative to it): its path with its last
/// directory (the server's 10-minute window, `HH-MM`) folded into the file name.
///
/// For the files moved one by one (a window directory holding only replaced files is moved
/// whole): the trash then holds one new directory per table and day rather than one per
/// window, which a commit on a deep history would create (and fsync) by the hundred thousand
/// while the server is stopped.
pub fn trash_name(rel: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, file)) => match dir.rsplit_once('/') {
            Some((parent, window)) => format!("{parent}/{window}__{file}"),
            None => format!("{dir}__{file}"),
        },
        None => rel.to_string(),
    }
}

/// The directory [`trash_name`] puts a replaced file in (relative to the trash), if any.
pub fn trash_dir(rel: &str) -> Option<&str> {
    let (dir, _file) = rel.rsplit_once('/')?;
    dir.rsplit_once('/').map(|(parent, _window)| parent)
}

impl RunDirs {
    /// The run's trash directory relative to the data dir.
    pub fn rel_trash(&self) -> String {
        format!("{STATE_DIR}/trash/{}", self.run_id)
    }
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

#[cfg(test)]
mod tests {
    use super::{trash_dir, trash_name};

    #[test]
    fn trash_names_fold_the_window_directory_into_the_file_name() {
        assert_eq!(
            trash_name("node0/dbs/1/0/2025-01-06/00-10/0000000001.parquet"),
            "node0/dbs/1/0/2025-01-06/00-10__0000000001.parquet"
        );
        assert_eq!(trash_name("w/f.parquet"), "w__f.parquet");
        assert_eq!(trash_name("f.parquet"), "f.parquet");
        for rel in [
            "node0/dbs/1/0/2025-01-06/00-10/0000000001.parquet",
            "w/f.parquet",
            "f.parquet",
        ] {
            let dir = trash_name(rel).rsplit_once('/').map(|(d, _)| d.to_string());
            assert_eq!(trash_dir(rel).map(String::from), dir, "{rel}");
        }
    }
}
