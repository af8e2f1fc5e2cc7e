//! Planning one table: which of its windows merge, into what, and which stay and why.

use super::windows::{self, joined, Ladder, State, Window};
use super::{
    Group, PlanOptions, Reach, Skipped, TablePlan, TierUse, Width, GEN1, QUERY_FILE_LIMIT,
};
use crate::format::ids::{FileId, FileIdMap, LoadPos, Nanos, TableKey};
use crate::format::layout::{window_dirs, ParquetPath};
use crate::format::model::EntryRc;
use crate::pipeline::discover::{newest_time, LiveFile, Node};
use crate::units::{format_duration, human_duration};
use std::collections::{BTreeMap, BTreeSet};

/// What planning one table needs to know besides its files.
pub(super) struct TableCtx<'a> {
    pub node: &'a Node,
    pub table: TableKey,
    pub opts: &'a PlanOptions,
    pub run_id: &'a str,
    pub blocked: &'a BTreeMap<FileId, String>,
    /// Where every file would stand if the server loaded all (with `include_hidden`).
    pub unbounded: Option<&'a FileIdMap<LoadPos>>,
    /// Files hidden by the load window (merged, and so revived, with `include_hidden`).
    pub hidden: BTreeSet<FileId>,
    /// The table's newest data: ages are measured back from it.
    pub newest: Nanos,
    pub writers: Reach,
    /// Data younger than this stays in 10-minute windows ([`ten_minute_zone`]).
    pub zone: Nanos,
}

impl TableCtx<'_> {
    /// The time before which data is older than `age`.
    fn cutoff(&self, age: Nanos) -> Nanos {
        Nanos(self.newest.0.saturating_sub(age.0))
    }
}

/// The groups and skipped windows of a table, as planning finds them.
#[derive(Default)]
struct Found {
    groups: Vec<Group>,
    skipped: Vec<Skipped>,
    /// Per width: windows kept and the files they hold after the plan.
    kept: BTreeMap<(Nanos, String), (usize, usize)>,
}

