//! `kompactor purge`: delete the trash of old finished runs (they can then not be undone)
//! and old prepared windows.

use crate::commands::args::DataDir;
use crate::commands::runs::prepared_runs;
use crate::commands::EXIT_OK;
use crate::durable::interlock::for_change;
use crate::durable::journal::{dir_size, run_ids, RunDirs};
use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::json;
use crate::units::parse_duration;
use clap::Args;
use serde::Serialize;
use std::fs;
use std::process::ExitCode;

/// `kompactor purge` arguments.
#[derive(Args, Debug, Clone)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Delete the trash of finished runs that started longer ago than this (e.g. `7d`), and
    /// prepared windows older than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Nanos,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print what was (or would be) deleted as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One run whose trash `purge` deletes.
#[derive(Serialize)]
struct PurgedRun {
    run_id: String,
    /// The trash directory.
    trash: String,
    bytes: u64,
}

/// The `purge --json` document.
#[derive(Serialize)]
struct PurgeDoc {
    format_version: u32,
    /// True when nothing was deleted (the runs are those that would be).
    dry_run: bool,
    runs: Vec<PurgedRun>,
    bytes_total: u64,
}

/// `kompactor purge`.
pub fn run(a: &PurgeArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    // Purging removes only kompactor's own trash: a running server does not stop it.
    let _lock = for_change(data_dir, a.dry_run, true)?;
    let cutoff = chrono::Utc::now().timestamp() - a.older_than.0 / 1_000_000_000;
    let mut doc = PurgeDoc {
        format_version: json::FORMAT_VERSION,
        dry_run: a.dry_run,
        runs: Vec::new(),
        bytes_total: 0,
    };
    for id in run_ids(data_dir)? {
        let dirs = RunDirs::new(data_dir, &id);
        let mut st = dirs.read_state()?;
        if !st.state.is_finished() || st.started as i64 > cutoff || !dirs.trash().exists() {
            continue;
        }
        let bytes = dir_size(&dirs.trash());
        doc.bytes_total += bytes;
        doc.runs.push(PurgedRun {
            run_id: id.clone(),
            trash: dirs.trash().display().to_string(),
            bytes,
        });
        if a.dry_run {
            continue;
        }
        // Marked first: a run whose trash may be partly gone must never be undone.
        st.purged = true;
        dirs.write_state(&st)?;
        fs::remove_dir_all(dirs.trash()).map_err(|e| Error::io(dirs.trash(), "delete", e))?;
    }
    // Prepared windows older than the cutoff: a compaction would take them only if nothing
    // changed in their windows since, which after that long is unlikely.
    let cutoff_time = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_nanos(a.older_than.0.max(0) as u64))
        .unwrap_or(std::time::UNIX_EPOCH);
    for (dir, p) in prepared_runs(data_dir)? {
        let modified = fs::metadata(&dir).and_then(|m| m.modified()).ok();
        if modified.is_some_and(|m| m > cutoff_time) {
            continue;
        }
        doc.bytes_total += p.bytes;
        doc.runs.push(PurgedRun {
            run_id: format!("prepared {}", p.prepare_id),
            trash: dir.display().to_string(),
            bytes: p.bytes,
        });
        if !a.dry_run {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, "delete", e))?;
        }
    }
    if a.json {
        json::print(&doc);
    } else if !quiet {
        let verb = if a.dry_run { "would delete" } else { "deleted" };
        for r in &doc.runs {
            println!("{verb} {} ({} bytes)", r.trash, r.bytes);
        }
        let verb = if a.dry_run { "would free" } else { "freed" };
        println!("{verb} {} bytes", doc.bytes_total);
    }
    Ok(ExitCode::from(EXIT_OK))
}
