//! Running kompactor's own steps (prepare, verify, the compaction, undo) as child processes.
//!
//! A child, not a call: whatever happens to a step (a panic, the OOM killer, a signal), the
//! routine lives on to start the server again and say what state the node is in.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to run kompactor's steps on one data dir.
pub struct Kompactor {
    /// The executable: this one, unless `--kompactor` names another (a wrapper, say).
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub hosts: String,
    /// Options for the dry run, `prepare` and the compaction.
    pub compaction_args: Vec<String>,
    /// Each step's output is kept here: `<step>.json` (stdout) and `<step>.log` (stderr).
    pub record: PathBuf,
}

/// How a step ended.
pub struct Ended {
    /// The exit status; None if a signal ended it.
    pub code: Option<i32>,
    /// The child's pid (kompactor's run ids end with it).
    pub pid: u32,
    pub stdout: String,
    /// The last lines it wrote on stderr, indented.
    pub stderr_tail: String,
    pub log: PathBuf,
}

impl Ended {
    /// What a step that did not succeed tells the operator: `what` ended so, where its whole
    /// output is, and the last lines it wrote.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "{what}: {} (see {}):\n{}",
            self.status(),
            self.log.display(),
            self.stderr_tail
        )
    }

    /// How it ended, in words.
    pub fn status(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".into(),
        }
    }

    /// How many warnings it logged (kompactor's `warn:` lines).
    pub fn warnings(&self) -> usize {
        fs::read_to_string(&self.log)
            .map(|t| t.lines().filter(|l| l.contains(": warn: ")).count())
            .unwrap_or(0)
    }

    /// Its `--json` document.
    pub fn document<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&self.stdout).ok()
    }
}

impl Kompactor {
    /// `kompactor <args>`, waited for.
    pub fn run(&self, step: &str, args: &[String]) -> Result<Ended, String> {
        let out_path = self.record.join(format!("{step}.json"));
        let log = self.record.join(format!("{step}.log"));
        let out = fs::File::create(&out_path)
            .map_err(|e| format!("cannot create {}: {e}", out_path.display()))?;
        let err =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", self.exe.display()))?;
        let pid = child.id();
        let status = child
            .wait()
            .map_err(|e| format!("waiting for kompactor {step}: {e}"))?;
        Ok(Ended {
            code: status.code(),
            pid,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr_tail: tail(&log, 12),
            log,
        })
    }

    fn with_hosts(&self, lead: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
        a.push(self.data_dir.display().to_string());
        a.extend(["--hosts".to_string(), self.hosts.clone()]);
        a
    }

    /// The compaction's plan, as a dry run: checks the options and the disk space.
    pub fn dry_run(&self) -> Result<Ended, String> {
        let mut a = self.with_hosts(&[]);
        a.extend(["--dry-run".into(), "--json".into()]);
        a.extend(self.compaction_args.iter().cloned());
        self.run("preflight", &a)
    }

    /// `kompactor prepare`, while the server runs.
    pub fn prepare(&self) -> Result<Ended, String> {
        let mut a = self.with_hosts(&["prepare"]);
        a.push("--json".into());
        a.extend(self.compaction_args.iter().cloned());
        self.run("prepare", &a)
    }

    /// `kompactor verify`.
    pub fn verify(&self) -> Result<Ended, String> {
        self.run("verify", &self.with_hosts(&["verify"]))
    }

    /// The compaction.
    pub fn compact(&self) -> Result<Ended, String> {
        let mut a = self.with_hosts(&[]);
        a.push("--json".into());
        a.extend(self.compaction_args.iter().cloned());
        self.run("compact", &a)
    }

    /// `kompactor undo --run ID`.
    pub fn undo(&self, run_id: &str) -> Result<Ended, String> {
        let a = vec![
            "undo".to_string(),
            self.data_dir.display().to_string(),
            "--run".into(),
            run_id.to_string(),
        ];
        self.run("undo", &a)
    }

    /// The run a child with `pid` started, if it got as far as recording one (run ids are
    /// `<time>-<pid>`).
    pub fn run_of_pid(&self, pid: u32) -> Option<String> {
        let runs = crate::durable::journal::RunDirs::state_dir(&self.data_dir).join("runs");
        let suffix = format!("-{pid}");
        let mut found: Vec<String> = fs::read_dir(runs)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(&suffix))
            .collect();
        found.sort();
        found.pop()
    }

    /// Whether a run directory exists for `id`.
    pub fn run_recorded(&self, id: &str) -> bool {
        crate::durable::journal::RunDirs::state_dir(&self.data_dir)
            .join("runs")
            .join(id)
            .is_dir()
    }
}

/// The parts of the compaction's `--json` report the routine reads (docs/json.md).
#[derive(Deserialize)]
pub struct RunView {
    pub run_id: String,
    pub nodes: Vec<NodeView>,
}

/// One node of a [`RunView`].
#[derive(Deserialize)]
pub struct NodeView {
    pub committed: Option<serde::de::IgnoredAny>,
    pub tables: Vec<TableView>,
}

/// One table of a [`NodeView`].
#[derive(Deserialize)]
pub struct TableView {
    pub files_before: u64,
    pub files_after: u64,
    pub groups_merged: u64,
    pub windows_prepared: u64,
}

/// The parts of the dry run's `--json` plan the routine reads.
#[derive(Deserialize)]
pub struct PlanView {
    pub space: SpaceView,
    pub nodes: Vec<PlanNodeView>,
}

impl PlanView {
    /// Whether a compaction would change anything: a window to merge, or entries of purged
    /// files to drop.
    pub fn has_work(&self) -> bool {
        self.nodes.iter().any(|n| {
            n.tables.iter().any(|t| !t.groups.is_empty())
                || n.findings.iter().any(|f| f.kind == "purged")
        })
    }
}

/// One node of a [`PlanView`].
#[derive(Deserialize)]
pub struct PlanNodeView {
    pub findings: Vec<FindingView>,
    pub tables: Vec<PlanTableView>,
}

/// A finding's kind.
#[derive(Deserialize)]
pub struct FindingView {
    pub kind: String,
}

/// One table of a [`PlanNodeView`]: its groups, counted.
#[derive(Deserialize)]
pub struct PlanTableView {
    pub groups: Vec<serde::de::IgnoredAny>,
}

/// The disk space a run needs and what is free.
#[derive(Deserialize)]
pub struct SpaceView {
    pub total: u64,
    pub available: u64,
    pub mount: String,
}

/// The parts of `prepare --json` the routine reads.
#[derive(Deserialize)]
pub struct PrepareView {
    pub windows_prepared: u64,
    pub windows_failed: u64,
    pub bytes: u64,
}

/// The last `n` lines of a file, indented.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
