//! Carrying a delete out: per node, plan the table's merges and run them, then make the
//! outputs durable and commit every node through the journal; a failure rolls back at once.

use super::plan::plan_table;
use super::report::{DeleteReport, NodeDelete};
use super::target::{label, wal_files_newer, Targets};
use super::{DeleteWindow, Selection};
use crate::durable::apply::recover;
use crate::durable::fsutil::{create_dir_all, Batch};
use crate::durable::interlock::refuse_if_in_use;
use crate::durable::journal::{Manifest, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::TableKey;
use crate::json;
use crate::pipeline::commit::{commit_nodes, Change};
use crate::pipeline::discover::Node;
use crate::pipeline::merge::{merge_group, Engine, EngineOptions, MergeRules, Merged};
use crate::pipeline::plan::Group;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// A delete rewrites each file whole, however many rows it keeps, and drops the selected
/// points rather than combining them.
const DELETE_RULES: MergeRules = MergeRules {
    max_rows: u64::MAX,
    keep_duplicates: false,
    drop_keys: true,
};

/// Per node (by its index in [`Targets::nodes`]), the groups merged and what each wrote.
type NodeMerges = Vec<(usize, Vec<(Group, Merged)>)>;

/// A delete to carry out: what it selects, and under which run.
pub(crate) struct DeleteRun<'a> {
    pub data_dir: &'a Path,
    /// The database and table as the operator named them, for the report.
    pub database: &'a str,
    pub table: &'a str,
    pub selection: &'a Selection,
    pub run_id: &'a str,
    /// When the run started, for the report.
    pub started: DateTime<Utc>,
    pub dry_run: bool,
    /// `--allow-running-server`, checked again right before the commit.
    pub allow_running_server: bool,
}

impl DeleteRun<'_> {
    /// The report before any node is planned.
    fn empty_report(&self) -> DeleteReport {
        DeleteReport {
            format_version: json::FORMAT_VERSION,
            run_id: (!self.dry_run).then(|| self.run_id.to_string()),
            dry_run: self.dry_run,
            data_dir: self.data_dir.display().to_string(),
            started: self.started.to_rfc3339(),
            finished: String::new(),
            database: self.database.to_string(),
            table: self.table.to_string(),
            selection: self.selection.clone(),
            nodes: Vec::new(),
        }
    }
}

/// Deletes `run`'s selection from the table of every node of `targets` (a dry run only
/// plans), merging with the options `engine` gives for a spill directory. Writes the run's
/// `report.json` when anything changed, and returns the report.
pub(crate) fn delete(
    run: &DeleteRun,
    targets: &Targets,
    engine: impl FnOnce(PathBuf) -> EngineOptions,
) -> Result<DeleteReport> {
    // A dry run must not create a file under DATA_DIR: its DuckDB spills elsewhere.
    let scratch =
        tempfile::tempdir().map_err(|e| Error::new(format!("a scratch directory: {e}")))?;
    let dirs = RunDirs::new(run.data_dir, run.run_id);
    let (spill, out_dir) = if run.dry_run {
        (scratch.path().join("spill"), scratch.path().join("out"))
    } else {
        (dirs.tmp().join("spill"), dirs.tmp().join("out"))
    };
    let engine = Engine::new(&engine(spill.clone()))?;
    let mut report = run.empty_report();
    if !run.dry_run {
        create_dir_all(&spill)?;
        create_dir_all(&out_dir)?;
    }
    let merged = merge_nodes(run, targets, &engine, &dirs, &out_dir, &mut report)?;
    drop(engine);
    let any = merged.iter().any(|(_, m)| !m.is_empty());
    if !run.dry_run && any {
        if let Err(e) = commit(run, &dirs, &targets.nodes, &merged, &mut report) {
            // Rolled back now (or finished, past its commit point) rather than at the next run.
            roll_back(run.data_dir);
            return Err(e);
        }
    }
    report.finished = Utc::now().to_rfc3339();
    if !run.dry_run && any {
        dirs.write_run_file("report.json", json::to_string(&report).as_bytes(), None)?;
    }
    Ok(report)
}

