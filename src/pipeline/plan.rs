//! The planner: which files of which table are merged into what.

use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::layout::{window_dirs, ParquetPath};
use crate::format::model::EntryRc;
use crate::format::model::FileEntry;
use crate::pipeline::discover::{newest_time, LiveFile, Node};
use crate::units::format_duration;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The choices that shape a plan.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Length of a compaction window; files are merged only within one window.
    pub window: Nanos,
    /// Windows holding data newer than (newest data time of the table − min_age) are left alone.
    pub min_age: Nanos,
    /// At most this many rows per output file; a larger window is split by time.
    pub max_rows_per_file: u64,
    /// Also merge the files the server's load window hides, so their data is seen again.
    pub include_hidden: bool,
}

impl Default for PlanOptions {
    /// The plan `kompactor` makes when given no option (`--window 1d --min-age 1h`).
    fn default() -> PlanOptions {
        PlanOptions {
            window: Nanos(86_400_000_000_000),
            min_age: Nanos(3_600_000_000_000),
            max_rows_per_file: 10_000_000,
            include_hidden: false,
        }
    }
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
    /// Inputs hidden by the server's load window, whose rows the merge makes visible again.
    pub revived: usize,
    pub rows_revived: u64,
    pub bytes_revived: u64,
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
    /// Why the table stays over the limit, when it does.
    pub limit_after_reason: Option<String>,
    /// Files (on disk, not removed) that the server's load window hides from queries.
    pub hidden_files: usize,
    pub hidden_rows: u64,
    pub hidden_bytes: u64,
    pub hidden_min_time: Nanos,
    pub hidden_max_time: Nanos,
    /// Hidden files the plan merges (`--include-hidden`): their rows reappear.
    pub files_revived: usize,
    pub rows_revived: u64,
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
pub fn by_window<'a, F: AsRef<FileEntry>>(
    files: impl IntoIterator<Item = &'a F>,
    window: Nanos,
) -> BTreeMap<Nanos, Vec<&'a F>> {
    let mut windows: BTreeMap<Nanos, Vec<&F>> = BTreeMap::new();
    for f in files {
        windows
            .entry(f.as_ref().chunk_time.floor_to(window))
            .or_default()
            .push(f);
    }
    windows
}

/// Plans one node's tables.
pub fn plan_node(node: &Node, opts: &PlanOptions, run_id: &str) -> Vec<TablePlan> {
    let blocked = blocked_files(node);
    let keys: BTreeSet<TableKey> = node
        .live
        .keys()
        .chain(node.hidden.keys())
        .copied()
        .collect();
    let keys: Vec<TableKey> = keys.into_iter().collect();
    let none = Vec::new();
    // Tables side by side: a deep history's plan looks at millions of files.
    crate::pipeline::workers::parallel_map(&keys, |&key| {
        let files = node.live.get(&key).unwrap_or(&none);
        let hidden = node.hidden.get(&key).unwrap_or(&none);
        let ctx = TableCtx {
            node,
            table: key,
            opts,
            run_id,
            blocked: &blocked,
            hidden: hidden.iter().map(|f| f.id).collect(),
            // Hidden data can be newer than what the server shows (snapshot order is
            // not data order): when it is merged, it counts as the table's data.
            cutoff: Nanos(
                newest_time(files)
                    .max(if opts.include_hidden {
                        newest_time(hidden)
                    } else {
                        Nanos::MIN
                    })
                    .0
                    .saturating_sub(opts.min_age.0),
            ),
        };
        plan_table(&ctx, files, hidden)
    })
}

/// The finer widths a window too recent to merge whole is tried at, widest first; the last
/// is the server's own gen1 duration, whose windows keep their `chunk_time`.
const TIERS: [Nanos; 2] = [Nanos(3_600_000_000_000), Nanos(600_000_000_000)];

/// What planning one table needs to know besides its files.
struct TableCtx<'a> {
    node: &'a Node,
    table: TableKey,
    opts: &'a PlanOptions,
    run_id: &'a str,
    blocked: &'a BTreeMap<FileId, String>,
    /// Files hidden by the load window (merged, and so revived, with `include_hidden`).
    hidden: BTreeSet<FileId>,
    /// Windows holding data newer than this are too recent to merge.
    cutoff: Nanos,
}

/// The groups and skipped windows of a table, as planning finds them.
#[derive(Default)]
struct Found {
    groups: Vec<Group>,
    skipped: Vec<Skipped>,
}

fn plan_table(ctx: &TableCtx, files: &[EntryRc], hidden: &[EntryRc]) -> TablePlan {
    let opts = ctx.opts;
    let mut candidates: Vec<&EntryRc> = files.iter().collect();
    if opts.include_hidden {
        candidates.extend(hidden);
    }
    let finer: Vec<Nanos> = TIERS.iter().copied().filter(|w| *w < opts.window).collect();
    let mut found = Found::default();
    plan_windows(ctx, &candidates, opts.window, &finer, &mut found);
    let live_inputs: usize = found
        .groups
        .iter()
        .map(|g| g.inputs.len() - g.revived)
        .sum();
    let outputs: u64 = found.groups.iter().map(|g| g.outputs_estimate).sum();
    let files_after = files.len() + outputs as usize - live_inputs;
    let (hmin, hmax) = time_range(hidden);
    TablePlan {
        node: ctx.node.id.clone(),
        table: ctx.table,
        label: ctx.node.table_label(ctx.table),
        files_now: files.len(),
        files_after,
        rows: files.iter().map(|f| f.row_count).sum(),
        bytes: files.iter().map(|f| f.size_bytes).sum(),
        windows: files
            .iter()
            .map(|f| f.chunk_time.floor_to(opts.window))
            .collect::<BTreeSet<_>>()
            .len(),
        newest_time: newest_time(files),
        min_age_cutoff: ctx.cutoff,
        exceeds_limit_now: files.len() > QUERY_FILE_LIMIT,
        exceeds_limit_after: files_after > QUERY_FILE_LIMIT,
        limit_after_reason: (files_after > QUERY_FILE_LIMIT)
            .then(|| over_limit_reason(&found, files_after, opts)),
        hidden_files: hidden.len(),
        hidden_rows: hidden.iter().map(|f| f.row_count).sum(),
        hidden_bytes: hidden.iter().map(|f| f.size_bytes).sum(),
        hidden_min_time: hmin,
        hidden_max_time: hmax,
        files_revived: found.groups.iter().map(|g| g.revived).sum(),
        rows_revived: found.groups.iter().map(|g| g.rows_revived).sum(),
        groups: found.groups,
        skipped: found.skipped,
    }
}

