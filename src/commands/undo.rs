//! `kompactor undo`: restore a data dir as it was before a finished run.

use crate::commands::args::{DataDir, ServerCheck};
use crate::commands::{start, EXIT_OK};
use crate::durable::journal::RunDirs;
use crate::durable::undo::{files_in_trash, undo, undo_blocker};
use crate::error::{Error, Result};
use crate::format::ids::SnapshotSeq;
use crate::json;
use crate::pipeline::discover::discover_node;
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;

/// `kompactor undo` arguments.
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
    #[command(flatten)]
    pub server_check: ServerCheck,
    /// Print what was (or would be) undone as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `undo --json` document.
#[derive(Serialize)]
struct UndoDoc {
    format_version: u32,
    run_id: String,
    /// True when nothing was changed (only checked that the run can be undone).
    dry_run: bool,
    /// Replaced Parquet files moved back from the trash into the nodes.
    files_back_from_trash: usize,
    /// Snapshot, checkpoint and table-index files put back as they were.
    metadata_files_restored: usize,
    /// Metadata files the run had created, removed.
    metadata_files_removed: usize,
    /// The run's output files, moved into its trash.
    outputs_to_trash: usize,
}

/// `kompactor undo`.
pub fn run(a: &UndoArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    let newest = |node: &str| -> Result<Option<SnapshotSeq>> {
        Ok(discover_node(data_dir, node)?
            .newest_snapshot()
            .map(|s| s.seq))
    };
    if let Some(why) = undo_blocker(data_dir, &a.run, &newest)? {
        return Err(Error::at(
            data_dir,
            format!("run {} cannot be undone: {why}", a.run),
        ));
    }
    let dirs = RunDirs::new(data_dir, &a.run);
    let m = dirs.read_manifest()?;
    let mut doc = UndoDoc {
        format_version: json::FORMAT_VERSION,
        run_id: a.run.clone(),
        dry_run: a.dry_run,
        files_back_from_trash: 0,
        metadata_files_restored: 0,
        metadata_files_removed: 0,
        outputs_to_trash: 0,
    };
    for n in &m.nodes {
        doc.files_back_from_trash += files_in_trash(&dirs, n);
        doc.metadata_files_restored += n.writes.iter().filter(|w| w.original.is_some()).count();
        doc.metadata_files_removed += n.writes.iter().filter(|w| w.original.is_none()).count();
        doc.outputs_to_trash += n.outputs.len();
    }
    let what = format!(
        "{} replaced file(s) back from the trash, {} metadata file(s) restored, {} created by the run removed, its {} output file(s) moved to its trash",
        doc.files_back_from_trash,
        doc.metadata_files_restored,
        doc.metadata_files_removed,
        doc.outputs_to_trash
    );
    if !a.dry_run {
        undo(data_dir, &a.run)?;
    }
    if a.json {
        json::print(&doc);
    } else if a.dry_run {
        println!("run {} can be undone: {what}", a.run);
    } else if !quiet {
        println!("run {} undone: {what}", a.run);
    }
    Ok(ExitCode::from(EXIT_OK))
}
