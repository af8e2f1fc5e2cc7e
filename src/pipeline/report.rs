//! What the operator sees: the plan, the findings, and the summary of a run.

use crate::format::ids::{DbId, TableId};
use crate::pipeline::commit::Committed;
use crate::pipeline::discover::{summarize, Finding, Generation, Node};
use crate::pipeline::merge::Merged;
use crate::pipeline::plan::{Group, Reach, Skipped, TablePlan, TierUse, QUERY_FILE_LIMIT};
use crate::pipeline::space::SpaceEstimate;
use crate::units::{human_bytes, human_duration};
use serde::Serialize;
use std::fmt::Write;

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

fn limit_label(files: usize) -> &'static str {
    if files > QUERY_FILE_LIMIT {
        "over"
    } else {
        "ok"
    }
}

/// The plan as text.
pub fn plan_text(nodes: &[NodeReport], header: &str, verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    for n in nodes {
        let _ = writeln!(
            s,
            "\nnode {}: generation {}, {} snapshot(s) ({}), {} checkpoint(s), table index {}, {} WAL file(s)",
            n.node,
            n.generation.label(),
            n.snapshots,
            if n.checkpoints_loaded > 0 {
                format!(
                    "{} newer than the {} checkpoint(s) the server reads",
                    n.loaded_snapshots, n.checkpoints_loaded
                )
            } else {
                format!("{} inside the server's load window", n.loaded_snapshots)
            },
            n.checkpoints,
            if n.table_index { "present" } else { "absent" },
            n.wal_files
        );
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>10} {:>11} {:>8} {:>6} {:>8}  {QUERY_FILE_LIMIT}-file limit now→after",
            "table", "files now→after", "rows", "bytes", "windows", "merge", "skipped",
        );
        for t in &n.tables {
            let _ = writeln!(
                s,
                "  {:<24} {:>14} {:>10} {:>11} {:>8} {:>6} {:>8}  {}→{}",
                t.label,
                format!("{}→{}", t.files_now, t.files_after),
                t.rows,
                human_bytes(t.bytes),
                t.windows,
                t.groups.len(),
                t.skipped.len(),
                limit_label(t.files_now),
                limit_label(t.files_after)
            );
        }
        let lines = summarize(&n.findings, verbose);
        if !lines.is_empty() {
            let _ = writeln!(s, "  findings:");
            for l in lines {
                let _ = writeln!(s, "  - {l}");
            }
        }
        for t in &n.tables {
            if let Some(line) = tiers_line(t) {
                let _ = writeln!(s, "  {line}");
            }
        }
        for t in n.tables.iter().filter(|t| t.files_revived > 0) {
            let _ = writeln!(
                s,
                "  {}: {} hidden file(s), {} rows, {} .. {}, become visible again (--include-hidden)",
                t.label,
                t.files_revived,
                t.rows_revived,
                t.hidden_min_time.to_rfc3339(),
                t.hidden_max_time.to_rfc3339()
            );
        }
        for t in &n.tables {
            if let Some(why) = &t.limit_after_reason {
                let _ = writeln!(
                    s,
                    "  {} stays over the {QUERY_FILE_LIMIT}-file limit: {why}",
                    t.label
                );
            }
        }
        if verbose {
            for t in &n.tables {
                for g in &t.groups {
                    let _ = writeln!(
                        s,
                        "  {} window {} → {}: {} files, {} rows, {} → {}",
                        t.label,
                        g.window_start.to_rfc3339(),
                        g.window_end.to_rfc3339(),
                        g.inputs.len(),
                        g.rows,
                        human_bytes(g.bytes),
                        g.output_path
                    );
                    for f in &g.inputs {
                        let _ = writeln!(
                            s,
                            "      file {:>8} {:>8} rows {:>10}  {}",
                            f.entry.id,
                            f.entry.row_count,
                            human_bytes(f.entry.size_bytes),
                            f.entry.path
                        );
                    }
                }
                for k in &t.skipped {
                    let _ = writeln!(
                        s,
                        "  {} window {}: {} files left alone: {}",
                        t.label,
                        k.window_start.to_rfc3339(),
                        k.files,
                        k.reason
                    );
                }
            }
        }
    }
    s
}

