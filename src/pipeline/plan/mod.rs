//! The planner: which files of which table are merged into what.
//!
//! Each table's files are cut into windows by age ([`tiers`]): the newest `--min-age` is left
//! as the server wrote it; where the table's writers still write ([`reach`]), windows keep
//! the server's own 10 minutes, so that an overwrite still meets the version it replaces;
//! older data goes into hours, days, months and years, as wide as its age allows and no
//! wider than a few outputs of `--max-rows-per-file` ([`windows`]). Windows a file reaches
//! across are merged together, cut back into the narrowest of them.

pub mod reach;
mod table;
pub mod tiers;
mod windows;

pub use reach::{writer_reach, Reach, SeenWriters};
pub use tiers::{Tier, Tiers, Width, DEFAULT_TIERS, GEN1};

use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::layout::window_dirs;
use crate::format::model::FileEntry;
use crate::pipeline::discover::{newest_time, LiveFile, Node};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use table::{plan_table, TableCtx};

/// The choices that shape a plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The widths windows may have by the age of their data (`--tiers`, or `--window` for
    /// one width at every age).
    pub tiers: Tiers,
    /// Windows holding data newer than (newest data time of the table − min_age) are left alone.
    pub min_age: Nanos,
    /// At most this many rows per output file; a larger window is split by time.
    pub max_rows_per_file: u64,
    /// Also merge the files the server's load window hides, so their data is seen again.
    pub include_hidden: bool,
    /// How far back the writers write, for every table; `None` measures it per table
    /// ([`writer_reach`]).
    pub writer_reach: Option<Nanos>,
}

