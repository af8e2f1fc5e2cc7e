//! `kompactor status`: what a data dir holds, per node and table; read-only.

use crate::commands::args::InspectArgs;
use crate::commands::EXIT_OK;
use crate::durable::journal::{dir_size, run_ids, RunDirs, RunState};
use crate::error::Result;
use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::layout::{check_hosts, STATE_DIR};
use crate::json;
use crate::pipeline::discover::{
    discover_node_with, leave_to_exit, newest_time, summarize, Finding, Node,
};
use crate::pipeline::plan::reach::HORIZON;
use crate::pipeline::plan::{
    plan_node, PlanOptions, Reach, SeenWriters, TablePlan, TierUse, QUERY_FILE_LIMIT,
};
use crate::pipeline::space::{estimate, SpaceEstimate};
use crate::units::{human_duration, parse_size, DEFAULT_MEMORY_LIMIT};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

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
    /// Files on disk beyond the server's load window: invisible to queries.
    hidden_files: usize,
    hidden_rows: u64,
    hidden_bytes: u64,
    /// Time range of the hidden files' data, RFC 3339 (empty strings when there are none).
    hidden_min_time: String,
    hidden_max_time: String,
    /// What the recent snapshots say of the table's writers: how far back they wrote.
    writers: Reach,
    /// Data younger than this (back from the newest, nanoseconds) stays in the server's own
    /// 10-minute windows: the writers' reach with a margin, or `--min-age`.
    ten_minute_zone: Nanos,
    /// How the table's files would end up by window width after a default compaction.
    tiers_after_default_run: Vec<TierUse>,
}

