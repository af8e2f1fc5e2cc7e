//! `kompactor status`: what a data dir holds, per node and table; read-only.

use crate::commands::args::{DataDir, Hosts};
use crate::commands::EXIT_OK;
use crate::durable::journal::{dir_size, run_ids, RunDirs, RunState};
use crate::error::Result;
use crate::format::ids::{FileId, Nanos, SnapshotSeq, TableKey};
use crate::format::layout::{check_hosts, STATE_DIR};
use crate::json;
use crate::pipeline::discover::{discover_node, Finding, Node};
use crate::pipeline::plan::QUERY_FILE_LIMIT;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

/// `kompactor status` arguments.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One table in `status`.
#[derive(Serialize)]
struct TableStatus {
    table: String,
    db_id: u64,
    table_id: u64,
    files: usize,
    rows_in_files: u64,
    bytes: u64,
    min_time: String,
    max_time: String,
    /// Files a query over the whole table scans, against the server's default limit.
    full_table_query_files: usize,
    over_query_file_limit: bool,
    /// Entries of files the server removed (retention, hard delete) that the metadata still
    /// lists; not counted in `files`. The next compaction drops them.
    purged_entries: usize,
    /// Time range of the purged entries' data (empty strings when there are none).
    purged_min_time: String,
    purged_max_time: String,
    /// Live files missing on disk that nothing marks as removed: damage.
    lost_files: usize,
    /// The oldest data time among the live files that are on disk.
    oldest_time_on_disk: String,
}

/// One node in `status`.
#[derive(Serialize)]
struct NodeStatus {
    node: String,
    generation: String,
    snapshots: usize,
    checkpoints: usize,
    /// Snapshots whose files the server does not load (outside its default load window).
    snapshots_outside_load_window: Vec<SnapshotSeq>,
    tables: Vec<TableStatus>,
    findings: Vec<Finding>,
}

/// The `status --json` document.
#[derive(Serialize)]
struct StatusDoc {
    format_version: u32,
    data_dir: String,
    /// The server's default `--query-file-limit`, against which tables are judged.
    query_file_limit: usize,
    nodes: Vec<NodeStatus>,
    unfinished_runs: Vec<UnfinishedRun>,
    /// Bytes in `.kompactor/trash/` (replaced files kept for `undo`).
    trash_bytes: u64,
}

/// A run that has not finished: the next kompactor run finishes or rolls it back.
#[derive(Debug, Serialize)]
pub struct UnfinishedRun {
    pub run_id: String,
    pub state: RunState,
}

/// Runs that have not finished, with their state.
pub fn unfinished_runs(data_dir: &Path) -> Result<Vec<UnfinishedRun>> {
    let mut out = Vec::new();
    for id in run_ids(data_dir)? {
        let state = RunDirs::new(data_dir, &id).read_state()?.state;
        if !state.is_finished() {
            out.push(UnfinishedRun { run_id: id, state });
        }
    }
    Ok(out)
}

fn node_status(n: &Node) -> NodeStatus {
    let lost: BTreeSet<FileId> = n
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Missing { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let keys: BTreeSet<TableKey> = n.live.keys().chain(n.purged.keys()).copied().collect();
    let tables = keys
        .into_iter()
        .map(|k| {
            let files = n.live.get(&k).map_or(&[][..], Vec::as_slice);
            let min = files
                .iter()
                .map(|f| f.entry.min_time)
                .min()
                .unwrap_or(Nanos::MAX);
            let max = files
                .iter()
                .map(|f| f.entry.max_time)
                .max()
                .unwrap_or(Nanos::MIN);
            let on_disk_min = files
                .iter()
                .filter(|f| !lost.contains(&f.entry.id))
                .map(|f| f.entry.min_time)
                .min();
            let purged = n.purged.get(&k);
            let (pmin, pmax) = purged.map_or((Nanos::MAX, Nanos::MIN), |p| p.time_range());
            let time = |t: Nanos, none: bool| if none { String::new() } else { t.to_rfc3339() };
            TableStatus {
                table: n.table_label(k),
                db_id: k.db.0,
                table_id: k.table.0,
                files: files.len(),
                rows_in_files: files.iter().map(|f| f.entry.row_count).sum(),
                bytes: files.iter().map(|f| f.entry.size_bytes).sum(),
                min_time: time(min, files.is_empty()),
                max_time: time(max, files.is_empty()),
                full_table_query_files: files.len(),
                over_query_file_limit: files.len() > QUERY_FILE_LIMIT,
                purged_entries: purged.map_or(0, |p| p.entries.len()),
                purged_min_time: time(pmin, purged.is_none()),
                purged_max_time: time(pmax, purged.is_none()),
                lost_files: files.iter().filter(|f| lost.contains(&f.entry.id)).count(),
                oldest_time_on_disk: on_disk_min.map_or(String::new(), Nanos::to_rfc3339),
            }
        })
        .collect();
    NodeStatus {
        node: n.id.clone(),
        generation: n.generation.label().to_string(),
        snapshots: n.snapshots.len(),
        checkpoints: n.checkpoints.len(),
        snapshots_outside_load_window: n
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::OutsideLoadWindow { snapshot, .. } => Some(*snapshot),
                _ => None,
            })
            .collect(),
        tables,
        findings: n.findings.clone(),
    }
}

