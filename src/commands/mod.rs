//! The commands: the command line, one module per subcommand, and what they share.
//!
//! Each command module owns its arguments and returns its exit status; [`run`] dispatches,
//! and [`start`] is the common opening of every command that changes a data dir.

pub mod archive;
pub mod args;
pub mod compact;
pub mod delete;
pub mod maintain;
pub mod prepare;
pub mod purge;
pub mod restore;
pub mod runs;
pub mod status;
pub mod undo;
pub mod verify;

use crate::durable::apply::{recover, Recovery};
use crate::durable::interlock::{for_change, Lock};
use crate::error::Result;
use clap::{Parser, Subcommand};
use std::path::Path;
use std::process::ExitCode;

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
    pub compact: compact::CompactArgs,

    /// List every item (each group's files, each finding and problem) and log each step
    /// (RUST_LOG=debug for more).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Merge while the server runs: the next compaction (server stopped) only commits.
    ///
    /// Reads the nodes without changing them and keeps each merged, verified window under
    /// DATA_DIR/.kompactor/prepared/. Run the compaction with the same options afterwards: it
    /// uses a prepared window only if its inputs are still exactly the same.
    #[command(
        after_help = "Example:\n  kompactor prepare /var/lib/influxdb3 --hosts node0   # server running\n  systemctl stop influxdb3 && kompactor /var/lib/influxdb3 --hosts node0 && systemctl start influxdb3"
    )]
    Prepare(prepare::PrepareArgs),
    /// Show each table's files, rows, bytes, time range and query-limit status; read-only.
    #[command(after_help = "Example:\n  kompactor status /var/lib/influxdb3 --hosts node0 --json")]
    Status(args::InspectArgs),
    /// Check a data dir's consistency (files, sizes, rows, ids, snapshots/); read-only.
    ///
    /// Exits 0 when consistent, 4 when problems were found (each is listed), 1 on error.
    #[command(
        after_help = "Example:\n  kompactor verify /var/lib/influxdb3 --hosts node0 && echo consistent"
    )]
    Verify(args::InspectArgs),
    /// List kompactor's runs on a data dir, with their state and trash size.
    #[command(after_help = "Example:\n  kompactor runs /var/lib/influxdb3")]
    Runs(runs::RunsArgs),
    /// Restore the data dir as it was before a finished run.
    #[command(
        after_help = "Example:\n  kompactor undo /var/lib/influxdb3 --run 20261121T080000Z-4242 --dry-run"
    )]
    Undo(undo::UndoArgs),
    /// Delete the trash of runs older than a duration (they can then no longer be undone).
    #[command(
        after_help = "Example:\n  kompactor purge /var/lib/influxdb3 --older-than 7d --dry-run"
    )]
    Purge(purge::PurgeArgs),
    /// Move the windows (UTC days) older than a cutoff out of the nodes into a Parquet archive.
    ///
    /// The archive is Hive-partitioned (node=/db=/table=/date=), merged, deduplicated and
    /// sorted like compacted files, readable by any engine. Windows leave a node only after
    /// their archived copy is verified and recorded; the node's files go to the trash, and the
    /// run can be undone like a compaction.
    #[command(
        after_help = "Example:\n  kompactor archive /var/lib/influxdb3 --hosts node0 --older-than 90d --to /mnt/cold/influx --dry-run"
    )]
    Archive(archive::ArchiveArgs),
    /// Delete rows: a time range, and optionally a condition on tags, fields and time.
    ///
    /// What InfluxDB 3 Core cannot do: every stored version of each matching point is removed
    /// from the table's files (rewritten, keeping their windows), verified, and committed
    /// like a compaction, so `kompactor undo` can bring it back. Stop the server first.
    #[command(after_help = "Examples:
  kompactor delete /var/lib/influxdb3 --hosts node0 --database metrics --table cpu --min-time 2099-01-01T00:00:00Z --dry-run
  kompactor delete /var/lib/influxdb3 --hosts node0 --database metrics --table cpu --all-time --where \"host = 'old-7'\"
  kompactor delete /var/lib/influxdb3 --hosts node0 --database metrics --table cpu --min-time 2026-03-02T00:00:00Z --max-time 2026-03-03T00:00:00Z

