//! The command line: options, their defaults, and why those defaults.

use crate::format::ids::Nanos;
use crate::units::{parse_duration, parse_size, MemoryBudget, DEFAULT_MEMORY_LIMIT};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

const ABOUT: &str = "Compacts the Parquet files of a stopped InfluxDB 3 Core node.

InfluxDB 3 Core writes one small Parquet file per table every 10 minutes and never merges
them. After about three days a full-table query fails with \"Query would scan 432 Parquet
files, exceeding the file limit\". kompactor merges each table's files per time window into
one sorted, deduplicated file, verifies it, and commits it so that every query returns what
it returned before.

Stop the server first. Replaced files are moved to <DATA_DIR>/.kompactor/trash/<run-id>/,
never deleted.";

const EXAMPLES: &str = "Examples:
  kompactor /var/lib/influxdb3 --hosts node0 --dry-run --verbose   # show the plan
  kompactor /var/lib/influxdb3 --hosts node0                       # compact
  kompactor /var/lib/influxdb3 --hosts node0,node1 --window 10m --json
  kompactor status /var/lib/influxdb3 --hosts node0
  kompactor runs /var/lib/influxdb3

Exit status: 0 done, 1 error (nothing changed), 2 bad command line, 3 partial (some windows
skipped, see the summary), 4 verify found problems.";

/// `kompactor <DATA_DIR> --hosts <node-id>[,...]`, or one of the subcommands.
#[derive(Parser, Debug)]
#[command(
    name = "kompactor",
    version,
    about = ABOUT,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub compact: CompactArgs,

    /// Log each step (RUST_LOG=debug for more).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show each table's files, rows, bytes, time range and query-limit status; read-only.
    #[command(after_help = "Example:\n  kompactor status /var/lib/influxdb3 --hosts node0 --json")]
    Status(InspectArgs),
    /// Check a data dir's consistency (files, sizes, rows, ids, snapshots/); read-only.
    ///
    /// Exits 0 when consistent, 4 when problems were found (each is listed), 1 on error.
    #[command(
        after_help = "Example:\n  kompactor verify /var/lib/influxdb3 --hosts node0 && echo consistent"
    )]
    Verify(InspectArgs),
    /// List kompactor's runs on a data dir, with their state and trash size.
    #[command(after_help = "Example:\n  kompactor runs /var/lib/influxdb3")]
    Runs(RunsArgs),
    /// Restore the data dir as it was before a finished run.
    #[command(
        after_help = "Example:\n  kompactor undo /var/lib/influxdb3 --run 20261121T080000Z-4242 --dry-run"
    )]
    Undo(UndoArgs),
    /// Delete the trash of runs older than a duration (they can then no longer be undone).
    #[command(
        after_help = "Example:\n  kompactor purge /var/lib/influxdb3 --older-than 7d --dry-run"
    )]
    Purge(PurgeArgs),
    /// Move the windows (UTC days) older than a cutoff out of the nodes into a Parquet archive.
    ///
    /// The archive is Hive-partitioned (node=/db=/table=/date=), merged, deduplicated and
    /// sorted like compacted files, readable by any engine. Windows leave a node only after
    /// their archived copy is verified and recorded; the node's files go to the trash, and the
    /// run can be undone like a compaction.
    #[command(
        after_help = "Example:\n  kompactor archive /var/lib/influxdb3 --hosts node0 --older-than 90d --to /mnt/cold/influx --dry-run"
    )]
    Archive(ArchiveArgs),
    /// Bring archived windows back into the nodes as new files.
    #[command(
        after_help = "Example:\n  kompactor restore /mnt/cold/influx /var/lib/influxdb3 --hosts node0 --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z"
    )]
    Restore(RestoreArgs),
}

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

/// The default command: plan and compact.
#[derive(Args, Debug, Clone)]
pub struct CompactArgs {
    #[command(flatten)]
    pub data_dir: DataDir,

    #[command(flatten)]
    pub hosts: Hosts,

    /// Print the plan and change nothing under DATA_DIR.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the plan (or the run's report) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    /// Compaction window: files are merged only with files of the same window.
    ///
    /// `10m` keeps the server's own gen1 windows: the output keeps the inputs' chunk_time, so a
    /// point overwritten after compaction is still deduplicated by the server. Wider windows
    /// (`1h`, `1d`) give fewer files; a later overwrite of a point inside a merged window is
    /// then not deduplicated against it (the server would return both rows).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    pub window: Nanos,

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

    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How much of the machine a merging command may use, and the running-server override.
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

    /// Run even though an InfluxDB 3 server seems to be using DATA_DIR. Only for operators
    /// who know the detection is wrong: changing a data dir under a running server loses data.
    #[arg(long)]
    pub allow_running_server: bool,
}

impl EngineArgs {
    /// The merge engine's options, spilling to `spill_dir`.
    pub fn engine_options(&self, spill_dir: PathBuf) -> crate::pipeline::merge::EngineOptions {
        crate::pipeline::merge::EngineOptions {
            spill_dir,
            threads: self.threads,
            memory_limit: self.memory_limit,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunsArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UndoArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// The run to undo (see `kompactor runs`).
    #[arg(long, value_name = "RUN_ID")]
    pub run: String,
    /// Say whether the run can be undone and what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Undo even though an InfluxDB 3 server seems to be using DATA_DIR.
    #[arg(long)]
    pub allow_running_server: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Delete the trash of finished runs that started longer ago than this (e.g. `7d`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Nanos,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Archive the UTC days that end at or before this: an RFC 3339 time
    /// (`2026-01-01T00:00:00Z`) or a duration back from now (`90d`).
    #[arg(long, value_name = "TIME|DURATION")]
    pub older_than: String,
    /// The archive directory: new, empty, or an earlier kompactor archive.
    #[arg(long, value_name = "ARCHIVE_DIR")]
    pub to: PathBuf,
    /// Database and table names for the archive's paths, as `scripts/maintenance.sh` records
    /// them (default: DATA_DIR/.kompactor/names.json if present; else names from the Parquet
    /// paths of releases up to 3.5, else ids).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// List the windows that would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The archive directory written by `kompactor archive`.
    #[arg(value_name = "ARCHIVE_DIR")]
    pub archive_dir: PathBuf,
    /// The InfluxDB 3 data dir to restore into.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Restore only windows starting at or after this (RFC 3339 time, or a duration back from now).
    #[arg(long, value_name = "TIME|DURATION")]
    pub from: Option<String>,
    /// Restore only windows ending at or before this.
    #[arg(long, value_name = "TIME|DURATION")]
    pub to: Option<String>,
    /// Verify and list the windows that would come back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even though an InfluxDB 3 server seems to be using DATA_DIR.
    #[arg(long)]
    pub allow_running_server: bool,
}

