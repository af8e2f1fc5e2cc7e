//! kompactor-gen: writes a deterministic synthetic InfluxDB 3 Core (3.10 layout) node dir.
//!
//! The data is a function of the options and `--seed` only: every value comes from DuckDB's
//! `hash()` of (seed, db, table, series, point index, column) (stable for the DuckDB version
//! Cargo.lock pins), the files of a batch of consecutive snapshots are written by one
//! partitioned DuckDB `COPY` from `range()`, and the metadata (snapshots, checkpoints, table
//! index) is built from the written files (exact byte sizes, row counts and time ranges) with
//! kompactor's own model. Output is byte-identical whatever `--threads` is.
//!
//! Shape of each table:
//! - tags `host` (one per series), `region` (null for every 37th series; one value has a space
//!   and a non-ASCII letter), from the midpoint on a new tag `zone` (null for every 11th), which
//!   the series key gets appended, as the server does;
//! - fields `bytes` UInt64 (a counter per series), `count` Int64, `msg` Utf8 (mostly null; with
//!   quotes, a comma, a backslash), `ok` Boolean, `usage` Float64, and from the midpoint a new
//!   field `load` Float64; columns in the server's order (tags, fields, time, then added ones);
//! - one point per series every `--interval`, at a per-series offset in nanoseconds.
//!
//! Per 10-minute window and table: `--files-per-window` files (series groups written by
//! separate snapshots: series `s` goes to group `s % files-per-window`), and every
//! `--overwrite-every`-th window one more file, written by a later snapshot, that rewrites
//! `--overwrite-pct` percent of the window's points across all groups (`usage`, `count` and
//! `load` get new values, the other fields are null there: a field-level overwrite). Its
//! `min_time` is usually later than the originals', so by the server's rule the original
//! values of the other fields stay and the overwritten fields merge in.
//!
//! Each file is sorted by series key then time (rows are generated in that order), lies inside
//! its window (`chunk_time <= time < chunk_time + 10m`) and holds no duplicate (tags, time).
//!
//! Snapshots: one per (window, series group), one per overwrite file; each adds one file per
//! table, named by its WAL number (= snapshot sequence). The first `--checkpoint-frac` of them
//! are covered by snapshot checkpoints (one per month of the snapshots' mtimes, which are set
//! to the data's time); the table index and its marker cover them all. No WAL, no catalog
//! (kompactor needs neither).

use clap::Parser;
use duckdb::Connection;
use kompactor::format::ids::{DbId, FileId, Nanos, SnapshotSeq, TableId, WalSeq};
use kompactor::format::model::{
    Checkpoint, DbFiles, Doc, EntryRc, FileEntry, Snapshot, TableIndex, TableIndexMarker,
};
use kompactor::format::parquet::{encode_arrow_schema, sql_ident, sql_str, Column, ColumnType};
use serde_json::Map;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GEN1: i64 = 600_000_000_000; // 10 minutes, the server's default gen1 duration
const DAY: i64 = 86_400_000_000_000;
const ROW_GROUP_SIZE: u64 = 100_000;
const REGIONS: [&str; 6] = [
    "us-east-1",
    "us-west-2",
    "eu-central-1",
    "ap-south-1",
    "sa east ü",
    "af-south-1",
];

const ABOUT: &str = "Writes a deterministic synthetic InfluxDB 3 Core data dir (3.10 layout) for tests and benchmarks.

The node dir <OUT>/<NODE>/ gets gen1 Parquet files (dbs/<db>/<table>/YYYY-MM-DD/HH-MM/<wal:010>.parquet,
several per 10-minute window, with overwrites and a schema change at the midpoint), snapshots,
snapshot checkpoints and a table index. The same options and seed always give the same data.";

const EXAMPLES: &str = "Examples:
  kompactor-gen /tmp/data --rows 10000000                       # ~10M rows, 2 tables, 2 days
  kompactor-gen /tmp/data --node node0 --dbs 1 --tables 2 --days 2 --series 100 --files-per-window 3 --seed 42
  kompactor-gen /tmp/big --rows 20000000 --tables 1 --days 1    # one day holding 20M rows";