impl Default for PlanOptions {
    /// The plan `kompactor` makes when given no option (default tiers, `--min-age 1h`).
    fn default() -> PlanOptions {
        PlanOptions {
            tiers: Tiers::parse(DEFAULT_TIERS).expect("the default tiers parse"),
            min_age: Nanos(3_600_000_000_000),
            max_rows_per_file: 10_000_000,
            include_hidden: false,
            writer_reach: None,
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
    /// The width of the windows the outputs are cut into: each output's `chunk_time` is the
    /// start of its window. The group's inputs span one window of it, or several joined
    /// ([`Group::joined`]).
    pub width: Width,
    /// The inputs span several windows (a file of one reached into another): the outputs
    /// are cut at the windows' edges, one window's rows in each (or several, by rows).
    pub joined: bool,
    pub inputs: Vec<LiveFile>,
    pub rows: u64,
    pub bytes: u64,
    /// The path of the output of the first window (relative to the data dir); another
    /// window's sits in its own window directory under the same name
    /// ([`Group::output_path_at`]), and a split output adds `-<n>` before `.parquet`.
    pub output_path: String,
    /// Estimated outputs: rows before deduplication / row cap, at least one.
    pub outputs_estimate: u64,
    /// Inputs hidden by the server's load window, whose rows the merge makes visible again.
    pub revived: usize,
    pub rows_revived: u64,
    pub bytes_revived: u64,
}

impl Group {
    /// The output path for the window starting at `start`.
    pub fn output_path_at(&self, start: Nanos) -> String {
        if start == self.window_start {
            return self.output_path.clone();
        }
        // `<table dir>/YYYY-MM-DD/HH-MM/<name>`: the window's directories replaced.
        let mut parts: Vec<&str> = self.output_path.rsplitn(4, '/').collect();
        parts.reverse();
        match parts.as_slice() {
            [table_dir, _, _, name] => format!("{table_dir}/{}/{name}", window_dirs(start)),
            _ => self.output_path.clone(),
        }
    }
}

/// How many windows of one width a table keeps after the plan, and in how many files.
#[derive(Clone, Debug, Serialize)]
pub struct TierUse {
    /// `10m`, `1h`, `1d`, `1M`, `1y`, ..., or `as written` for data too recent to merge.
    pub width: String,
    pub windows: usize,
    pub files_after: usize,
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
    /// What the recent snapshots say of the table's writers ([`writer_reach`]).
    pub writers: Reach,
    /// Data younger than this (back from `newest_time`) is merged only in the server's own
    /// 10-minute windows: the writers' reach with a margin, or `--min-age`, whichever is older.
    pub ten_minute_zone: Nanos,
    /// The widths the table's data ends up in, narrowest first.
    pub tiers: Vec<TierUse>,
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

/// How much older than the writers' reach data must be before it is merged wider than 10
/// minutes: a quarter of the reach, at least an hour.
fn zone_margin(reach: Nanos) -> Nanos {
    Nanos((reach.0 / 4).max(3_600_000_000_000))
}

/// The age below which a table's windows stay at the server's 10 minutes: the measured
/// reach with its margin, or the one given (`--writer-reach`), or `--min-age` if older.
pub fn ten_minute_zone(reach: &Reach, opts: &PlanOptions) -> Nanos {
    match opts.writer_reach {
        Some(given) => opts.min_age.max(given),
        None if reach.late_files == 0 => opts.min_age,
        None => opts.min_age.max(Nanos(
            reach.reach.0.saturating_add(zone_margin(reach.reach).0),
        )),
    }
}

/// Plans one node's tables; `seen` is what earlier runs saw of the writers.
pub fn plan_node(
    node: &Node,
    opts: &PlanOptions,
    seen: &SeenWriters,
    run_id: &str,
) -> Vec<TablePlan> {
    let blocked = blocked_files(node);
    let reach = writer_reach(node, seen);
    let keys: BTreeSet<TableKey> = node
        .live
        .keys()
        .chain(node.hidden.keys())
        .copied()
        .collect();
    let keys: Vec<TableKey> = keys.into_iter().collect();
    let none = Vec::new();
    // Revived files have no place in the server's list yet: a group that revives some ranks
    // all its files as if the server loaded everything.
    let unbounded =
        (opts.include_hidden && !node.hidden.is_empty()).then(|| node.unbounded_load_positions());
    // Tables side by side: a deep history's plan looks at millions of files.
    crate::pipeline::workers::parallel_map(&keys, |&key| {
        let files = node.live.get(&key).unwrap_or(&none);
        let hidden = node.hidden.get(&key).unwrap_or(&none);
        // Hidden data can be newer than what the server shows (snapshot order is not data
        // order): when it is merged, it counts as the table's data.
        let newest = newest_time(files).max(if opts.include_hidden {
            newest_time(hidden)
        } else {
            Nanos::MIN
        });
        let writers = reach.get(&key).copied().unwrap_or_default();
        let ctx = TableCtx {
            node,
            table: key,
            opts,
            run_id,
            blocked: &blocked,
            unbounded: unbounded.as_ref(),
            hidden: hidden.iter().map(|f| f.id).collect(),
            newest,
            zone: ten_minute_zone(&writers, opts),
            writers,
        };
        plan_table(&ctx, files, hidden)
    })
}

#[cfg(test)]
mod tests {
    //! The plan over time: a node compacted every night converges to what one run gives.

    use super::*;
    use crate::format::ids::{DbId, FileIdMap, LoadPos, TableId};
    use crate::format::model::EntryRc;
    use crate::format::model::FileEntry;
    use crate::pipeline::discover::{Generation, ListedDirs};
    use std::path::PathBuf;

    const TEN: i64 = 600_000_000_000;
    const DAY: i64 = 86_400_000_000_000;
    const KEY: TableKey = TableKey {
        db: DbId(1),
        table: TableId(0),
    };

    fn node(files: &[EntryRc]) -> Node {
        let mut live = BTreeMap::new();
        live.insert(KEY, files.to_vec());
        let mut load_pos = FileIdMap::for_ids(files.iter().map(|f| f.id));
        for (i, f) in files.iter().enumerate() {
            load_pos.insert(f.id, LoadPos(i as u32));
        }
        Node {
            id: "node0".into(),
            dir: PathBuf::from("/nonexistent/node0"),
            generation: Generation::V3_6,
            snapshots: Vec::new(),
            checkpoints: Vec::new(),
            table_index_marker: None,
            table_index_files: Vec::new(),
            wal: Vec::new(),
            live,
            load_pos,
            findings: Vec::new(),
            loaded_snapshots: 0,
            checkpoints_loaded: 0,
            purged: BTreeMap::new(),
            hidden: BTreeMap::new(),
            listed_dirs: ListedDirs::default(),
            load_window: 4383,
            catalog_names: BTreeMap::new(),
        }
    }

    /// A file as the server writes it: one 10-minute window, `rows` rows.
    fn gen1(id: u64, window: i64) -> EntryRc {
        EntryRc::new(FileEntry {
            id: FileId(id),
            path: format!("node0/dbs/1/0/x/{id:010}.parquet").into(),
            size_bytes: 1000,
            row_count: 1,
            chunk_time: Nanos(window * TEN),
            min_time: Nanos(window * TEN + 1),
            max_time: Nanos(window * TEN + 2),
            extra: Default::default(),
        })
    }

    /// Runs the plan and applies it as a compaction would: each group's inputs replaced by
    /// its outputs (one per window of its width the data covers). `merges` holds, per file,
    /// how many merges its rows have been through.
    fn compact(
        files: &mut Vec<EntryRc>,
        next_id: &mut u64,
        run: usize,
        merges: &mut BTreeMap<u64, usize>,
    ) {
        let n = node(files);
        let plans = plan_node(
            &n,
            &PlanOptions::default(),
            &SeenWriters::default(),
            &format!("run{run}"),
        );
        for g in plans.iter().flat_map(|p| &p.groups) {
            let ids: BTreeSet<FileId> = g.inputs.iter().map(|f| f.entry.id).collect();
            files.retain(|f| !ids.contains(&f.id));
            let mut by_window: BTreeMap<Nanos, (Nanos, Nanos, u64)> = BTreeMap::new();
            for f in &g.inputs {
                let start = if g.joined {
                    g.width.floor(f.entry.min_time)
                } else {
                    g.window_start
                };
                let e = by_window
                    .entry(start)
                    .or_insert((Nanos::MAX, Nanos::MIN, 0));
                e.0 = e.0.min(f.entry.min_time);
                e.1 = e.1.max(f.entry.max_time);
                e.2 += f.entry.row_count;
            }
            let depth = 1 + g
                .inputs
                .iter()
                .map(|f| merges.get(&f.entry.id.0).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            for (start, (min, max, rows)) in by_window {
                *next_id += 1;
                merges.insert(*next_id, depth);
                files.push(EntryRc::new(FileEntry {
                    id: FileId(*next_id),
                    path: g.output_path_at(start).into(),
                    size_bytes: rows * 10,
                    row_count: rows,
                    chunk_time: start,
                    min_time: min,
                    max_time: max,
                    extra: Default::default(),
                }));
            }
        }
        files.sort_by_key(|f| f.id);
    }

    #[test]
    fn a_node_compacted_every_night_ends_as_one_run_leaves_it() {
        // 400 days of one file per 10 minutes, then 30 nights: each adds a day, then runs.
        let days = 400;
        let per_day = DAY / TEN;
        let mut files: Vec<EntryRc> = (0..days * per_day).map(|w| gen1(w as u64, w)).collect();
        let mut next_id = (days * per_day) as u64 + 1_000_000;
        let mut merged: BTreeMap<u64, usize> = BTreeMap::new();
        let mut nightly = files.clone();
        for night in 0..30 {
            let first = (days + night) * per_day;
            for w in first..first + per_day {
                let f = gen1(next_id, w);
                next_id += 1;
                nightly.push(f.clone());
                files.push(f);
            }
            compact(&mut nightly, &mut next_id, night as usize, &mut merged);
        }
        let mut once = files.clone();
        compact(&mut once, &mut next_id, 99, &mut BTreeMap::new());
        assert_eq!(
            nightly.len(),
            once.len(),
            "30 nightly runs and one run leave as many files"
        );
        assert!(nightly.len() <= 120, "{} files", nightly.len());
        // Compacting again changes nothing.
        let before = nightly.len();
        compact(&mut nightly, &mut next_id, 100, &mut merged);
        assert_eq!(nightly.len(), before);
        // Rows are merged again only as they move to a wider tier (1h, 1d, 1M, 1y): at most
        // four times.
        let deepest = nightly
            .iter()
            .map(|f| merged.get(&f.id.0).copied().unwrap_or(0))
            .max()
            .unwrap();
        assert!(deepest <= 4, "rows merged {deepest} times");
    }
}
