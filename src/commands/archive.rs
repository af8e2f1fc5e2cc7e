//! `kompactor archive`: move cold windows out of the nodes into a Parquet archive.
//!
//! Windows leave a node only after their archived files are verified and the archive's
//! manifest is durable, through the same journaled commit as compaction.

use crate::commands::args::{DataDir, EngineArgs, Hosts, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::durable::fsutil::create_dir_all;
use crate::durable::journal::{RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::archive::plan::plan_days;
use crate::pipeline::archive::write::{archive_days, ArchiveRun};
use crate::pipeline::archive::{marker, open_archive, Names, DAY};
use crate::pipeline::discover::discover_all;
use crate::units::parse_time_or_age;
use clap::Args;
use serde::Serialize;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kompactor archive` arguments.
#[derive(Args, Debug, Clone)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Archive the UTC days that end at or before this: an RFC 3339 time
    /// (`2026-01-01T00:00:00Z`) or a duration back from now (`90d`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub older_than: Nanos,
    /// The archive directory: new, empty, or an earlier kompactor archive.
    #[arg(long, value_name = "ARCHIVE_DIR")]
    pub to: PathBuf,
    /// Database and table names for the archive's paths, as `kompactor maintain` records
    /// them (default: DATA_DIR/.kompactor/names.json if present; else names from the Parquet
    /// paths of releases up to 3.5, else ids).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// List the windows that would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the windows moved (or that would move) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub server_check: ServerCheck,
}

/// One window in the `archive --json` document.
#[derive(Serialize)]
struct ArchiveWindow {
    /// The archive partition, `node=/db=/table=/date=`.
    partition: String,
    /// The node files it is made from.
    node_files: usize,
    /// Rows in those files, duplicates included.
    rows: u64,
}

/// The `archive --json` document.
#[derive(Serialize)]
struct ArchiveDoc {
    format_version: u32,
    dry_run: bool,
    /// The run, when one was made.
    run_id: Option<String>,
    archive_dir: String,
    /// The start of the first UTC day left in the nodes.
    cutoff: String,
    windows: Vec<ArchiveWindow>,
}

/// `kompactor archive`.
pub fn run(a: &ArchiveArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let cutoff = a.older_than.floor_to(DAY);
    let names = Names::load(data_dir, a.names.as_deref())?;
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    if !marker(&a.to).is_file() {
        let empty = !a.to.exists()
            || fs::read_dir(&a.to)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::at(&a.to, "this directory is not empty and is not a kompactor archive (no _kompactor/ARCHIVE.json)")
                .hint("give an empty or new directory, or one kompactor archived to before"));
        }
    }
    let run_id = new_run_id();
    let nodes = discover_all(data_dir, &a.hosts.hosts, None)?;
    let days = plan_days(&nodes, &names, cutoff, &run_id)?;
    let summary = |run_id: Option<String>| ArchiveDoc {
        format_version: json::FORMAT_VERSION,
        dry_run: a.dry_run,
        run_id,
        archive_dir: a.to.display().to_string(),
        cutoff: cutoff.to_rfc3339(),
        windows: days
            .iter()
            .map(|d| ArchiveWindow {
                partition: d.partition(),
                node_files: d.group.inputs.len(),
                rows: d.group.rows,
            })
            .collect(),
    };
    if a.dry_run {
        if a.json {
            json::print(&summary(None));
        } else if !quiet {
            println!(
                "kompactor archive dry run: {} window(s) before {} would move to {}",
                days.len(),
                cutoff.to_rfc3339(),
                a.to.display()
            );
            for d in &days {
                println!(
                    "  {} ({} files, {} rows)",
                    d.partition(),
                    d.group.inputs.len(),
                    d.group.rows
                );
            }
        }
        return Ok(ExitCode::from(EXIT_OK));
    }

    open_archive(&a.to, true)?;
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    let spill = dirs.tmp().join("spill");
    create_dir_all(&spill)?;
    let run = ArchiveRun {
        data_dir,
        to: &a.to,
        run_id: &run_id,
        dirs: &dirs,
    };
    let doc = archive_days(&run, &nodes, &days, a.engine.engine_options(spill))?;
    let rows: u64 = doc.windows.iter().map(|w| w.checksum.rows).sum();
    if a.json {
        json::print(&summary(Some(run_id.clone())));
    } else if !quiet {
        println!(
            "kompactor archive run {run_id}: {} window(s), {rows} rows, moved to {}; their {} node file(s) are in {}/.kompactor/trash/{run_id}/",
            doc.windows.len(),
            a.to.display(),
            doc.windows.iter().map(|w| w.sources.len()).sum::<usize>(),
            data_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}