/// Plans the windows of `width` over `files`; a window too recent to merge whole is planned
/// again at the next finer width, down to the server's own.
fn plan_windows(
    ctx: &TableCtx,
    files: &[&EntryRc],
    width: Nanos,
    finer: &[Nanos],
    out: &mut Found,
) {
    for (start, mut inputs) in by_window(files.iter().copied(), width) {
        let revived: Vec<&EntryRc> = inputs
            .iter()
            .copied()
            .filter(|f| ctx.hidden.contains(&f.id))
            .collect();
        // One live file is already as compact as it gets; a hidden one still needs relisting.
        if inputs.len() < 2 && revived.is_empty() {
            continue;
        }
        let (rows_revived, bytes_revived) = (
            revived.iter().map(|f| f.row_count).sum::<u64>(),
            revived.iter().map(|f| f.size_bytes).sum::<u64>(),
        );
        let revived = revived.len();
        if newest_time(inputs.iter().copied()) > ctx.cutoff {
            if let Some((next, rest)) = finer.split_first() {
                plan_windows(ctx, &inputs, *next, rest, out);
            } else {
                out.skipped.push(Skipped {
                    window_start: start,
                    files: inputs.len(),
                    reason: "newer than --min-age".to_string(),
                    blocked: false,
                });
            }
            continue;
        }
        if let Some(why) = inputs.iter().find_map(|f| ctx.blocked.get(&f.id)) {
            out.skipped.push(Skipped {
                window_start: start,
                files: inputs.len(),
                reason: why.clone(),
                blocked: true,
            });
            continue;
        }
        inputs.sort_by_key(|f| f.id);
        // Copied at their exact number: kept for the whole run, as every plan's inputs are.
        let inputs: Vec<LiveFile> = inputs
            .into_iter()
            .map(|f| LiveFile {
                table: ctx.table,
                entry: EntryRc::clone(f),
            })
            .collect();
        let rows: u64 = inputs.iter().map(|f| f.entry.row_count).sum();
        let bytes: u64 = inputs.iter().map(|f| f.entry.size_bytes).sum();
        let outputs_estimate = rows.div_ceil(ctx.opts.max_rows_per_file.max(1)).max(1);
        out.groups.push(Group {
            node: ctx.node.id.clone(),
            table: ctx.table,
            window_start: start,
            window_end: Nanos(start.0.saturating_add(width.0)),
            output_path: output_path(&inputs, start, width, ctx.run_id),
            inputs,
            rows,
            bytes,
            outputs_estimate,
            revived,
            rows_revived,
            bytes_revived,
        });
    }
}

/// Why a table stays over the server's file limit after the plan.
fn over_limit_reason(found: &Found, files_after: usize, opts: &PlanOptions) -> String {
    let recent: usize = found
        .skipped
        .iter()
        .filter(|k| !k.blocked)
        .map(|k| k.files)
        .sum();
    let blocked: usize = found
        .skipped
        .iter()
        .filter(|k| k.blocked)
        .map(|k| k.files)
        .sum();
    let outputs: u64 = found.groups.iter().map(|g| g.outputs_estimate).sum();
    let mut why = Vec::new();
    if recent > 0 {
        why.push(format!(
            "{recent} file(s) are newer than --min-age {}",
            format_duration(opts.min_age)
        ));
    }
    if blocked > 0 {
        why.push(format!(
            "{blocked} file(s) are in windows with a damaged or missing input"
        ));
    }
    if outputs > found.groups.len() as u64 {
        why.push(format!(
            "--max-rows-per-file splits outputs into {outputs} file(s)"
        ));
    }
    if why.is_empty() {
        why.push(format!(
            "the table spans more than {QUERY_FILE_LIMIT} windows of {}: a wider --window would fit",
            format_duration(opts.window)
        ));
    }
    format!("{files_after} file(s) remain: {}", why.join("; "))
}

/// The time range of some files' data; (MAX, MIN) when there are none.
fn time_range(files: &[EntryRc]) -> (Nanos, Nanos) {
    let min = files.iter().map(|f| f.min_time).min().unwrap_or(Nanos::MAX);
    (min, newest_time(files))
}

/// `<node>/dbs/<db dir>/<table dir>/YYYY-MM-DD/HH-MM/kompactor-<window>-<run id>.parquet`.
///
/// The database and table directories are taken from an input, so the output sits beside
/// the files it replaces, in the naming the node already uses. The server never writes a
/// name that is not ten digits, so this cannot collide with a file it writes later.
fn output_path(inputs: &[LiveFile], start: Nanos, window: Nanos, run_id: &str) -> String {
    inputs[0].entry.path.with_str(|path| {
        let table_dir = ParquetPath::parse(path).map_or(path, |p| p.table_dir);
        format!(
            "{table_dir}/{}/kompactor-{}-{run_id}.parquet",
            window_dirs(start),
            format_duration(window)
        )
    })
}
