//! `kompactor delete`: removes rows from a table, offline, exactly, verified and undoable.

use crate::commands::args::{DataDir, EngineArgs, Hosts, ServerArgs, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::delete::{delete, report_text, DeleteRun, Selection, Targets};
use crate::pipeline::discover::leave_to_exit;
use crate::units::parse_instant;
use clap::Args;
use std::process::ExitCode;

/// `kompactor delete`.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub data_dir: DataDir,

    #[command(flatten)]
    pub hosts: Hosts,

    /// The database, by name or id.
    #[arg(long, value_name = "DB")]
    pub database: String,

    /// The table, by name or id.
    #[arg(long, value_name = "TABLE")]
    pub table: String,

    /// Delete rows from this time on (inclusive): RFC 3339 or integer nanoseconds.
    #[arg(long, value_name = "TIME", value_parser = parse_instant, conflicts_with = "all_time")]
    pub min_time: Option<Nanos>,

    /// Delete rows before this time (exclusive): RFC 3339 or integer nanoseconds.
    #[arg(long, value_name = "TIME", value_parser = parse_instant, conflicts_with = "all_time")]
    pub max_time: Option<Nanos>,

    /// Delete at any time (a delete without a time bound must say so).
    #[arg(long)]
    pub all_time: bool,

    /// Only rows for which this SQL condition over the table's tags, fields and `time` holds
    /// (as DuckDB evaluates it): `host = 'a' AND region = 'eu'`, `region IS NULL`,
    /// `usage > 1e300`. A tag a row lacks is NULL.
    #[arg(long = "where", value_name = "PREDICATE")]
    pub predicate: Option<String>,

    /// Delete although WAL files newer than the newest snapshot exist: their rows are not in
    /// any Parquet file yet, so the delete cannot see them, and the server replays them.
    #[arg(long)]
    pub ignore_wal: bool,

    /// Print what would be deleted and change nothing under DATA_DIR.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the plan or the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub server_check: ServerCheck,
}

/// The time scope and predicate, or why they are refused.
fn selection(a: &DeleteArgs) -> Result<Selection> {
    if !a.all_time && a.min_time.is_none() && a.max_time.is_none() {
        return Err(Error::usage(
            "a delete needs a time scope: --min-time, --max-time, or --all-time",
        )
        .hint(
            "--all-time deletes at any time; it is required so that no table is wiped by mistake",
        ));
    }
    if let (Some(lo), Some(hi)) = (a.min_time, a.max_time) {
        if lo >= hi {
            return Err(Error::usage(format!(
                "--min-time {} is not before --max-time {}",
                lo.to_rfc3339(),
                hi.to_rfc3339()
            )));
        }
    }
    Ok(Selection {
        min_time: a.min_time,
        max_time: a.max_time,
        predicate: a.predicate.clone(),
    })
}

/// `kompactor delete`.
pub fn run(a: &DeleteArgs, quiet: bool, verbose: bool) -> Result<ExitCode> {
    let sel = selection(a)?;
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    let targets = Targets::find(
        data_dir,
        &a.hosts.hosts,
        a.server.load_window(),
        &a.database,
        &a.table,
        a.ignore_wal,
    )?;
    let started = chrono::Utc::now();
    let run_id = new_run_id();
    let run = DeleteRun {
        data_dir,
        database: &a.database,
        table: &a.table,
        selection: &sel,
        run_id: &run_id,
        started,
        dry_run: a.dry_run,
        allow_running_server: a.server_check.allow_running_server,
    };
    let report = delete(&run, &targets, |spill| a.engine.engine_options(spill))?;
    if a.json {
        json::print(&report);
    } else if !quiet {
        print!("{}", report_text(&report, verbose));
    }
    leave_to_exit(targets.nodes);
    Ok(ExitCode::from(EXIT_OK))
}
