//! `kompactor restore`: bring archived windows back into the nodes as new files.

use crate::commands::args::{Hosts, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::durable::journal::{RunDirs, RunState};
use crate::error::Result;
use crate::format::ids::Nanos;
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::archive::{open_archive, META};
use crate::pipeline::discover::discover_all;
use crate::pipeline::restore::{restore_windows, select_windows, verify_windows, Verified};
use crate::units::parse_time_or_age;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kompactor restore` arguments.
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
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub from: Option<Nanos>,
    /// Restore only windows ending at or before this.
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub to: Option<Nanos>,
    /// Verify and list the windows that would come back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub server_check: ServerCheck,
    /// Print the windows restored (or that would be) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One window in the `restore --json` document.
#[derive(Serialize)]
struct RestoredWindow {
    node: String,
    db: String,
    table: String,
    /// The UTC day, `YYYY-MM-DD`.
    date: String,
    rows: u64,
    /// How its archived files were checked against the manifest.
    verified_by: Verified,
}

/// The `restore --json` document.
#[derive(Serialize)]
struct RestoreDoc {
    format_version: u32,
    dry_run: bool,
    /// The run, when one was made.
    run_id: Option<String>,
    archive_dir: String,
    windows: Vec<RestoredWindow>,
}

/// `kompactor restore`.
pub fn run(a: &RestoreArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.as_path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    open_archive(&a.archive_dir, false)?;
    let from = a.from.unwrap_or(Nanos::MIN);
    let to = a.to.unwrap_or(Nanos::MAX);
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    let nodes = discover_all(data_dir, &a.hosts.hosts, None)?;
    let selected = select_windows(&a.archive_dir, &a.hosts.hosts, from, to)?;
    let verified = verify_windows(&nodes, &selected, &a.archive_dir)?;
    let doc = |run_id: Option<String>| RestoreDoc {
        format_version: json::FORMAT_VERSION,
        dry_run: a.dry_run,
        run_id,
        archive_dir: a.archive_dir.display().to_string(),
        windows: selected
            .iter()
            .zip(&verified)
            .map(|(w, v)| RestoredWindow {
                node: w.node.clone(),
                db: w.db.clone(),
                table: w.table.clone(),
                date: w.date.clone(),
                rows: w.checksum.rows,
                verified_by: *v,
            })
            .collect(),
    };
    if a.dry_run {
        if a.json {
            json::print(&doc(None));
        } else if !quiet {
            println!(
                "kompactor restore dry run: {} window(s) would come back:",
                selected.len()
            );
            for w in &selected {
                println!(
                    "  node {} {}.{} {} ({} rows)",
                    w.node, w.db, w.table, w.date, w.checksum.rows
                );
            }
        }
        return Ok(ExitCode::from(EXIT_OK));
    }
    let run_id = new_run_id();
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    restore_windows(&nodes, &selected, &a.archive_dir, &dirs, &run_id)?;
    if a.json {
        json::print(&doc(Some(run_id)));
    } else if !quiet {
        println!(
            "kompactor restore run {run_id}: {} window(s), {} rows back in the node(s); the archive's copies are in {}/{META}/restored/{run_id}/",
            selected.len(),
            selected.iter().map(|w| w.checksum.rows).sum::<u64>(),
            a.archive_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}