/// One line of how a table's files end up by width, and how far back its writers write.
fn tiers_line(t: &TablePlan) -> Option<String> {
    if t.tiers.is_empty() {
        return None;
    }
    let widths: Vec<String> = t
        .tiers
        .iter()
        .map(|u| format!("{} {}", u.files_after, u.width))
        .collect();
    let mut line = format!(
        "{}: files after by window width: {}",
        t.label,
        widths.join(", ")
    );
    let w = &t.writers;
    if w.late_files > 0 {
        let _ = write!(
            line,
            "; writers reached {} back in the last {} ({} late file(s){}), so the newest {} stay in 10m windows",
            human_duration(w.reach),
            human_duration(crate::pipeline::plan::reach::HORIZON),
            w.late_files,
            if w.across_chunks > 0 {
                format!(", {} beside a wider merge", w.across_chunks)
            } else {
                String::new()
            },
            human_duration(t.ten_minute_zone)
        );
    }
    Some(line)
}

/// The summary of a run as text.
pub fn run_text(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kompactor run {} on {} ({:.1} s: read and plan {:.1} s, merge {:.1} s, commit {:.1} s)",
        r.run_id, r.data_dir, r.seconds, r.phases.read_and_plan, r.phases.merge, r.phases.commit
    );
    for n in &r.nodes {
        match &n.committed {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "\nnode {}: committed snapshot {}: {} file(s) replaced by {}; {} snapshot(s) and {} checkpoint(s) rewritten{}",
                    n.node,
                    c.snapshot,
                    c.files_replaced,
                    c.files_added,
                    c.snapshots_rewritten,
                    c.checkpoints_written,
                    if c.table_index_set_aside { "; table index set aside for the server to rebuild" } else { "" }
                );
                if c.files_replaced > 0 {
                    let _ = writeln!(
                        s,
                        "  replaced files ({}) are in {}/.kompactor/trash/{}/",
                        human_bytes(c.trash_bytes),
                        r.data_dir,
                        r.run_id
                    );
                }
                if c.purged_entries_dropped > 0 {
                    let _ = writeln!(
                        s,
                        "  dropped {} entr{} of files the server had purged; the rewritten metadata went from {} to {}",
                        c.purged_entries_dropped,
                        if c.purged_entries_dropped == 1 { "y" } else { "ies" },
                        human_bytes(c.metadata_bytes_before),
                        human_bytes(c.metadata_bytes_after)
                    );
                }
            }
            None => {
                let _ = writeln!(s, "\nnode {}: nothing to do", n.node);
            }
        }
        let prepared: usize = n.tables.iter().map(|t| t.outcome.windows_prepared).sum();
        if prepared > 0 {
            let merged: usize = n.tables.iter().map(|t| t.outcome.groups_merged).sum();
            let _ = writeln!(
                s,
                "  {prepared} window(s) came prepared, {} merged during this run",
                merged - prepared
            );
        }
        if n.tables
            .iter()
            .any(|t| t.outcome.groups_merged > 0 || !t.outcome.groups_failed.is_empty())
        {
            let _ = writeln!(
                s,
                "  {:<24} {:>14} {:>20} {:>10} {:>22}",
                "table", "files", "rows in files", "dups", "bytes"
            );
        }
        for TableRun {
            table: label,
            outcome: o,
            ..
        } in &n.tables
        {
            if o.groups_merged == 0
                && o.groups_failed.is_empty()
                && !o.windows_skipped.iter().any(|k| k.blocked)
            {
                continue;
            }
            let _ = writeln!(
                s,
                "  {:<24} {:>14} {:>20} {:>10} {:>22}",
                label,
                format!("{}→{}", o.files_before, o.files_after),
                format!("{}→{}", o.rows_in_files_before, o.rows_in_files_after),
                o.duplicates_removed,
                format!(
                    "{}→{}",
                    human_bytes(o.bytes_before),
                    human_bytes(o.bytes_after)
                )
            );
            if o.cross_chunk_points > 0 {
                let _ = writeln!(
                    s,
                    "    {} point(s) stored under two chunk_times (overwrites after an earlier wide merge) in {} window(s): now one row each, the later write first",
                    o.cross_chunk_points,
                    o.cross_chunk_windows.len()
                );
            }
            for f in &o.groups_failed {
                let _ = writeln!(
                    s,
                    "    skipped window {} ({} files): {}",
                    f.window_start, f.inputs, f.reason
                );
            }
        }
    }
    s
}
