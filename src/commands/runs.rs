//! `kompactor runs`: kompactor's runs on a data dir, with their state and trash size.

use crate::commands::args::DataDir;
use crate::commands::EXIT_OK;
use crate::durable::journal::{dir_size, run_ids, RunDirs, RunState};
use crate::error::Result;
use crate::format::layout::check_data_dir;
use crate::json;
use crate::pipeline::prepared::{prepared_dirs, read_manifest};
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;

/// `kompactor runs` arguments.
#[derive(Args, Debug, Clone)]
pub struct RunsArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Print the list as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `runs --json` document.
#[derive(Serialize)]
struct RunsDoc {
    format_version: u32,
    data_dir: String,
    /// Oldest first.
    runs: Vec<RunInfo>,
    /// Prepared windows waiting for a compaction (`kompactor prepare`), oldest first.
    prepared: Vec<PreparedInfo>,
}

/// One `kompactor prepare` whose windows wait for a compaction.
#[derive(Serialize)]
pub struct PreparedInfo {
    pub prepare_id: String,
    /// Windows it holds; 0 for a prepare that did not finish (its files are removed by the
    /// next compaction or `purge`).
    pub windows: usize,
    pub complete: bool,
    pub bytes: u64,
    /// The directory's modification time, RFC 3339.
    pub modified: String,
}

/// Every prepared run of a data dir, oldest first.
pub fn prepared_runs(
    data_dir: &std::path::Path,
) -> Result<Vec<(std::path::PathBuf, PreparedInfo)>> {
    let mut out = Vec::new();
    for d in prepared_dirs(data_dir)? {
        let manifest = read_manifest(&d);
        let modified = std::fs::metadata(&d)
            .and_then(|m| m.modified())
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
            .unwrap_or_default();
        let info = PreparedInfo {
            prepare_id: d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            windows: manifest.as_ref().map_or(0, |m| m.windows.len()),
            complete: manifest.is_some(),
            bytes: dir_size(&d),
            modified,
        };
        out.push((d, info));
    }
    Ok(out)
}

/// One run in `runs`.
#[derive(Serialize)]
struct RunInfo {
    run_id: String,
    state: RunState,
    started: String,
    nodes: Vec<String>,
    trash_bytes: u64,
    purged: bool,
}

/// What is known of one run.
fn info(data_dir: &std::path::Path, id: &str) -> Result<RunInfo> {
    let dirs = RunDirs::new(data_dir, id);
    let st = dirs.read_state()?;
    let m = dirs.read_manifest()?;
    let started = chrono::DateTime::from_timestamp(st.started as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    Ok(RunInfo {
        run_id: id.to_string(),
        state: st.state,
        started,
        nodes: m.nodes.iter().map(|n| n.node.clone()).collect(),
        trash_bytes: if dirs.trash().is_dir() {
            dir_size(&dirs.trash())
        } else {
            0
        },
        purged: st.purged,
    })
}

/// `kompactor runs`.
pub fn run(a: &RunsArgs) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_data_dir(data_dir)?;
    let runs: Vec<RunInfo> = run_ids(data_dir)?
        .iter()
        .map(|id| info(data_dir, id))
        .collect::<Result<_>>()?;
    let prepared: Vec<PreparedInfo> = prepared_runs(data_dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if a.json {
        json::print(&RunsDoc {
            format_version: json::FORMAT_VERSION,
            data_dir: data_dir.display().to_string(),
            runs,
            prepared,
        });
        return Ok(ExitCode::from(EXIT_OK));
    }
    for p in &prepared {
        println!(
            "prepared {}: {} window(s), {} bytes{}",
            p.prepare_id,
            p.windows,
            p.bytes,
            if p.complete { "" } else { " (unfinished)" }
        );
    }
    if runs.is_empty() {
        println!("no kompactor runs in {}", data_dir.display());
    } else {
        println!(
            "{:<26} {:<12} {:<26} {:>14}  nodes",
            "run", "state", "started", "trash bytes"
        );
        for r in &runs {
            let state = format!("{:?}", r.state).to_lowercase();
            let trash = if r.purged {
                "purged".to_string()
            } else {
                r.trash_bytes.to_string()
            };
            println!(
                "{:<26} {:<12} {:<26} {:>14}  {}",
                r.run_id,
                state,
                r.started,
                trash,
                r.nodes.join(",")
            );
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}
