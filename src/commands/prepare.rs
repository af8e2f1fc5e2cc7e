//! `kompactor prepare`: merge while the server runs, so that the compaction with the server
//! stopped only has to commit.
//!
//! Prepare reads the nodes (never writes under them) and keeps each merged, verified window
//! under `.kompactor/prepared/<id>/` with the exact inputs it replaces. The next compaction
//! takes a prepared window only if that window's live inputs are still exactly those and
//! its files still match their checksum; any other window it merges afresh.

use crate::commands::args::{DataDir, EngineArgs, Hosts, PlanArgs};
use crate::commands::status::unfinished_runs;
use crate::commands::{new_run_id, EXIT_OK, EXIT_PARTIAL};
use crate::durable::apply::sweep_scratch;
use crate::durable::fsutil::create_dir_all;
use crate::durable::interlock::lock;
use crate::durable::journal::RunDirs;
use crate::error::{Error, Result};
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::commit::{compute_node, Change};
use crate::pipeline::discover::{discover_all, Node};
use crate::pipeline::merge::{Engine, Merged};
use crate::pipeline::plan::{plan_node, Group, SeenWriters, TablePlan};
use crate::pipeline::prepared::PreparedWriter;
use crate::pipeline::space::estimate;
use crate::pipeline::workers::merge_all;
use crate::units::human_bytes;
use clap::Args;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// `kompactor prepare` arguments: the compaction's own plan options.
#[derive(Args, Debug, Clone)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Print what was prepared as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The `prepare --json` document.
#[derive(Serialize)]
struct PrepareDoc {
    format_version: u32,
    prepare_id: String,
    /// Windows merged and kept for the next compaction.
    windows_prepared: usize,
    /// Windows whose merge failed (the compaction merges them itself).
    windows_failed: usize,
    /// Bytes the prepared files take under `.kompactor/prepared/`.
    bytes: u64,
    seconds: f64,
}

/// How often discovery is tried again when the server changes the metadata meanwhile.
const READ_ATTEMPTS: usize = 10;

