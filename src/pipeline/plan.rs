//! The planner: which files of which table are merged into what.

use crate::format::layout::{window_dirs, ParquetPath};
use crate::pipeline::discover::{newest_time, LiveFile, Node};
use crate::format::ids::{FileId, Nanos, TableKey};
use serde::Serialize;
use std::collections::BTreeMap;

/// The choices that shape a plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Length of a compaction window; files are merged only within one window.
    pub window: Nanos,
    /// Windows holding data newer than (newest data time of the table − min_age) are left alone.
    pub min_age: Nanos,
    /// At most this many rows per output file; a larger window is split by time.
    pub max_rows_per_file: u64,
}

/// The server's default `--query-file-limit`.
pub const QUERY_FILE_LIMIT: usize = 432;

/// One merge: the live files of one table in one window, and the output that replaces them.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub node: String,
    pub table: TableKey,
    pub window_start: Nanos,
    pub window_end: Nanos,
    pub inputs: Vec<LiveFile>,
    pub rows: u64,
    pub bytes: u64,
    /// The output path (relative to the data dir); a split output adds `-<n>` before `.parquet`.
    pub output_path: String,
    /// Estimated outputs: rows before deduplication / row cap, at least one.
    pub outputs_estimate: u64,
}

/// Why a window of a table is not merged.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub window_start: Nanos,
    pub files: usize,
    pub reason: String,
    /// True when a damaged or missing input (not the window's age) keeps it from merging.
    pub blocked: bool,
}

/// The plan for one table of one node.
#[derive(Clone, Debug, Serialize)]
pub struct TablePlan {
    pub node: String,
    pub table: TableKey,
    pub label: String,
    pub files_now: usize,
    pub files_after: usize,
    pub rows: u64,
    pub bytes: u64,
    pub windows: usize,
    pub newest_time: Nanos,
    /// Windows holding data newer than this are too recent to merge.
    pub min_age_cutoff: Nanos,
    pub exceeds_limit_now: bool,
    pub exceeds_limit_after: bool,
    pub groups: Vec<Group>,
    pub skipped: Vec<Skipped>,
}

/// The files that are unsafe to merge (missing, resized, id reused), with why.
pub fn blocked_files(node: &Node) -> BTreeMap<FileId, String> {
    node.findings
        .iter()
        .filter_map(|f| f.blocks_file().map(|id| (id, f.describe())))
        .collect()
}

/// A table's files by the `window`-long interval (aligned to the epoch) their `chunk_time`
/// falls in.
pub fn by_window<'a>(
    files: impl IntoIterator<Item = &'a LiveFile>,
    window: Nanos,
) -> BTreeMap<Nanos, Vec<LiveFile>> {
    let mut windows: BTreeMap<Nanos, Vec<LiveFile>> = BTreeMap::new();
    for f in files {
        windows
            .entry(f.entry.chunk_time.floor_to(window))
            .or_default()
            .push(f.clone());
    }
    windows
}

/// Plans one node's tables.
pub fn plan_node(node: &Node, opts: &PlanOptions, run_id: &str) -> Vec<TablePlan> {
    let blocked = blocked_files(node);
    node.live
        .iter()
        .map(|(key, files)| plan_table(node, *key, files, opts, run_id, &blocked))
        .collect()
}

fn plan_table(
    node: &Node,
    table: TableKey,
    files: &[LiveFile],
    opts: &PlanOptions,
    run_id: &str,
    blocked: &BTreeMap<FileId, String>,
) -> TablePlan {
    let newest = newest_time(files);
    let cutoff = Nanos(newest.0.saturating_sub(opts.min_age.0));
    let windows = by_window(files, opts.window);
    let mut groups = Vec::new();
    let mut skipped = Vec::new();
    let mut files_after = files.len();
    for (start, mut inputs) in windows {
        let end = Nanos(start.0.saturating_add(opts.window.0));
        if inputs.len() < 2 {
            continue;
        }
        let window_newest = inputs
            .iter()
            .map(|f| f.entry.max_time)
            .max()
            .unwrap_or(Nanos::MIN);
        if window_newest > cutoff {
            skipped.push(Skipped {
                window_start: start,
                files: inputs.len(),
                reason: "newer than --min-age".to_string(),
                blocked: false,
            });
            continue;
        }
        if let Some(why) = inputs.iter().find_map(|f| blocked.get(&f.entry.id)) {
            skipped.push(Skipped {
                window_start: start,
                files: inputs.len(),
                reason: why.clone(),
                blocked: true,
            });
            continue;
        }
        inputs.sort_by_key(|f| f.entry.id);
        let rows: u64 = inputs.iter().map(|f| f.entry.row_count).sum();
        let bytes: u64 = inputs.iter().map(|f| f.entry.size_bytes).sum();
        let outputs_estimate = rows.div_ceil(opts.max_rows_per_file.max(1)).max(1);
        files_after = files_after + outputs_estimate as usize - inputs.len();
        groups.push(Group {
            node: node.id.clone(),
            table,
            window_start: start,
            window_end: end,
            output_path: output_path(&inputs, start, opts.window, run_id),
            inputs,
            rows,
            bytes,
            outputs_estimate,
        });
    }
    TablePlan {
        node: node.id.clone(),
        table,
        label: node.table_label(table),
        files_now: files.len(),
        files_after,
        rows: files.iter().map(|f| f.entry.row_count).sum(),
        bytes: files.iter().map(|f| f.entry.size_bytes).sum(),
        windows: windows.len(),
        newest_time: newest,
        min_age_cutoff: cutoff,
        exceeds_limit_now: files.len() > QUERY_FILE_LIMIT,
        exceeds_limit_after: files_after > QUERY_FILE_LIMIT,
        groups,
        skipped,
    }
}

/// `<node>/dbs/<db dir>/<table dir>/YYYY-MM-DD/HH-MM/kompactor-<window>-<run id>.parquet`.
///
/// The database and table directories are taken from an input, so the output sits beside
/// the files it replaces, in the naming the node already uses. The server never writes a
/// name that is not ten digits, so this cannot collide with a file it writes later.
fn output_path(inputs: &[LiveFile], start: Nanos, window: Nanos, run_id: &str) -> String {
    let path = &inputs[0].entry.path;
    let table_dir = ParquetPath::parse(path).map_or(path.as_str(), |p| p.table_dir);
    format!(
        "{table_dir}/{}/kompactor-{}-{run_id}.parquet",
        window_dirs(start),
        crate::units::format_duration(window)
    )
}