/// One node in `status`.
#[derive(Serialize)]
struct NodeStatus {
    node: String,
    generation: String,
    snapshots: usize,
    checkpoints: usize,
    /// Snapshots the server does not load (beyond its load window; 0 when it starts from
    /// checkpoints).
    snapshots_outside_load_window: usize,
    /// Checkpoints the server merges at startup (the newest of each month reaching its load
    /// window).
    checkpoints_loaded: usize,
    /// How many of the newest snapshots the server loads when it has no checkpoints.
    load_window: usize,
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
    /// The disk space a compaction with the default options would need, and what is free.
    space: SpaceEstimate,
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

fn node_status(n: &Node, plans: &[TablePlan]) -> NodeStatus {
    let lost: BTreeSet<FileId> = n
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Missing { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let keys: BTreeSet<TableKey> = n
        .live
        .keys()
        .chain(n.purged.keys())
        .chain(n.hidden.keys())
        .copied()
        .collect();
    let tables = keys
        .into_iter()
        .map(|k| {
            let files = n.live.get(&k).map_or(&[][..], Vec::as_slice);
            let min = files.iter().map(|f| f.min_time).min().unwrap_or(Nanos::MAX);
            let max = files.iter().map(|f| f.max_time).max().unwrap_or(Nanos::MIN);
            let on_disk_min = files
                .iter()
                .filter(|f| !lost.contains(&f.id))
                .map(|f| f.min_time)
                .min();
            let purged = n.purged.get(&k);
            let hidden = n.hidden.get(&k).map_or(&[][..], Vec::as_slice);
            let hmin = hidden
                .iter()
                .map(|f| f.min_time)
                .min()
                .unwrap_or(Nanos::MAX);
            let hmax = newest_time(hidden);
            let (pmin, pmax) = purged.map_or((Nanos::MAX, Nanos::MIN), |p| p.time_range());
            let time = |t: Nanos, none: bool| if none { String::new() } else { t.to_rfc3339() };
            let plan = plans.iter().find(|p| p.table == k);
            TableStatus {
                table: n.table_label(k),
                db_id: k.db.0,
                table_id: k.table.0,
                files: files.len(),
                rows_in_files: files.iter().map(|f| f.row_count).sum(),
                bytes: files.iter().map(|f| f.size_bytes).sum(),
                min_time: time(min, files.is_empty()),
                max_time: time(max, files.is_empty()),
                full_table_query_files: files.len(),
                over_query_file_limit: files.len() > QUERY_FILE_LIMIT,
                purged_entries: purged.map_or(0, |p| p.entries.len()),
                purged_min_time: time(pmin, purged.is_none()),
                purged_max_time: time(pmax, purged.is_none()),
                lost_files: files.iter().filter(|f| lost.contains(&f.id)).count(),
                oldest_time_on_disk: on_disk_min.map_or(String::new(), Nanos::to_rfc3339),
                hidden_files: hidden.len(),
                hidden_rows: hidden.iter().map(|f| f.row_count).sum(),
                hidden_bytes: hidden.iter().map(|f| f.size_bytes).sum(),
                hidden_min_time: time(hmin, hidden.is_empty()),
                hidden_max_time: time(hmax, hidden.is_empty()),
                writers: plan.map(|p| p.writers).unwrap_or_default(),
                ten_minute_zone: plan.map_or(Nanos(0), |p| p.ten_minute_zone),
                tiers_after_default_run: plan.map(|p| p.tiers.clone()).unwrap_or_default(),
            }
        })
        .collect();
    NodeStatus {
        node: n.id.clone(),
        generation: n.generation.label().to_string(),
        snapshots: n.snapshots.len(),
        checkpoints: n.checkpoints.len(),
        snapshots_outside_load_window: if n.checkpoints_loaded == 0 {
            n.snapshots.len() - n.loaded_snapshots
        } else {
            0
        },
        checkpoints_loaded: n.checkpoints_loaded,
        load_window: n.load_window,
        tables,
        findings: n.findings.clone(),
    }
}

/// `kompactor status`.
pub fn run(a: &InspectArgs, verbose: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut found = Vec::new();
    for h in &a.hosts.hosts {
        found.push(discover_node_with(data_dir, h, a.server.load_window())?);
    }
    // What a compaction with the default options would need on disk.
    let seen = SeenWriters::load(data_dir);
    let plans: Vec<_> = found
        .iter()
        .map(|n| plan_node(n, &PlanOptions::default(), &seen, "status"))
        .collect();
    let budget = parse_size(DEFAULT_MEMORY_LIMIT).expect("the default parses");
    let space = estimate(data_dir, &found, &plans, budget)?;
    let nodes: Vec<NodeStatus> = found
        .iter()
        .zip(&plans)
        .map(|(n, p)| node_status(n, p))
        .collect();
    drop(plans);
    leave_to_exit(found);
    let unfinished = unfinished_runs(data_dir)?;
    let trash = data_dir.join(STATE_DIR).join("trash");
    let trash_bytes = if trash.is_dir() { dir_size(&trash) } else { 0 };
    let doc = StatusDoc {
        format_version: json::FORMAT_VERSION,
        data_dir: data_dir.display().to_string(),
        query_file_limit: QUERY_FILE_LIMIT,
        nodes,
        unfinished_runs: unfinished,
        trash_bytes,
        space,
    };
    if a.json {
        json::print(&doc);
    } else {
        print!("{}", status_text(&doc, &trash, verbose));
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// The status as text: a line per table, and what is worth knowing beneath it.
fn status_text(doc: &StatusDoc, trash: &std::path::Path, verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kompactor status of {}", doc.data_dir);
    for n in &doc.nodes {
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
            table_lines(&mut s, t);
        }
        if n.snapshots_outside_load_window > 0 {
            let _ = writeln!(
                s,
                "  {} snapshot(s) are beyond the server's load window of {}",
                n.snapshots_outside_load_window, n.load_window
            );
        }
        // Purged entries are on each table's line already.
        let others: Vec<Finding> = n
            .findings
            .iter()
            .filter(|f| !matches!(f, Finding::Purged { .. }))
            .cloned()
            .collect();
        for l in summarize(&others, verbose) {
            let _ = writeln!(s, "  - {l}");
        }
    }
    for u in &doc.unfinished_runs {
        let _ = writeln!(s, "\nunfinished run {} ({:?}): the next kompactor run on this data dir finishes or rolls it back", u.run_id, u.state);
    }
    let _ = writeln!(
        s,
        "\ntrash: {} bytes in {}",
        doc.trash_bytes,
        trash.display()
    );
    let _ = writeln!(
        s,
        "disk: a compaction with the default options {}",
        doc.space.summary()
    );
    s
}

/// A table's line of the status, and the lines beneath it that say what is worth knowing.
fn table_lines(s: &mut String, t: &TableStatus) {
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
    if t.hidden_files > 0 {
        let _ = writeln!(
            s,
            "  {:<20} hidden by the load window: {} file(s), {} rows, {} bytes, {} .. {}",
            "", t.hidden_files, t.hidden_rows, t.hidden_bytes, t.hidden_min_time, t.hidden_max_time
        );
    }
    if t.writers.late_files > 0 {
        let _ = writeln!(
            s,
            "  {:<20} writers reached {} back ({} late file(s) in the last {} overlap earlier data{}): the newest {} stay in 10m windows",
            "",
            human_duration(t.writers.reach),
            t.writers.late_files,
            human_duration(HORIZON),
            if t.writers.across_chunks > 0 {
                format!(", {} beside a merge wider than 10m: returned twice until the next compaction", t.writers.across_chunks)
            } else {
                String::new()
            },
            human_duration(t.ten_minute_zone)
        );
    }
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