/// Plans one table's files (and, with `include_hidden`, its hidden ones).
pub(super) fn plan_table(ctx: &TableCtx, files: &[EntryRc], hidden: &[EntryRc]) -> TablePlan {
    let opts = ctx.opts;
    let mut candidates: Vec<&EntryRc> = files.iter().collect();
    if opts.include_hidden {
        candidates.extend(hidden);
    }
    let steps = opts.tiers.ladder(ctx.zone, opts.min_age);
    let ladder = Ladder {
        steps: &steps,
        newest: ctx.newest,
        max_rows: opts.max_rows_per_file,
    };
    let windows = ladder.windows(&candidates);
    let mut found = Found::default();
    for members in joined(&windows) {
        plan_joined(ctx, &windows, &members, &mut found);
    }
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
        windows: windows.len(),
        newest_time: newest_time(files),
        min_age_cutoff: ctx.cutoff(opts.min_age),
        writers: ctx.writers,
        ten_minute_zone: ctx.zone,
        tiers: found
            .kept
            .iter()
            .map(|((_, width), (windows, files_after))| TierUse {
                width: width.clone(),
                windows: *windows,
                files_after: *files_after,
            })
            .collect(),
        exceeds_limit_now: files.len() > QUERY_FILE_LIMIT,
        exceeds_limit_after: files_after > QUERY_FILE_LIMIT,
        limit_after_reason: (files_after > QUERY_FILE_LIMIT)
            .then(|| over_limit_reason(ctx, &found, files_after)),
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

/// Plans windows that must be merged together (one, or several a file reaches across).
fn plan_joined(ctx: &TableCtx, windows: &[Window], members: &[usize], out: &mut Found) {
    let ws: Vec<&Window> = members.iter().map(|&i| &windows[i]).collect();
    let inputs: Vec<&EntryRc> = ws.iter().flat_map(|w| w.files.iter().copied()).collect();
    let narrowest = ws
        .iter()
        .map(|w| w.width)
        .min_by_key(|w| w.nominal())
        .expect("a group has windows");
    let start = ws.iter().map(|w| w.start).min().expect("windows");
    let recent = ws.iter().any(|w| w.state == State::TooRecent);
    // Counted under the width the files end up in: the narrowest, or as the server wrote them.
    let tally = |out: &mut Found, files_after: usize, as_written: bool| {
        let key = if as_written {
            (Nanos::MIN, "as written".to_string())
        } else {
            (narrowest.nominal(), narrowest.to_string())
        };
        let e = out.kept.entry(key).or_default();
        e.0 += ws.len();
        e.1 += files_after;
    };
    let revived: Vec<&EntryRc> = inputs
        .iter()
        .copied()
        .filter(|f| ctx.hidden.contains(&f.id))
        .collect();
    // One live file is already as compact as it gets (a hidden one still needs relisting),
    // and so are the outputs of one earlier merge.
    if ws.len() == 1 && revived.is_empty() && (inputs.len() < 2 || windows::settled(&inputs)) {
        tally(out, inputs.len(), recent);
        return;
    }
    if recent {
        tally(out, inputs.len(), true);
        out.skipped.push(Skipped {
            window_start: start,
            files: inputs.len(),
            reason: if ws.len() == 1 {
                "newer than --min-age".to_string()
            } else {
                "a file reaches into a window newer than --min-age".to_string()
            },
            blocked: false,
        });
        return;
    }
    if let Some(why) = inputs.iter().find_map(|f| ctx.blocked.get(&f.id)) {
        tally(out, inputs.len(), false);
        out.skipped.push(Skipped {
            window_start: start,
            files: inputs.len(),
            reason: why.clone(),
            blocked: true,
        });
        return;
    }
    let g = group(ctx, &ws, inputs, &revived, narrowest);
    tally(out, g.outputs_estimate as usize, false);
    out.groups.push(g);
}

/// The group that merges the files of `ws` into outputs cut by `width`.
fn group(
    ctx: &TableCtx,
    ws: &[&Window],
    mut inputs: Vec<&EntryRc>,
    revived: &[&EntryRc],
    width: Width,
) -> Group {
    let start = ws.iter().map(|w| w.start).min().expect("windows");
    let end = ws
        .iter()
        .map(|w| w.width.end(w.start))
        .max()
        .expect("windows");
    inputs.sort_by_key(|f| f.id);
    let positions = match ctx.unbounded {
        Some(all) if !revived.is_empty() => all,
        _ => &ctx.node.load_pos,
    };
    // Copied at their exact number: kept for the whole run, as every plan's inputs are.
    let inputs: Vec<LiveFile> = inputs
        .into_iter()
        .map(|f| LiveFile {
            table: ctx.table,
            entry: EntryRc::clone(f),
            load_pos: positions.get(f.id).copied().unwrap_or(LoadPos(u32::MAX)),
        })
        .collect();
    let rows: u64 = inputs.iter().map(|f| f.entry.row_count).sum();
    let bytes: u64 = inputs.iter().map(|f| f.entry.size_bytes).sum();
    let joined = ws.len() > 1;
    let by_rows = rows.div_ceil(ctx.opts.max_rows_per_file.max(1)).max(1);
    let outputs_estimate = if joined {
        // One output per window of `width` the data may cover (at most), or more by rows.
        let first = inputs
            .iter()
            .map(|f| f.entry.min_time)
            .min()
            .expect("inputs");
        let last = inputs
            .iter()
            .map(|f| f.entry.max_time)
            .max()
            .expect("inputs");
        let windows = match width {
            Width::Fixed(w) => {
                ((width.floor(last).0 - width.floor(first).0) / w.0.max(1)) as u64 + 1
            }
            Width::Months(_) => {
                let mut n = 1;
                let mut at = width.floor(first);
                while width.end(at) <= last && n < 100_000 {
                    at = width.end(at);
                    n += 1;
                }
                n
            }
        };
        by_rows.max(windows)
    } else {
        by_rows
    };
    Group {
        node: ctx.node.id.clone(),
        table: ctx.table,
        window_start: start,
        window_end: end,
        width,
        joined,
        output_path: output_path(&inputs, start, width, ctx.run_id),
        inputs,
        rows,
        bytes,
        outputs_estimate,
        revived: revived.len(),
        rows_revived: revived.iter().map(|f| f.row_count).sum(),
        bytes_revived: revived.iter().map(|f| f.size_bytes).sum(),
    }
}

/// Why a table stays over the server's file limit after the plan.
fn over_limit_reason(ctx: &TableCtx, found: &Found, files_after: usize) -> String {
    let opts = ctx.opts;
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
    let ten: usize = found
        .kept
        .iter()
        .filter(|((rank, _), _)| *rank == GEN1.nominal())
        .map(|(_, (_, files))| files)
        .sum();
    let mut why = Vec::new();
    if recent > 0 {
        why.push(format!(
            "{recent} file(s) are newer than --min-age {}",
            format_duration(opts.min_age)
        ));
    }
    if ctx.zone > opts.min_age && ten > 0 {
        why.push(format!(
            "{ten} file(s) stay in 10-minute windows for the last {} of data, where the table's writers still write (they reached {} back)",
            human_duration(ctx.zone),
            human_duration(ctx.writers.reach)
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
            "the tiers ({}) leave more than {QUERY_FILE_LIMIT} windows: wider ones would fit",
            opts.tiers
        ));
    }
    format!("{files_after} file(s) remain: {}", why.join("; "))
}

/// The time range of some files' data; (MAX, MIN) when there are none.
fn time_range(files: &[EntryRc]) -> (Nanos, Nanos) {
    let min = files.iter().map(|f| f.min_time).min().unwrap_or(Nanos::MAX);
    (min, newest_time(files))
}

/// `<node>/dbs/<db dir>/<table dir>/YYYY-MM-DD/HH-MM/kompactor-<width>-<run id>.parquet`.
///
/// The database and table directories are taken from an input, so the output sits beside
/// the files it replaces, in the naming the node already uses. The server never writes a
/// name that is not ten digits, so this cannot collide with a file it writes later.
fn output_path(inputs: &[LiveFile], start: Nanos, width: Width, run_id: &str) -> String {
    inputs[0].entry.path.with_str(|path| {
        let table_dir = ParquetPath::parse(path).map_or(path, |p| p.table_dir);
        format!(
            "{table_dir}/{}/kompactor-{width}-{run_id}.parquet",
            window_dirs(start)
        )
    })
}
