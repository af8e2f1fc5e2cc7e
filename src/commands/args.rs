//! Argument groups several commands share: the data dir, the nodes, the merge engine.

use crate::format::ids::Nanos;
use crate::pipeline::merge::{EngineOptions, MergeRules};
use crate::pipeline::plan::{PlanOptions, Tiers, Width, DEFAULT_TIERS};
use crate::units::{parse_duration, parse_size, MemoryBudget, DEFAULT_MEMORY_LIMIT};
use clap::Args;
use std::path::{Path, PathBuf};

/// The data dir, as a positional argument or `--data-dir` (as `influxdb3 serve` names it).
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// The InfluxDB 3 data dir: the directory given to `influxdb3 serve --data-dir`.
    #[arg(value_name = "DATA_DIR", required_unless_present = "data_dir_flag")]
    data_dir: Option<PathBuf>,

    /// Same as DATA_DIR.
    #[arg(
        long = "data-dir",
        value_name = "DATA_DIR",
        conflicts_with = "data_dir"
    )]
    data_dir_flag: Option<PathBuf>,
}

impl DataDir {
    /// The data dir, however it was given.
    pub fn path(&self) -> &Path {
        self.data_dir
            .as_deref()
            .or(self.data_dir_flag.as_deref())
            .expect("clap requires one")
    }
}

/// The nodes to work on.
#[derive(Args, Debug, Clone)]
pub struct Hosts {
    /// Node ids, comma-separated (the `--node-id` the server runs with).
    #[arg(
        long = "hosts",
        alias = "node-id",
        value_name = "NODE[,NODE...]",
        value_delimiter = ',',
        required = true
    )]
    pub hosts: Vec<String>,
}

/// How much of the machine a merging command may use.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// DuckDB worker threads, and how many windows are merged at once (at most 4)
    /// (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,

    /// Memory budget, e.g. `256MB`, `2GB`: DuckDB gets four fifths of it and spills
    /// beyond that to DATA_DIR/.kompactor/tmp/; the rest is headroom for what it does not
    /// count (readers, writers, threads).
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MEMORY_LIMIT, value_parser = parse_size)]
    pub memory_limit: MemoryBudget,
}

/// The running-server override of the commands that change a data dir (not `prepare`, which
/// never refuses a running server).
#[derive(Args, Debug, Clone)]
pub struct ServerCheck {
    /// Run even though an InfluxDB 3 server seems to be using DATA_DIR. Only for operators
    /// who know the detection is wrong: changing a data dir under a running server loses data.
    #[arg(long)]
    pub allow_running_server: bool,
}

impl EngineArgs {
    /// The merge engine's options, spilling to `spill_dir`.
    pub fn engine_options(&self, spill_dir: PathBuf) -> EngineOptions {
        EngineOptions {
            spill_dir,
            threads: self.threads,
            memory_limit: self.memory_limit,
        }
    }
}

/// What kompactor must know of how the server runs, when it is not the release's default.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// How many of the newest snapshots the server loads at startup, if it runs with a
    /// `--gen1-lookback-duration` other than the default (lookback / gen1 duration; the
    /// default is 4383 from 3.2, 1000 before). On a node with checkpoints it also decides which
    /// months' checkpoints the server reads (those that reach that many snapshots back).
    #[arg(long, value_name = "SNAPSHOTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub load_window: Option<u64>,
}

impl ServerArgs {
    /// The load window, as discovery takes it.
    pub fn load_window(&self) -> Option<usize> {
        self.load_window.map(|n| n as usize)
    }
}

/// The options that shape a compaction's plan (shared by `prepare`, so that what it
/// prepares is what the compaction plans).
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// One window width for data of every age (`10m`, `1h`, `1d`, `1w`, `1M`, `1y`), instead of
    /// the tiers: files are merged only with files of the same window.
    ///
    /// `10m` keeps the server's own gen1 windows: the output keeps the inputs' chunk_time, so a
    /// point overwritten after compaction is still deduplicated by the server. Wider windows
    /// give fewer files; they are kept out of the data the table's writers still write to.
    #[arg(long, value_name = "WIDTH", value_parser = Width::parse, conflicts_with = "tiers")]
    pub window: Option<Width>,

    /// Window widths by the age of the data: `AGE:WIDTH,...,WIDTH`, each WIDTH for data up
    /// to AGE old (measured back from the table's newest data), the last for all older data.
    /// Data younger than an hour-wide window allows is merged in hours, then in the server's
    /// own 10 minutes.
    #[arg(long, value_name = "TIERS", default_value = DEFAULT_TIERS, value_parser = Tiers::parse)]
    pub tiers: Tiers,

    /// Leave alone windows holding data less than this older than the table's newest data.
    ///
    /// Late writes and overwrites land in the most recent windows, and rows still only in the
    /// WAL belong to them too; merging those windows wider than 10m could make a later
    /// overwrite show up twice. One hour covers the server's own persistence delay and
    /// typical late-arriving data; raise it if your writers backfill further back. `0` merges
    /// every window.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub min_age: Nanos,

    /// Split a window's output by time so that no file holds more rows than this (rows that
    /// share one timestamp are never split, so only a file of a single timestamp can hold
    /// more).
    #[arg(long, value_name = "ROWS", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_file: u64,

    /// Also merge the files the server's load window hides (listed only in snapshots it no
    /// longer loads), so that their rows are visible again after the restart. Off by
    /// default: the default run keeps every answer exactly as it is. See the README.
    #[arg(long)]
    pub include_hidden: bool,

    /// How far back the tables' writers still write (late points, retries, corrections,
    /// rewritten history): data younger than that is merged only in the server's own
    /// 10-minute windows, so that a later overwrite still meets the version it replaces.
    /// `auto` measures it per table from the recent snapshots (the reach of their late
    /// writes, plus a quarter); a duration sets it for every table (`0`: no protection).
    #[arg(long, value_name = "DURATION|auto", default_value = "auto", value_parser = parse_reach)]
    pub writer_reach: WriterReach,

    /// Leave alone a window where a point is stored in files of different chunk_time (an
    /// overwrite written after an earlier merge wider than 10m, which the server returns once
    /// per chunk_time), instead of combining its versions as a node never compacted would.
    #[arg(long)]
    pub keep_duplicates: bool,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl PlanArgs {
    /// The planner's options.
    pub fn options(&self) -> PlanOptions {
        PlanOptions {
            tiers: self.widths(),
            min_age: self.min_age,
            max_rows_per_file: self.max_rows_per_file,
            include_hidden: self.include_hidden,
            writer_reach: self.writer_reach.0,
        }
    }

    /// The tiers the plan uses: `--window`'s one width, or `--tiers`.
    pub fn widths(&self) -> Tiers {
        match self.window {
            Some(w) => Tiers::single(w),
            None => self.tiers.clone(),
        }
    }

    /// What the merge may do with the rows it reads.
    pub fn rules(&self) -> MergeRules {
        MergeRules {
            max_rows: self.max_rows_per_file,
            keep_duplicates: self.keep_duplicates,
            drop_keys: false,
        }
    }
}

/// `--writer-reach`: measured per table (`auto`, `None`) or given.
#[derive(Clone, Copy, Debug)]
pub struct WriterReach(pub Option<Nanos>);

fn parse_reach(s: &str) -> Result<WriterReach, String> {
    if s.trim() == "auto" {
        return Ok(WriterReach(None));
    }
    parse_duration(s).map(|d| WriterReach(Some(d)))
}

/// The arguments of the read-only commands, `status` and `verify`.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}