#[derive(Parser, Debug)]
#[command(name = "kompactor-gen", about = ABOUT, after_help = EXAMPLES)]
struct Args {
    /// The data dir to write into (created if missing); <OUT>/<NODE> must not exist yet.
    #[arg(value_name = "OUT")]
    out: PathBuf,

    /// Node id (the node directory's name).
    #[arg(long, default_value = "node0")]
    node: String,

    /// Number of databases (ids 1..=N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    dbs: u64,

    /// Tables per database (ids 0..N).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    tables: u64,

    /// Whole UTC days of data, starting at --start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    days: u64,

    /// Series per table (default 100). Conflicts with --rows.
    #[arg(long, conflicts_with = "rows", value_parser = clap::value_parser!(u64).range(1..))]
    series: Option<u64>,

    /// Approximate total rows (before overwrites): picks --series from the other options.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rows: Option<u64>,

    /// Time between two points of a series; must divide 10m (e.g. 1s, 5s, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = kompactor::units::parse_duration)]
    interval: Nanos,

    /// Only every N-th 10-minute window holds data (with `--interval 10m`, `--every 6` is one
    /// point per series and hour): a sparse table.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,

    /// Files per table and 10-minute window, one per series group (plus overwrite files).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    files_per_window: u64,

    /// Every N-th window (of each table) gets one more file that overwrites some points; 0: none.
    #[arg(long, default_value_t = 4)]
    overwrite_every: u64,

    /// Percentage of a window's points an overwrite file rewrites.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    overwrite_pct: u64,

    /// Fraction of the snapshots (oldest first) covered by snapshot checkpoints; 0: none.
    #[arg(long, default_value_t = 0.5)]
    checkpoint_frac: f64,

    /// First day of data (UTC, YYYY-MM-DD).
    #[arg(long, default_value = "2025-01-06")]
    start: String,

    /// Seed of every generated value.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Files written in parallel (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,

    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

/// What a file is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The points of series group `g` (series `s` with `s % groups == g`).
    Base(u64),
    /// A rewrite of some points of every series of the window.
    Overwrite,
}

/// One snapshot: the files it adds (one per table), all of one window.
#[derive(Clone, Debug)]
struct Event {
    seq: u64,
    wal: u64,
    window: u64,
    kind: Kind,
    /// When the server would have written it (the snapshot file's mtime).
    persisted_at: i64,
}

/// One Parquet file to write.
#[derive(Clone, Debug)]
struct FileJob {
    event: usize,
    id: u64,
    db: u64,
    table: u64,
    window: u64,
    kind: Kind,
    /// Relative to the data dir.
    rel: String,
}

#[derive(Clone, Copy, Debug, Default)]
struct Written {
    size: u64,
    rows: u64,
    min: i64,
    max: i64,
}

struct Cfg {
    args: Args,
    start_ns: i64,
    series: u64,
    points_per_window: u64,
    /// First window with the new tag and field.
    mid_window: u64,
}

impl Cfg {
    fn window_start(&self, w: u64) -> i64 {
        self.start_ns + w as i64 * GEN1
    }

    fn after_change(&self, w: u64) -> bool {
        w >= self.mid_window
    }

    fn columns(&self, w: u64) -> (Vec<Column>, Vec<String>) {
        let c = |n: &str, ty| Column {
            name: n.to_string(),
            ty,
        };
        // As the server writes them: tags, fields (each sorted by name), time, then the
        // columns added later in the order they were added.
        let mut cols = vec![
            c("host", ColumnType::Tag),
            c("region", ColumnType::Tag),
            c("bytes", ColumnType::UInteger),
            c("count", ColumnType::Integer),
            c("msg", ColumnType::String),
            c("ok", ColumnType::Boolean),
            c("usage", ColumnType::Float),
            c("time", ColumnType::Time),
        ];
        let mut key = vec!["host".to_string(), "region".to_string()];
        if self.after_change(w) {
            cols.push(c("zone", ColumnType::Tag));
            cols.push(c("load", ColumnType::Float));
            key.push("zone".to_string());
        }
        (cols, key)
    }

