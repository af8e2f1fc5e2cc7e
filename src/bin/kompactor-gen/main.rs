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

mod metadata;
mod shape;
mod sql;
mod write;

use clap::Parser;
use kompactor::format::ids::Nanos;
use shape::{Cfg, FileJob, Written};
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// 10 minutes, the server's default gen1 duration.
const GEN1: i64 = 600_000_000_000;
/// One day in nanoseconds.
const DAY: i64 = 86_400_000_000_000;

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
pub struct Args {
    /// The data dir to write into (created if missing); <OUT>/<NODE> must not exist yet.
    #[arg(value_name = "OUT")]
    pub out: PathBuf,

    /// Node id (the node directory's name).
    #[arg(long, default_value = "node0")]
    pub node: String,

    /// Number of databases (ids 1..=N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub dbs: u64,

    /// Tables per database (ids 0..N).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub tables: u64,

    /// Whole UTC days of data, starting at --start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub days: u64,

    /// Series per table (default 100). Conflicts with --rows.
    #[arg(long, conflicts_with = "rows", value_parser = clap::value_parser!(u64).range(1..))]
    pub series: Option<u64>,

    /// Approximate total rows (before overwrites): picks --series from the other options.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: Option<u64>,

    /// Time between two points of a series; must divide 10m (e.g. 1s, 5s, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = kompactor::units::parse_duration)]
    pub interval: Nanos,

    /// Only every N-th 10-minute window holds data (with `--interval 10m`, `--every 6` is one
    /// point per series and hour): a sparse table.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,

    /// Files per table and 10-minute window, one per series group (plus overwrite files).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub files_per_window: u64,

    /// Every N-th window (of each table) gets one more file that overwrites some points; 0: none.
    #[arg(long, default_value_t = 4)]
    pub overwrite_every: u64,

    /// Percentage of a window's points an overwrite file rewrites.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub overwrite_pct: u64,

    /// Fraction of the snapshots (oldest first) covered by snapshot checkpoints; 0: none.
    #[arg(long, default_value_t = 0.5)]
    pub checkpoint_frac: f64,

    /// First day of data (UTC, YYYY-MM-DD).
    #[arg(long, default_value = "2025-01-06")]
    pub start: String,

    /// Seed of every generated value.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Files written in parallel (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
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
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let cfg = Cfg::new(args)?;
    let a = &cfg.args;
    let node_dir = a.out.join(&a.node);
    if node_dir.exists() {
        return Err(format!(
            "{} already exists; remove it or choose another directory",
            node_dir.display()
        ));
    }
    fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
    let events = shape::events(&cfg);
    let jobs = shape::jobs(&cfg, &events);
    if !a.quiet {
        eprintln!(
            "kompactor-gen: {} db(s) x {} table(s), {} series each, {} windows of 10m ({} days from {}), {} points per series and window, {} files, {} snapshots, {threads} thread(s)",
            a.dbs, a.tables, cfg.series, cfg.windows, a.days, a.start, cfg.points_per_window, jobs.len(), events.len()
        );
    }
    let written = write::write_files(&cfg, &jobs, threads)?;
    let gen_secs = started.elapsed().as_secs_f64();
    // Files that came out empty are not kept and not listed.
    let (jobs, written): (Vec<FileJob>, Vec<Written>) = jobs
        .into_iter()
        .zip(written)
        .filter_map(|(j, w)| w.map(|w| (j, w)))
        .unzip();
    metadata::write_metadata(&cfg, &events, &jobs, &written)?;

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
        "node_dir={} files={} rows={rows} bytes={bytes} snapshots={} series_per_table={}",
        node_dir.display(),
        jobs.len(),
        events.len(),
        cfg.series
    );
    Ok(())
}