/// `kompactor prepare`.
pub fn run(a: &PrepareArgs, quiet: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    // kompactor's own lock, but no running-server refusal: prepare writes only under
    // .kompactor/ and reads files the server never changes once written.
    let _lock = lock(data_dir)?;
    if let Some(u) = unfinished_runs(data_dir)?.first() {
        return Err(Error::at(
            data_dir,
            format!(
                "run {} was interrupted ({:?}) and is not finished",
                u.run_id, u.state
            ),
        )
        .hint("stop the server and run kompactor once: it finishes or rolls the run back"));
    }
    sweep_scratch(data_dir)?;
    let prepare_id = new_run_id();
    let nodes = discover_settled(data_dir, &a.hosts.hosts, a.plan.server.load_window())?;
    let seen = SeenWriters::load(data_dir);
    let plans: Vec<Vec<TablePlan>> = nodes
        .iter()
        .map(|n| plan_node(n, &a.plan.options(), &seen, &prepare_id))
        .collect();
    estimate(data_dir, &nodes, &plans, a.engine.memory_limit)?.check()?;
    let jobs: Vec<&Group> = plans.iter().flatten().flat_map(|t| &t.groups).collect();

    let tmp = RunDirs::new(data_dir, &prepare_id).tmp();
    let (spill, out_dir) = (tmp.join("spill"), tmp.join("out"));
    create_dir_all(&spill)?;
    create_dir_all(&out_dir)?;
    // The scratch directory goes whatever happens; the prepared files are moved out of it.
    let _scratch = RemoveOnDrop(&tmp);
    let engine = Engine::new(&a.engine.engine_options(spill))?;
    let results = merge_all(
        &engine,
        &jobs,
        data_dir,
        &out_dir,
        a.engine.threads,
        a.plan.rules(),
    )?;
    drop(engine);
    let mut writer = PreparedWriter::new(data_dir, &prepare_id)?;
    let mut failed = 0;
    let mut merged: Vec<(&Group, Merged)> = Vec::new();
    for (g, (r, _)) in jobs.iter().zip(results) {
        match r {
            Ok(m) => merged.push((g, m)),
            Err(e) => {
                failed += 1;
                log::warn!(
                    "node {} table {} window {}: not prepared: {e}",
                    g.node,
                    g.table,
                    g.window_start.to_rfc3339()
                );
            }
        }
    }
    // The metadata files the commit of these windows rewrites, written now while the server
    // runs; the commit takes those whose bytes are still exactly what it needs.
    let dirs = RunDirs::new(data_dir, &prepare_id);
    for node in &nodes {
        let changes: Vec<Change> = merged
            .iter()
            .filter(|(g, _)| g.node == node.id)
            .map(|(g, m)| Change::merge(g, m))
            .collect();
        if changes.is_empty() {
            continue;
        }
        for f in compute_node(node, &changes, &dirs)?.files {
            if f.existed {
                writer.add_metadata(&node.id, &f.in_node(node), &f.to_bytes(), f.mtime)?;
            }
        }
    }
    for (g, m) in merged {
        writer.add(g, m)?;
    }
    let manifest = writer.finish()?;
    let bytes: u64 = manifest
        .windows
        .iter()
        .flat_map(|w| &w.outputs)
        .map(|f| f.size_bytes)
        .sum();
    let doc = PrepareDoc {
        format_version: json::FORMAT_VERSION,
        prepare_id,
        windows_prepared: manifest.windows.len(),
        windows_failed: failed,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    };
    if a.json {
        json::print(&doc);
    } else if !quiet {
        println!(
            "kompactor prepare {}: {} window(s) merged and verified ({}) in {:.1} s{}; stop the server and run `kompactor {} --hosts {}` with the same options to commit them",
            doc.prepare_id,
            doc.windows_prepared,
            human_bytes(doc.bytes),
            doc.seconds,
            if failed > 0 { format!(", {failed} failed") } else { String::new() },
            data_dir.display(),
            a.hosts.hosts.join(",")
        );
    }
    Ok(ExitCode::from(if failed > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }))
}

/// Reads the nodes while the server may be writing: the read counts only if no snapshot or
/// checkpoint file appeared, changed or vanished while it ran (a read that failed on a
/// file being written counts as changed too). Otherwise it is tried again, a few times.
///
/// The server puts each metadata file in place whole (written under a temporary name, then
/// renamed), so a settled read is the state after some snapshot: never a torn or mixed view.
fn discover_settled(
    data_dir: &Path,
    hosts: &[String],
    load_window: Option<usize>,
) -> Result<Vec<Node>> {
    let mut last_err = None;
    for attempt in 0..READ_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 * attempt as u64));
        }
        let before = metadata_listing(data_dir, hosts);
        let read = discover_all(data_dir, hosts, load_window);
        let settled = before == metadata_listing(data_dir, hosts);
        match read {
            Ok(nodes) if settled => return Ok(nodes),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
        log::info!("the server changed the metadata while it was read; reading again");
    }
    Err(last_err.unwrap_or_else(|| {
        Error::at(
            data_dir,
            "the server kept changing the metadata while kompactor read it",
        )
        .hint("try again, or run prepare when the node is less busy")
    }))
}

/// Names, sizes and modification times of every snapshot and checkpoint file of the nodes.
fn metadata_listing(data_dir: &Path, hosts: &[String]) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    for h in hosts {
        for sub in ["snapshots", "snapshot-checkpoints"] {
            for e in walkdir::WalkDir::new(data_dir.join(h).join(sub))
                .into_iter()
                .flatten()
            {
                if let Ok(m) = e.metadata() {
                    out.push((e.path().display().to_string(), m.len(), m.modified().ok()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Removes a scratch directory when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}