    /// The `COPY` statement that writes the files of a batch of snapshots (each `events[e]`
    /// holds one job per database and table, all of one window; every event of the batch
    /// has the same kind and columns): one partitioned write into
    /// `dir/e=<e>/db=<db>/t=<table>/`, since a statement per snapshot costs far more than
    /// the bytes of a small one. The directories are reused, emptied of their files, from
    /// one batch to the next: removing them would make ext4 allocate the next inodes slowly.
    fn copy_sql(&self, events: &[&[FileJob]], dir: &Path) -> String {
        let a = &self.args;
        let (window, kind) = (events[0][0].window, events[0][0].kind);
        let seed = a.seed;
        let iv = self.args.interval.0;
        let ppw = self.points_per_window;
        let start = self.start_ns;
        let windows: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(e, jobs)| format!("({e}::BIGINT, {}::BIGINT)", jobs[0].window))
            .collect();
        let h = |salt: &str| format!("hash({seed}, db, t, s, k, '{salt}')");
        let (first, step, over) = match kind {
            Kind::Base(g) => (g, a.files_per_window, false),
            Kind::Overwrite => (0, 1, true),
        };
        let n_series = (self.series - first).div_ceil(step);
        let filter = if over {
            format!("WHERE {} % 100 < {}", h("overwrite"), a.overwrite_pct)
        } else {
            String::new()
        };
        let (cols, key) = self.columns(window);
        let regions: Vec<String> = REGIONS.iter().map(|r| sql_str(r)).collect();
        let exprs: Vec<String> = cols
            .iter()
            .map(|c| {
                let e = match c.name.as_str() {
                    "host" => "'host-' || lpad(s::VARCHAR, 6, '0')".to_string(),
                    "region" => format!(
                        "CASE WHEN s % 37 = 36 THEN NULL ELSE [{}][1 + (hash({seed}, db, t, s, 'region') % {})::BIGINT] END",
                        regions.join(", "),
                        REGIONS.len()
                    ),
                    "zone" => "CASE WHEN s % 11 = 10 THEN NULL ELSE 'zone-' || (s % 5)::VARCHAR END"
                        .to_string(),
                    "time" => "make_timestamp_ns(tns)".to_string(),
                    "bytes" if !over => format!(
                        "(s * 1000000000000 + k * 4096 + {} % 4096)::UBIGINT",
                        h("bytes")
                    ),
                    "count" if !over => format!("(({} % 2001)::BIGINT - 1000)", h("count")),
                    "count" => format!("(({} % 2001)::BIGINT - 1000)", h("count2")),
                    "msg" if !over => format!(
                        "CASE WHEN {} % 5 = 0 THEN 'status ' || ({} % 100)::VARCHAR || ', \"quoted\" \\ ü' END",
                        h("msg?"),
                        h("msg")
                    ),
                    "ok" if !over => format!("{} % 2 = 0", h("ok")),
                    "usage" if !over => format!("({} % 10000)::DOUBLE / 100.0", h("usage")),
                    "usage" => format!("({} % 10000)::DOUBLE / 100.0", h("usage2")),
                    "load" if !over => format!("({} % 10000)::DOUBLE / 100.0", h("load")),
                    "load" => format!("({} % 10000)::DOUBLE / 100.0", h("load2")),
                    _ => format!("CAST(NULL AS {})", c.ty.duckdb_type()),
                };
                format!("{e} AS {}", sql_ident(&c.name))
            })
            .collect();
        let kv = encode_arrow_schema(&cols, &key);
        // Host names are zero-padded and unique per series, so (s, tns) is each file's sort
        // order: series key, then time.
        format!(
            "COPY (SELECT e, db, t, {exprs} FROM (\
               SELECT e, db, t, s, w * {ppw} + j AS k, \
                 {start} + w * {GEN1} + j * {iv} + (hash({seed}, db, t, s, 'offset') % {iv})::BIGINT AS tns \
               FROM (VALUES {windows}) ev(e, w), range(1, {dbs_end}) d(db), range(0, {tables}) tb(t), \
                    (SELECT {first} + {step} * (i // {ppw}) AS s, i % {ppw} AS j \
                     FROM range(0, {n}) r(i))) {filter} ORDER BY e, db, t, s, tns) \
             TO {dir} (FORMAT parquet, PARTITION_BY (e, db, t), OVERWRITE_OR_IGNORE, COMPRESSION zstd, \
             ROW_GROUP_SIZE {ROW_GROUP_SIZE}, KV_METADATA {{'ARROW:schema': {kv}}})",
            exprs = exprs.join(", "),
            windows = windows.join(", "),
            dbs_end = a.dbs + 1,
            tables = a.tables,
            n = n_series * ppw,
            dir = sql_str(&dir.to_string_lossy()),
            kv = sql_str(&kv),
        )
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kompactor-gen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    if args.interval.0 <= 0 || GEN1 % args.interval.0 != 0 {
        return Err("--interval must divide 10m (e.g. 1s, 5s, 10s, 30s, 1m)".into());
    }
    if !(0.0..=1.0).contains(&args.checkpoint_frac) {
        return Err("--checkpoint-frac must be between 0 and 1".into());
    }
    if args.node.is_empty() || args.node.contains('/') || args.node.starts_with('.') {
        return Err(format!("`{}` is not a usable node id", args.node));
    }
    let day = chrono::NaiveDate::parse_from_str(&args.start, "%Y-%m-%d")
        .map_err(|e| format!("--start `{}`: {e} (expected YYYY-MM-DD)", args.start))?;
    let start_ns = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_nanos_opt()
        .ok_or("--start is out of range")?;
    let windows = args.days * (DAY / GEN1) as u64;
    let points_per_window = (GEN1 / args.interval.0) as u64;
    let series = match (args.series, args.rows) {
        (Some(s), _) => s,
        (None, Some(rows)) => {
            let per_series =
                args.dbs * args.tables * windows.div_ceil(args.every) * points_per_window;
            ((rows as f64 / per_series as f64).round() as u64).max(1)
        }
        (None, None) => 100,
    };
    if series < args.files_per_window {
        return Err(format!(
            "{series} series cannot fill {} series groups; raise --series (or --rows) or lower --files-per-window",
            args.files_per_window
        ));
    }
    if series > 999_999 {
        return Err(format!("{series} series per table is more than this generator names (999999); raise --days or --tables, or lower --interval"));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let cfg = Cfg {
        start_ns,
        series,
        points_per_window,
        mid_window: windows / 2,
        args,
    };
    let a = &cfg.args;
    let node_dir = a.out.join(&a.node);
    if node_dir.exists() {
        return Err(format!(
            "{} already exists; remove it or choose another directory",
            node_dir.display()
        ));
    }
    fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;

    // The snapshots, in the order the server would have written them.
    let mut events = Vec::new();
    for w in (0..windows).filter(|w| w % a.every == 0) {
        let ws = cfg.window_start(w);
        for g in 0..a.files_per_window {
            events.push((
                w,
                Kind::Base(g),
                ws + GEN1 + 60_000_000_000 + g as i64 * 1_000_000_000,
            ));
        }
        if a.overwrite_every > 0 && w % a.overwrite_every == a.overwrite_every - 1 {
            events.push((w, Kind::Overwrite, ws + 2 * GEN1 + 30_000_000_000));
        }
    }
    // Snapshots are written in persist-time order (an overwrite lands after the next window's
    // files); a stable sort keeps the series groups of one window in order.
    events.sort_by_key(|e| e.2);
    let events: Vec<Event> = events
        .into_iter()
        .enumerate()
        .map(|(i, (window, kind, persisted_at))| Event {
            seq: i as u64 + 1,
            wal: i as u64 + 1,
            window,
            kind,
            persisted_at,
        })
        .collect();

    let mut jobs = Vec::new();
    let mut next_id = 0u64;
    for (i, e) in events.iter().enumerate() {
        let ws = cfg.window_start(e.window);
        let t = chrono::DateTime::from_timestamp(ws.div_euclid(1_000_000_000), 0)
            .expect("window start in range");
        for db in 1..=a.dbs {
            for table in 0..a.tables {
                jobs.push(FileJob {
                    event: i,
                    id: next_id,
                    db,
                    table,
                    window: e.window,
                    kind: e.kind,
                    rel: format!(
                        "{}/dbs/{db}/{table}/{}/{:010}.parquet",
                        a.node,
                        t.format("%Y-%m-%d/%H-%M"),
                        e.wal
                    ),
                });
                next_id += 1;
            }
        }
    }

    if !a.quiet {
        eprintln!(
            "kompactor-gen: {} db(s) x {} table(s), {} series each, {} windows of 10m ({} days from {}), {} points per series and window, {} files, {} snapshots, {threads} thread(s)",
            a.dbs, a.tables, series, windows, a.days, a.start, points_per_window, jobs.len(), events.len()
        );
    }
    let written = write_files(&cfg, &jobs, threads)?;
    let gen_secs = started.elapsed().as_secs_f64();
    // Files that came out empty are not kept and not listed.
    let (jobs, written): (Vec<FileJob>, Vec<Written>) = jobs
        .into_iter()
        .zip(written)
        .filter_map(|(j, w)| w.map(|w| (j, w)))
        .unzip();
    write_metadata(&cfg, &events, &jobs, &written)?;

    let rows: u64 = written.iter().map(|w| w.rows).sum();
    let bytes: u64 = written.iter().map(|w| w.size).sum();
    if !a.quiet {
        eprintln!(
            "kompactor-gen: wrote {} Parquet files, {rows} rows, {bytes} bytes ({:.1} MB) in {gen_secs:.1}s; metadata done at {:.1}s",
            jobs.len(),
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "node_dir={} files={} rows={rows} bytes={bytes} snapshots={} series_per_table={series}",
        node_dir.display(),
        jobs.len(),
        events.len()
    );
    Ok(())
}

/// About how many files one `COPY` writes: enough that a statement's own cost vanishes
/// (a node of one small file per snapshot is written 9 times as fast as with a statement per
/// snapshot), few enough to keep the partitions' writers in memory.
const BATCH_FILES: usize = 256;

/// Writes every file, a batch of snapshots per statement and `threads` statements at a time;
/// `None` for a file that came out empty (not kept).
fn write_files(
    cfg: &Cfg,
    jobs: &[FileJob],
    threads: usize,
) -> Result<Vec<Option<Written>>, String> {
    // The jobs of one snapshot are adjacent; a batch takes consecutive snapshots of one kind
    // and one set of columns.
    let events: Vec<&[FileJob]> = jobs.chunk_by(|a, b| a.event == b.event).collect();
    let mut batches: Vec<Vec<&[FileJob]>> = Vec::new();
    for ev in events {
        let fits = batches.last().is_some_and(|b: &Vec<&[FileJob]>| {
            let (first, job) = (&b[0][0], &ev[0]);
            b.iter().map(|e| e.len()).sum::<usize>() + ev.len() <= BATCH_FILES
                && first.kind == job.kind
                && cfg.after_change(first.window) == cfg.after_change(job.window)
        });
        match batches.last_mut() {
            Some(b) if fits => b.push(ev),
            _ => batches.push(vec![ev]),
        }
    }
    let events = batches;
    let results: Mutex<Vec<Option<Vec<Option<Written>>>>> = Mutex::new(vec![None; events.len()]);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (results, next, failed, events) = (&results, &next, &failed, &events);
            scope.spawn(move || {
                // One single-threaded DuckDB per worker: the files are small, so parallelism
                // comes from writing several at once, and separate databases share no locks.
                let conn = match Connection::open_in_memory().and_then(|c| {
                    c.execute_batch("SET threads = 1; SET preserve_insertion_order = true;")?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        failed.lock().unwrap().get_or_insert(format!("DuckDB: {e}"));
                        return;
                    }
                };
                let scratch = cfg.args.out.join(format!(".kompactor-gen-{worker}"));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events.len() || failed.lock().unwrap().is_some() {
                        break;
                    }
                    match write_batch(cfg, &conn, &events[i], &scratch) {
                        Ok(w) => results.lock().unwrap()[i] = Some(w),
                        Err(e) => {
                            failed.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                }
                let _ = fs::remove_dir_all(&scratch);
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .flat_map(|w| w.expect("every batch was written"))
        .collect())
}

/// Writes the files of a batch of snapshots through `scratch`, then moves each to its place.
fn write_batch(
    cfg: &Cfg,
    conn: &Connection,
    events: &[&[FileJob]],
    scratch: &Path,
) -> Result<Vec<Option<Written>>, String> {
    let err = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    conn.execute_batch(&cfg.copy_sql(events, scratch))
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    // What the metadata records of each file, and a check that each is sorted as the server
    // sorts (host names are unique per series).
    let mut stats: BTreeMap<(usize, u64, u64), (u64, i64, i64)> = BTreeMap::new();
    // Overwrites that selected no point at all wrote nothing, and a glob that matches
    // nothing is an error to DuckDB.
    let wrote = walkdir::WalkDir::new(scratch)
        .into_iter()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "parquet"));
    if !wrote {
        return Ok(vec![None; events.iter().map(|e| e.len()).sum()]);
    }
    let glob = scratch.join("*").join("*").join("*").join("*.parquet");
    let mut q = conn
        .prepare(&format!(
            "SELECT e::UBIGINT, db::UBIGINT, t::UBIGINT, count(*)::UBIGINT, epoch_ns(min(\"time\")), \
               epoch_ns(max(\"time\")), bool_and(in_order) \
             FROM (SELECT e, db, t, \"time\", coalesce((host, \"time\") >= lag((host, \"time\")) \
                     OVER (PARTITION BY e, db, t ORDER BY file_row_number), true) AS in_order \
                   FROM read_parquet({}, hive_partitioning = true, file_row_number = true)) \
             GROUP BY ALL",
            sql_str(&glob.to_string_lossy())
        ))
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    let rows = q
        .query_map([], |r| {
            Ok((
                (r.get::<_, u64>(0)? as usize, r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?, r.get(5)?),
                r.get::<_, bool>(6)?,
            ))
        })
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    for row in rows {
        let (k, v, in_order) = row.map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
        if !in_order {
            return Err(err(
                scratch,
                &format!("db {} table {}: the file came out unsorted", k.1, k.2),
            ));
        }
        stats.insert(k, v);
    }
    let jobs = events
        .iter()
        .enumerate()
        .flat_map(|(e, jobs)| jobs.iter().map(move |j| (e, j)));
    jobs.map(|(e, job)| {
        // An overwrite that selected no point of a table (tiny tables) wrote no file, as
        // the server writes no empty one.
        let Some(&(rows, min, max)) = stats.get(&(e, job.db, job.table)) else {
            return Ok(None);
        };
        let part = scratch
            .join(format!("e={e}"))
            .join(format!("db={}", job.db))
            .join(format!("t={}", job.table));
        let written: Vec<PathBuf> = fs::read_dir(&part)
            .map_err(|e| err(&part, &e))?
            .flatten()
            .map(|e| e.path())
            .collect();
        let [from] = written.as_slice() else {
            return Err(err(
                &part,
                &format!("expected one file, found {}", written.len()),
            ));
        };
        let path = cfg.args.out.join(&job.rel);
        let dir = path.parent().expect("file has a directory");
        fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
        fs::rename(from, &path).map_err(|e| err(&path, &e))?;
        let size = fs::metadata(&path).map_err(|e| err(&path, &e))?.len();
        Ok(Some(Written {
            size,
            rows,
            min,
            max,
        }))
    })
    .collect()
}

const SNAPSHOT_TEMPLATE: &str = r#"{"version": "1", "node_id": "", "next_file_id": 0,
  "snapshot_sequence_number": 0, "wal_file_sequence_number": 0, "catalog_sequence_number": 0,
  "parquet_size_bytes": 0, "row_count": 0, "min_time": 0, "max_time": 0,
  "databases": [], "removed_files": []}"#;

const CHECKPOINT_TEMPLATE: &str = r#"{"version": "1", "node_id": "", "year_month": "",
  "last_snapshot_sequence_number": 0, "next_file_id": 0, "wal_file_sequence_number": 0,
  "catalog_sequence_number": 0, "parquet_size_bytes": 0, "row_count": 0, "min_time": 0,
  "max_time": 0, "databases": [], "pending_removed_files": []}"#;