Exit status: 0 done (or nothing matched), 1 error (nothing changed), 2 bad request (an unknown
database, table or column, an invalid condition, no time scope).")]
    Delete(delete::DeleteArgs),
    /// Bring archived windows back into the nodes as new files.
    #[command(
        after_help = "Example:\n  kompactor restore /mnt/cold/influx /var/lib/influxdb3 --hosts node0 --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z"
    )]
    Restore(restore::RestoreArgs),
    /// The whole maintenance window, proven: measure, prepare, stop, compact, start, compare.
    ///
    /// Measures every table through the running server (row count, time range, per field its
    /// values and sums; tables over the query file limit in time slices), merges while it
    /// runs, stops it, verifies and compacts, starts it, measures again and compares. If any
    /// table differs, the run is undone and the server measured again. Kept in
    /// DATA_DIR/.kompactor/maintenance/<time>/. Stop the writers first.
    #[command(after_help = "Examples:
  kompactor maintain /var/lib/influxdb3 --hosts node0 --systemd-unit influxdb3 --token-file /etc/influxdb3/token.json
  kompactor maintain /srv/influxdb3 --hosts node0 --pid-file /run/influxdb3.pid \\
      --start-cmd 'influxdb3 serve --node-id node0 --object-store file --data-dir /srv/influxdb3' -- --min-age 1h

Exit status: 0 proven (every table answers as before), 1 not compacted (nothing changed; the
server runs again), 2 bad command line, 3 undone (a table differed or the server failed after
the compaction; the run was undone and every table answers as before), 4 attention (the
server did not come back, or the undo did not restore every answer: the message says the
node's state).")]
    Maintain(maintain::MaintainArgs),
}

/// Exit status: everything planned was done (or there was nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit status: an error stopped the run; nothing was changed (or recovery can finish it).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the command line (or what it names) is wrong; nothing was changed.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: some groups were merged, others were skipped (the summary says why).
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status of `verify`: the data dir has problems.
pub const EXIT_INCONSISTENT: u8 = 4;

/// Runs the command line.
pub fn run(cli: &Cli) -> Result<ExitCode> {
    let json = match &cli.command {
        None => cli.compact.json,
        Some(Command::Prepare(a)) => a.json,
        Some(Command::Status(a)) => a.json,
        Some(Command::Verify(a)) => a.json,
        Some(Command::Runs(a)) => a.json,
        Some(Command::Undo(a)) => a.json,
        Some(Command::Purge(a)) => a.json,
        Some(Command::Archive(a)) => a.json,
        Some(Command::Restore(a)) => a.json,
        Some(Command::Delete(a)) => a.json,
        Some(Command::Maintain(a)) => a.json,
    };
    // With --json, stdout carries the document alone: no progress, no chatter.
    let quiet = cli.quiet || json;
    if quiet {
        crate::progress::hide();
    }
    match &cli.command {
        None => compact::run(&cli.compact, quiet, cli.verbose),
        Some(Command::Prepare(a)) => prepare::run(a, quiet),
        Some(Command::Status(a)) => status::run(a, cli.verbose),
        Some(Command::Verify(a)) => verify::run(a, quiet, cli.verbose),
        Some(Command::Runs(a)) => runs::run(a),
        Some(Command::Undo(a)) => undo::run(a, quiet),
        Some(Command::Purge(a)) => purge::run(a, quiet),
        Some(Command::Archive(a)) => archive::run(a, quiet),
        Some(Command::Restore(a)) => restore::run(a, quiet),
        Some(Command::Delete(a)) => delete::run(a, quiet, cli.verbose),
        Some(Command::Maintain(a)) => maintain::run(a),
    }
}

/// The common opening of a command that changes a data dir: checks the data dir, refuses a
/// running server and takes kompactor's lock (a dry run does neither: it must not create a
/// file), then brings unfinished runs to an end (a dry run only says it would).
pub fn start(data_dir: &Path, dry_run: bool, allow_running_server: bool) -> Result<Option<Lock>> {
    let lock = for_change(data_dir, dry_run, allow_running_server)?;
    recover_first(data_dir, dry_run)?;
    Ok(lock)
}

/// Brings unfinished runs to an end (or, for a dry run, says it would), under the lock.
pub fn recover_first(data_dir: &Path, report_only: bool) -> Result<Vec<Recovery>> {
    let done = recover(data_dir, report_only)?;
    for r in &done {
        let verb = if report_only { "would be" } else { "was" };
        // Shown even with --quiet: the operator must know an earlier run was interrupted.
        eprintln!(
            "kompactor: recovery: unfinished run {} ({:?}) {verb} {}",
            r.run_id, r.was, r.action
        );
    }
    Ok(done)
}

/// A run id: UTC time and process id, sortable and unique on one machine.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}
