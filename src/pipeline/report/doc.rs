//! The typed reports, as `docs/json.md` documents them: the plan of a compaction and what a
//! run did, per node and table. Field order is the documents' key order.

use crate::format::ids::{DbId, TableId};
use crate::pipeline::commit::Committed;
use crate::pipeline::discover::{Finding, Generation, Node};
use crate::pipeline::merge::Merged;
use crate::pipeline::plan::{Group, Reach, Skipped, TablePlan, TierUse};
use crate::pipeline::space::SpaceEstimate;
use serde::Serialize;

/// The part of the report about one node.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub node: String,
    pub generation: Generation,
    pub snapshots: usize,
    pub loaded_snapshots: usize,
    pub checkpoints: usize,
    /// Checkpoints the server merges at startup; 0 when it loads snapshots alone.
    pub checkpoints_loaded: usize,
    pub table_index: bool,
    pub wal_files: usize,
    pub findings: Vec<Finding>,
    pub tables: Vec<TablePlan>,
}

impl NodeReport {
    /// The report of `node`, with the plan of its tables.
    pub fn new(node: &Node, tables: Vec<TablePlan>) -> NodeReport {
        NodeReport {
            node: node.id.clone(),
            generation: node.generation,
            snapshots: node.snapshots.len(),
            loaded_snapshots: node.loaded_snapshots,
            checkpoints: node.checkpoints.len(),
            checkpoints_loaded: node.checkpoints_loaded,
            table_index: node.table_index_marker.is_some() || !node.table_index_files.is_empty(),
            wal_files: node.wal.len(),
            findings: node.findings.clone(),
            tables,
        }
    }
}

/// The outcome of one table after a run.
#[derive(Debug, Default, Serialize)]
pub struct TableOutcome {
    pub files_before: usize,
    pub files_after: usize,
    /// Rows in the table's files, duplicates included.
    pub rows_in_files_before: u64,
    pub rows_in_files_after: u64,
    pub duplicates_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub groups_merged: usize,
    /// Of those, the windows that came prepared (`kompactor prepare`), checked and taken as
    /// they were; the others were merged during this run.
    pub windows_prepared: usize,
    /// Points stored in files of different chunk_time (overwrites that came after an earlier
    /// merge wider than 10m), each combined into one row, the later write first.
    pub cross_chunk_points: u64,
    /// The windows that held such points, and how many each.
    pub cross_chunk_windows: Vec<CrossChunkWindow>,
    /// Files hidden by the load window that were merged (`--include-hidden`), and their rows:
    /// visible again after the restart.
    pub files_revived: usize,
    pub rows_revived: u64,
    /// Groups that failed while merging or verifying; their inputs are untouched.
    pub groups_failed: Vec<GroupFailure>,
    /// Windows the plan left alone, and why (too recent, or a damaged input).
    pub windows_skipped: Vec<Skipped>,
    pub seconds: f64,
}

impl TableOutcome {
    /// The table as the plan found it, before anything was merged.
    pub fn before(t: &TablePlan) -> TableOutcome {
        TableOutcome {
            files_before: t.files_now,
            files_after: t.files_now,
            rows_in_files_before: t.rows,
            rows_in_files_after: t.rows,
            bytes_before: t.bytes,
            bytes_after: t.bytes,
            windows_skipped: t.skipped.clone(),
            ..TableOutcome::default()
        }
    }

    /// Accounts for one merged group. Revived inputs were not counted before (the server
    /// did not see them), so only the live inputs leave the counts.
    pub fn merged(&mut self, g: &Group, m: &Merged) {
        self.groups_merged += 1;
        self.files_after = self.files_after + m.outputs.len() - (g.inputs.len() - g.revived);
        self.rows_in_files_after =
            self.rows_in_files_after + m.rows_out - (m.rows_in - g.rows_revived);
        self.duplicates_removed += m.rows_in - m.rows_out;
        self.bytes_after = self.bytes_after + m.outputs.iter().map(|x| x.size_bytes).sum::<u64>()
            - (g.bytes - g.bytes_revived);
        self.files_revived += g.revived;
        self.rows_revived += g.rows_revived;
        if m.cross_chunk_points > 0 {
            self.cross_chunk_points += m.cross_chunk_points;
            self.cross_chunk_windows.push(CrossChunkWindow {
                window_start: g.window_start.to_rfc3339(),
                points: m.cross_chunk_points,
            });
        }
    }
}

