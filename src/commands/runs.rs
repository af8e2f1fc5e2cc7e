//! The runs of a data dir: `runs` lists them, `undo` reverses one, `purge` frees their trash.

use crate::commands::{PurgeArgs, RunsArgs, UndoArgs};
use crate::pipeline::discover::discover_node;
use crate::error::{Error, Result};
use crate::durable::interlock::for_change;
use crate::durable::journal::{self, dir_size, run_ids, RunDirs, RunState};
use crate::commands::compact::{recover_first, EXIT_OK};
use crate::format::ids::SnapshotSeq;
use serde::Serialize;
use std::fs;
use std::process::ExitCode;

#[derive(Serialize)]
struct RunInfo {
    run_id: String,
    state: RunState,
    started: String,
    nodes: Vec<String>,
    trash_bytes: u64,
    purged: bool,
}

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
pub fn list(a: &RunsArgs) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    if !data_dir.is_dir() {
        return Err(Error::at(
            data_dir,
            "data dir does not exist or is not a directory",
        ));
    }
    let runs: Vec<RunInfo> = run_ids(data_dir)?
        .iter()
        .map(|id| info(data_dir, id))
        .collect::<Result<_>>()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).expect("runs serialise")
        );
    } else if runs.is_empty() {
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

/// `kompactor undo`.
pub fn undo(a: &UndoArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    let _lock = for_change(data_dir, a.dry_run, a.allow_running_server)?;
    recover_first(data_dir, a.dry_run, quiet)?;
    let newest = |node: &str| -> Result<Option<SnapshotSeq>> {
        Ok(discover_node(data_dir, node)?
            .newest_snapshot()
            .map(|s| s.seq))
    };
    if let Some(why) = journal::undo_blocker(data_dir, &a.run, &newest)? {
        return Err(Error::at(
            data_dir,
            format!("run {} cannot be undone: {why}", a.run),
        ));
    }
    let m = RunDirs::new(data_dir, &a.run).read_manifest()?;
    let (mut files, mut restored, mut removed) = (0, 0, 0);
    for n in &m.nodes {
        files += n.replaced.len();
        restored += n.writes.iter().filter(|w| w.original.is_some()).count();
        removed += n.writes.iter().filter(|w| w.original.is_none()).count();
    }
    let what = format!(
        "{files} replaced file(s) back from the trash, {restored} metadata file(s) restored, {removed} created by the run removed, its {} output file(s) moved to its trash",
        m.nodes.iter().map(|n| n.outputs.len()).sum::<usize>()
    );
    if a.dry_run {
        println!("run {} can be undone: {what}", a.run);
        return Ok(ExitCode::from(EXIT_OK));
    }
    journal::undo(data_dir, &a.run)?;
    if !quiet {
        println!("run {} undone: {what}", a.run);
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `kompactor purge`.
pub fn purge(a: &PurgeArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    // Purging removes only kompactor's own trash: a running server does not stop it.
    let _lock = for_change(data_dir, a.dry_run, true)?;
    let cutoff = chrono::Utc::now().timestamp() - a.older_than.0 / 1_000_000_000;
    let mut total = 0;
    for id in run_ids(data_dir)? {
        let dirs = RunDirs::new(data_dir, &id);
        let mut st = dirs.read_state()?;
        let finished = matches!(
            st.state,
            RunState::Done | RunState::RolledBack | RunState::Undone
        );
        if !finished || st.started as i64 > cutoff || !dirs.trash().exists() {
            continue;
        }
        let bytes = dir_size(&dirs.trash());
        total += bytes;
        if a.dry_run {
            println!("would delete {} ({bytes} bytes)", dirs.trash().display());
            continue;
        }
        // Marked first: a run whose trash may be partly gone must never be undone.
        st.purged = true;
        dirs.write_state(&st)?;
        fs::remove_dir_all(dirs.trash()).map_err(|e| Error::io(dirs.trash(), "delete", e))?;
        if !quiet {
            println!("deleted {} ({bytes} bytes)", dirs.trash().display());
        }
    }
    if !quiet {
        println!(
            "{} {total} bytes",
            if a.dry_run { "would free" } else { "freed" }
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}