const TABLE_INDEX_TEMPLATE: &str = r#"{"node_id": "", "db_id": 0, "table_id": 0, "files": [],
  "latest_snapshot_sequence_number": 0, "parquet_size_bytes": 0, "row_count": 0,
  "min_time": 0, "max_time": 0}"#;

const MARKER_TEMPLATE: &str = r#"{"last_sequence_number": 0}"#;

fn template<T: serde::Serialize + serde::de::DeserializeOwned>(text: &str) -> Doc<T> {
    Doc::parse(text.as_bytes()).expect("template parses")
}

fn node_extra(node: &str) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    m.insert("node_id".into(), node.into());
    m
}

fn write_json(path: &Path, bytes: &[u8], mtime: Option<i64>) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(ns) = mtime {
        let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
        set_mtime(path, t)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, t: SystemTime) -> Result<(), String> {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| format!("{}: set mtime: {e}", path.display()))
}

fn year_month(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .expect("in range")
        .format("%Y-%m")
        .to_string()
}

fn write_metadata(
    cfg: &Cfg,
    events: &[Event],
    jobs: &[FileJob],
    written: &[Written],
) -> Result<(), String> {
    let a = &cfg.args;
    let node_dir = a.out.join(&a.node);
    let entry = |j: &FileJob, w: &Written| FileEntry {
        id: FileId(j.id),
        path: j.rel.as_str().into(),
        size_bytes: w.size,
        row_count: w.rows,
        chunk_time: Nanos(cfg.window_start(j.window)),
        min_time: Nanos(w.min),
        max_time: Nanos(w.max),
        extra: Default::default(),
    };
    // Tables are created, then the new tag and field are added to each.
    let tables = a.dbs * a.tables;
    let catalog_seq = |w: u64| {
        if cfg.after_change(w) {
            2 * tables + 1
        } else {
            tables + 1
        }
    };
    let mut by_event: Vec<Vec<(&FileJob, &Written)>> = vec![Vec::new(); events.len()];
    for (j, w) in jobs.iter().zip(written) {
        by_event[j.event].push((j, w));
    }

    let snap_t = template::<Snapshot>(SNAPSHOT_TEMPLATE);
    let mut next_file_id = 0u64;
    let mut max_catalog = 0u64;
    // Per event: next_file_id and catalog sequence after it, for the checkpoints.
    let mut after: Vec<(u64, u64)> = Vec::with_capacity(events.len());
    for (e, files) in events.iter().zip(&by_event) {
        let mut dbs = DbFiles::default();
        for (j, w) in files {
            dbs.push(DbId(j.db), TableId(j.table), EntryRc::new(entry(j, w)));
            next_file_id = next_file_id.max(j.id + 1);
        }
        max_catalog = max_catalog.max(catalog_seq(e.window));
        let mut s = Snapshot {
            version: Some("1".into()),
            next_file_id: FileId(next_file_id),
            snapshot_sequence_number: SnapshotSeq(e.seq),
            wal_file_sequence_number: WalSeq(e.wal),
            catalog_sequence_number: max_catalog,
            parquet_size_bytes: 0,
            row_count: 0,
            min_time: Nanos::MAX,
            max_time: Nanos::MIN,
            databases: dbs,
            removed_files: Some(DbFiles::default()),
            extra: node_extra(&a.node),
        };
        s.recompute_totals();
        after.push((next_file_id, max_catalog));
        let path = node_dir
            .join("snapshots")
            .join(format!("{}.info.json", SnapshotSeq(e.seq).inverted_name()));
        write_json(
            &path,
            &Doc::new(s, &snap_t).to_bytes(),
            Some(e.persisted_at),
        )?;
    }

    // Checkpoints: the first `checkpoint_frac` of the snapshots, one per month (by the
    // snapshot's mtime, as the server groups them), each cumulative over its month.
    let covered = ((events.len() as f64) * a.checkpoint_frac).floor() as usize;
    if covered > 0 {
        let cp_t = template::<Checkpoint>(CHECKPOINT_TEMPLATE);
        let mut months: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in events[..covered].iter().enumerate() {
            months
                .entry(year_month(e.persisted_at))
                .or_default()
                .push(i);
        }
        for (month, idx) in months {
            let last = *idx.last().expect("month has a snapshot");
            let mut dbs = DbFiles::default();
            for &i in &idx {
                for (j, w) in &by_event[i] {
                    dbs.push(DbId(j.db), TableId(j.table), EntryRc::new(entry(j, w)));
                }
            }
            let e = &events[last];
            let mut c = Checkpoint {
                version: Some("1".into()),
                year_month: month.clone(),
                last_snapshot_sequence_number: SnapshotSeq(e.seq),
                next_file_id: Some(FileId(after[last].0)),
                wal_file_sequence_number: WalSeq(e.wal),
                catalog_sequence_number: after[last].1,
                parquet_size_bytes: 0,
                row_count: 0,
                min_time: Nanos::MAX,
                max_time: Nanos::MIN,
                databases: dbs,
                pending_removed_files: DbFiles::default(),
                extra: node_extra(&a.node),
            };
            c.recompute_totals();
            let path = node_dir
                .join("snapshot-checkpoints")
                .join(&month)
                .join(format!(
                    "{}.checkpoint.json",
                    SnapshotSeq(e.seq).inverted_name()
                ));
            write_json(
                &path,
                &Doc::new(c, &cp_t).to_bytes(),
                Some(e.persisted_at + 1_000_000_000),
            )?;
        }
    }

    // The table index, complete up to the newest snapshot.
    let newest = events.last().map_or(0, |e| e.seq);
    let ti_t = template::<TableIndex>(TABLE_INDEX_TEMPLATE);
    let mut per_table: BTreeMap<(u64, u64), Vec<FileEntry>> = BTreeMap::new();
    for (j, w) in jobs.iter().zip(written) {
        per_table
            .entry((j.db, j.table))
            .or_default()
            .push(entry(j, w));
    }
    for ((db, table), files) in per_table {
        let totals = DbFiles(vec![(
            DbId(db),
            kompactor::format::model::DbTables {
                tables: vec![(
                    TableId(table),
                    files.iter().cloned().map(EntryRc::new).collect(),
                )],
                extra: Default::default(),
            },
        )])
        .totals();
        let ti = TableIndex {
            db_id: DbId(db),
            table_id: TableId(table),
            files,
            latest_snapshot_sequence_number: SnapshotSeq(newest),
            parquet_size_bytes: totals.parquet_size_bytes,
            row_count: totals.row_count,
            min_time: totals.min_time,
            max_time: totals.max_time,
            extra: node_extra(&a.node),
        };
        let path = node_dir
            .join("db-indices")
            .join(db.to_string())
            .join(table.to_string())
            .join("index.info.json");
        write_json(&path, &Doc::new(ti, &ti_t).to_bytes(), None)?;
    }
    let marker_t = template::<TableIndexMarker>(MARKER_TEMPLATE);
    let marker = TableIndexMarker {
        last_sequence_number: SnapshotSeq(newest),
        extra: Map::new(),
    };
    write_json(
        &node_dir.join("table-index-conversion-completed"),
        &Doc::new(marker, &marker_t).to_bytes(),
        None,
    )?;
    Ok(())
}