/// A merged window whose points repeated across chunk_times.
#[derive(Debug, Serialize)]
pub struct CrossChunkWindow {
    pub window_start: String,
    pub points: u64,
}

/// A group that was not merged, and why; its inputs are untouched.
#[derive(Debug, Serialize)]
pub struct GroupFailure {
    pub window_start: String,
    pub inputs: usize,
    pub reason: String,
}

/// The options a compaction was started with, as the operator would type them.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    pub hosts: Vec<String>,
    /// `--window`, e.g. `1d`; `null` when the tiers decide.
    pub window: Option<String>,
    /// The tiers the plan used (`--tiers`, or the one width of `--window`), e.g.
    /// `1d:1h,31d:1d,366d:1M,1y`.
    pub tiers: String,
    /// `--writer-reach` as given (`2d`), or `null` when measured per table (`auto`).
    pub writer_reach: Option<String>,
    /// `--keep-duplicates`.
    pub keep_duplicates: bool,
    /// `--min-age`, e.g. `1h`.
    pub min_age: String,
    pub max_rows_per_file: u64,
    /// `--threads`; `null` for all CPUs.
    pub threads: Option<u32>,
    /// `--memory-limit`, in MiB, e.g. `953MiB`.
    pub memory_limit: String,
    pub dry_run: bool,
    /// `--include-hidden`.
    pub include_hidden: bool,
    /// `--load-window`; `null` for the release's default.
    pub load_window: Option<u64>,
}

/// The plan of a compaction: the `--dry-run --json` document and a run's `plan.json`.
#[derive(Debug, Serialize)]
pub struct PlanDoc {
    pub format_version: u32,
    pub data_dir: String,
    pub dry_run: bool,
    pub options: RunOptions,
    /// The disk space the run needs, and what is free.
    pub space: SpaceEstimate,
    pub nodes: Vec<NodeReport>,
}

/// Everything a run did, per node and table: `report.json` and the `--json` document.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub format_version: u32,
    pub run_id: String,
    pub data_dir: String,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// Where the time went.
    pub phases: Phases,
    /// The options the run was started with.
    pub options: RunOptions,
    pub nodes: Vec<NodeRun>,
}

/// Wall time of a run's phases, in seconds.
#[derive(Debug, Default, Serialize)]
pub struct Phases {
    /// Discovery, plan and the space preflight.
    pub read_and_plan: f64,
    /// Merging and verifying the windows (or taking prepared ones), and making them durable.
    pub merge: f64,
    /// Staging the new metadata and the commit itself.
    pub commit: f64,
}

/// What a run did on one node.
#[derive(Debug, Serialize)]
pub struct NodeRun {
    pub node: String,
    /// The commit, when anything on the node changed.
    pub committed: Option<Committed>,
    pub tables: Vec<TableRun>,
}

impl NodeRun {
    /// A node the run did not change: each table as the plan found it.
    pub fn untouched(node: &str, tables: &[TablePlan]) -> NodeRun {
        NodeRun {
            node: node.to_string(),
            committed: None,
            tables: tables
                .iter()
                .map(|t| TableRun::new(t, TableOutcome::before(t)))
                .collect(),
        }
    }
}

/// What a run did to one table.
#[derive(Debug, Serialize)]
pub struct TableRun {
    /// `db.table` (names from paths up to 3.5) or `db_id/table_id`.
    pub table: String,
    pub db_id: DbId,
    pub table_id: TableId,
    /// The widths the table's data ends up in (as planned), narrowest first.
    pub tiers: Vec<TierUse>,
    /// What the recent snapshots said of the table's writers.
    pub writers: Reach,
    #[serde(flatten)]
    pub outcome: TableOutcome,
}

impl TableRun {
    /// The outcome of a planned table.
    pub fn new(plan: &TablePlan, outcome: TableOutcome) -> TableRun {
        TableRun {
            table: plan.label.clone(),
            db_id: plan.table.db,
            table_id: plan.table.table,
            tiers: plan.tiers.clone(),
            writers: plan.writers,
            outcome,
        }
    }
}
