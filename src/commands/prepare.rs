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
use crate::durable::interlock::lock;
use crate::error::{Error, Result};
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::plan::{plan_node, SeenWriters, TablePlan};
use crate::pipeline::prepare;
use crate::pipeline::space::estimate;
use crate::units::human_bytes;
use clap::Args;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Instant;

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
    let nodes = prepare::discover_settled(data_dir, &a.hosts.hosts, a.plan.server.load_window())?;
    let seen = SeenWriters::load(data_dir);
    let plans: Vec<Vec<TablePlan>> = nodes
        .iter()
        .map(|n| plan_node(n, &a.plan.options(), &seen, &prepare_id))
        .collect();
    estimate(data_dir, &nodes, &plans, a.engine.memory_limit)?.check()?;
    let outcome = prepare::merge_and_keep(
        data_dir,
        &nodes,
        &plans,
        &prepare_id,
        |spill| a.engine.engine_options(spill),
        a.plan.rules(),
    )?;
    let failed = outcome.windows_failed;
    let doc = PrepareDoc {
        format_version: json::FORMAT_VERSION,
        prepare_id,
        windows_prepared: outcome.windows_prepared,
        windows_failed: failed,
        bytes: outcome.bytes,
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