/// Plans the table of each node and, unless dry, merges its groups into `out_dir`; adds each
/// node to `report`.
fn merge_nodes(
    run: &DeleteRun,
    targets: &Targets,
    engine: &Engine,
    dirs: &RunDirs,
    out_dir: &Path,
    report: &mut DeleteReport,
) -> Result<NodeMerges> {
    let mut merged_all = Vec::new();
    let mut merging = false;
    for (i, (n, key)) in targets.nodes.iter().zip(&targets.keys).enumerate() {
        let plan = plan_table(
            engine.conn(),
            run.data_dir,
            n,
            *key,
            run.selection,
            run.run_id,
        )?;
        let mut merged = Vec::new();
        if !run.dry_run && !plan.groups.is_empty() {
            // Before the first merge of any node, so that recovery clears its scratch after a
            // crash.
            if !merging {
                dirs.set_state(RunState::Merging)?;
                merging = true;
            }
            merged = merge_table(run, n, *key, plan.groups, engine, out_dir)?;
        }
        let label = label(n, &targets.names, *key);
        report
            .nodes
            .push(node_delete(n, *key, label, plan.windows, &merged));
        merged_all.push((i, merged));
    }
    Ok(merged_all)
}

/// Merges `groups` of `key` on node `n`; the first that fails rolls the run back.
fn merge_table(
    run: &DeleteRun,
    n: &Node,
    key: TableKey,
    groups: Vec<Group>,
    engine: &Engine,
    out_dir: &Path,
) -> Result<Vec<(Group, Merged)>> {
    let mut merged = Vec::new();
    for g in groups {
        let m = merge_group(engine, run.data_dir, &g, out_dir, DELETE_RULES).map_err(|e| {
            roll_back(run.data_dir);
            Error::new(format!(
                "node {} table {} window {}: {e}",
                n.id,
                n.table_label(key),
                g.window_start.to_rfc3339()
            ))
            .hint("nothing was changed")
        })?;
        merged.push((g, m));
    }
    Ok(merged)
}

/// What the delete did (or would do) on node `n`, before its commit.
fn node_delete(
    n: &Node,
    key: TableKey,
    label: String,
    windows: Vec<DeleteWindow>,
    merged: &[(Group, Merged)],
) -> NodeDelete {
    NodeDelete {
        node: n.id.clone(),
        table: key,
        label,
        wal_files_newer: wal_files_newer(n),
        rows_deleted: windows.iter().map(|w| w.rows_deleted).sum(),
        versions_removed: windows.iter().map(|w| w.versions_removed).sum(),
        files_rewritten: windows.iter().map(|w| w.files).sum(),
        files_written: merged.iter().map(|(_, m)| m.outputs.len()).sum(),
        windows,
        committed: None,
    }
}

/// Makes the outputs durable, stages each node's new metadata and commits.
fn commit(
    run: &DeleteRun,
    dirs: &RunDirs,
    nodes: &[Node],
    merged: &NodeMerges,
    report: &mut DeleteReport,
) -> Result<()> {
    let mut outputs = Batch::default();
    for (_, m) in merged {
        for o in m.iter().flat_map(|(_, m)| &m.outputs) {
            outputs.adopt(&o.tmp_path);
        }
    }
    outputs.finish()?;
    refuse_if_in_use(run.data_dir, run.allow_running_server)?;
    let changes: Vec<(usize, Vec<Change>)> = merged
        .iter()
        .map(|(i, m)| {
            let changes = m.iter().map(|(g, m)| Change {
                table: g.table,
                removes: &g.inputs,
                adds: &m.outputs,
                in_place: true,
            });
            (*i, changes.collect())
        })
        .collect();
    for (i, c) in commit_nodes(nodes, &changes, dirs, Manifest::default())? {
        report.nodes[i].committed = Some(c);
    }
    Ok(())
}

/// Finishes or rolls back the failed run now; a failure of that is logged, and the next run
/// recovers it.
fn roll_back(data_dir: &Path) {
    if let Err(r) = recover(data_dir, false) {
        log::error!("rolling the failed delete back failed too: {r}");
    }
}