/// `kompactor status`.
pub fn run(a: &StatusArgs) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut nodes = Vec::new();
    for h in &a.hosts.hosts {
        nodes.push(node_status(&discover_node(data_dir, h)?));
    }
    let unfinished = unfinished_runs(data_dir)?;
    let trash = data_dir.join(STATE_DIR).join("trash");
    let trash_bytes = if trash.is_dir() { dir_size(&trash) } else { 0 };
    if a.json {
        json::print(&StatusDoc {
            format_version: json::FORMAT_VERSION,
            data_dir: data_dir.display().to_string(),
            query_file_limit: QUERY_FILE_LIMIT,
            nodes,
            unfinished_runs: unfinished,
            trash_bytes,
        });
        return Ok(ExitCode::from(EXIT_OK));
    }
    let mut s = String::new();
    let _ = writeln!(s, "kompactor status of {}", data_dir.display());
    for n in &nodes {
        let _ = writeln!(
            s,
            "\nnode {}: generation {}, {} snapshot(s), {} checkpoint(s)",
            n.node, n.generation, n.snapshots, n.checkpoints
        );
        let _ = writeln!(
            s,
            "  {:<20} {:>7} {:>12} {:>12}  {:<30}  full-table query",
            "table", "files", "rows", "bytes", "time range"
        );
        for t in &n.tables {
            let _ = writeln!(
                s,
                "  {:<20} {:>7} {:>12} {:>12}  {} .. {}  {} files: {}",
                t.table,
                t.files,
                t.rows_in_files,
                t.bytes,
                t.min_time,
                t.max_time,
                t.full_table_query_files,
                if t.over_query_file_limit {
                    format!("FAILS (limit {QUERY_FILE_LIMIT})")
                } else {
                    "ok".into()
                }
            );
            if t.purged_entries > 0 || t.lost_files > 0 {
                let _ = writeln!(
                    s,
                    "  {:<20} purged entries still listed: {} ({} .. {}); lost files: {}; oldest data on disk: {}",
                    "",
                    t.purged_entries,
                    t.purged_min_time,
                    t.purged_max_time,
                    t.lost_files,
                    if t.oldest_time_on_disk.is_empty() { "none" } else { &t.oldest_time_on_disk }
                );
            }
        }
        if !n.snapshots_outside_load_window.is_empty() {
            let _ = writeln!(
                s,
                "  {} snapshot(s) are outside the server's default load window: their files are invisible to queries",
                n.snapshots_outside_load_window.len()
            );
        }
        for f in &n.findings {
            if !matches!(
                f,
                Finding::Unreferenced { .. }
                    | Finding::OutsideLoadWindow { .. }
                    | Finding::Purged { .. }
            ) {
                let _ = writeln!(s, "  - {}", f.describe());
            }
        }
    }
    for u in &unfinished {
        let _ = writeln!(s, "\nunfinished run {} ({:?}): the next kompactor run on this data dir finishes or rolls it back", u.run_id, u.state);
    }
    let _ = writeln!(s, "\ntrash: {trash_bytes} bytes in {}", trash.display());
    print!("{s}");
    Ok(ExitCode::from(EXIT_OK))
}

