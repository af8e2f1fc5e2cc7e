//! The default command: plan, then either show the plan (dry run) or merge, verify, commit
//! and report.

use crate::commands::args::{DataDir, EngineArgs, Hosts, PlanArgs, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK, EXIT_PARTIAL};
use crate::durable::apply::recover;
use crate::durable::interlock::Lock;
use crate::durable::journal::{RunDirs, RunState, GUARD_NAME};
use crate::error::{Error, Result};
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::compaction;
use crate::pipeline::discover::{discover_all, leave_to_exit, summarize, Finding, Node};
use crate::pipeline::plan::{plan_node, SeenWriters, TablePlan};
use crate::pipeline::prepared::Prepared;
use crate::pipeline::report::{
    plan_text, run_text, NodeReport, NodeRun, Phases, PlanDoc, RunOptions, RunReport,
};
use crate::pipeline::space::{estimate, SpaceEstimate};
use crate::units::format_duration;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// The default command: plan and compact.
#[derive(Args, Debug, Clone)]
pub struct CompactArgs {
    #[command(flatten)]
    pub data_dir: DataDir,

    #[command(flatten)]
    pub hosts: Hosts,

    /// Print the plan and change nothing under DATA_DIR.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the plan (or the run's report) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub plan: PlanArgs,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub server_check: ServerCheck,
}

/// Errors if a guard is left in a node that no unfinished run explains.
fn refuse_orphan_guards(data_dir: &Path, hosts: &[String]) -> Result<()> {
    for h in hosts {
        let guard = data_dir.join(h).join("snapshots").join(GUARD_NAME);
        if guard.exists() {
            let text = std::fs::read_to_string(&guard).unwrap_or_default();
            return Err(Error::at(&guard, format!("a kompactor commit guard is left here and no unfinished run explains it: {}", text.lines().next().unwrap_or("")))
                .hint("look at .kompactor/runs/ (kompactor runs DATA_DIR); once the node's metadata is known to be consistent (kompactor verify), remove this file"));
        }
    }
    Ok(())
}

/// `kompactor <DATA_DIR> --hosts ...`: plans, then compacts or (dry run) shows the plan.
pub fn run(args: &CompactArgs, quiet: bool, verbose: bool) -> Result<ExitCode> {
    let data_dir = args.data_dir.path();
    let hosts = &args.hosts.hosts;
    check_hosts(data_dir, hosts)?;
    // Locked before reading anything, so that no other run can commit between our reading
    // the metadata and our commit.
    let lock = start(
        data_dir,
        args.dry_run,
        args.server_check.allow_running_server,
    )?;
    if !args.dry_run {
        refuse_orphan_guards(data_dir, hosts)?;
    }
    let opts = args.plan.options();
    let run_id = new_run_id();
    let read_started = Instant::now();
    let nodes = discover_all(data_dir, hosts, args.plan.server.load_window())?;
    let t = Instant::now();
    let seen = SeenWriters::load(data_dir);
    let plans: Vec<Vec<TablePlan>> = nodes
        .iter()
        .map(|n| plan_node(n, &opts, &seen, &run_id))
        .collect();
    log::debug!("planning took {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let space = estimate(data_dir, &nodes, &plans, args.engine.memory_limit)?;
    log::debug!(
        "estimating the space took {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let planned = Planned {
        nodes: &nodes,
        plans,
        space,
        read_and_plan: read_started.elapsed().as_secs_f64(),
    };
    let result = match lock {
        None => dry_run(args, quiet, verbose, planned),
        Some(lock) => {
            // Refused before anything changes; a write that fails for space anyway says
            // how much the run needed.
            planned.space.check()?;
            let space = planned.space.clone();
            // The lock is held until the failed run is rolled back too.
            compact(args, quiet, &run_id, planned, &lock).map_err(|e| {
                // Whatever failed, the run is brought to an end now (rolled back before its
                // commit point) rather than by the next invocation, so the disk is freed.
                if let Err(r) = recover(data_dir, false) {
                    log::error!("rolling the failed run back failed too: {r}");
                }
                if e.out_of_space {
                    let hint = space.explain_failure();
                    e.hint(hint)
                } else {
                    e
                }
            })
        }
    };
    leave_to_exit(nodes);
    result
}

fn header(args: &CompactArgs, what: &str) -> String {
    format!(
        "kompactor {what} for {} (windows {}, min-age {}, at most {} rows per file)",
        args.data_dir.path().display(),
        match args.plan.window {
            Some(w) => format!("{w} at every age"),
            None => format!("by age {}", args.plan.tiers),
        },
        format_duration(args.plan.min_age),
        args.plan.max_rows_per_file
    )
}

fn options(args: &CompactArgs) -> RunOptions {
    RunOptions {
        hosts: args.hosts.hosts.clone(),
        window: args.plan.window.map(|w| w.to_string()),
        tiers: args.plan.widths().to_string(),
        writer_reach: args.plan.writer_reach.0.map(format_duration),
        keep_duplicates: args.plan.keep_duplicates,
        min_age: format_duration(args.plan.min_age),
        max_rows_per_file: args.plan.max_rows_per_file,
        threads: args.engine.threads,
        memory_limit: args.engine.memory_limit.to_string(),
        dry_run: args.dry_run,
        include_hidden: args.plan.include_hidden,
        load_window: args.plan.server.load_window,
    }
}

fn plan_doc(args: &CompactArgs, nodes: Vec<NodeReport>, space: SpaceEstimate) -> PlanDoc {
    PlanDoc {
        format_version: json::FORMAT_VERSION,
        data_dir: args.data_dir.path().display().to_string(),
        dry_run: args.dry_run,
        options: options(args),
        space,
        nodes,
    }
}

/// What a run knows before it changes anything.
struct Planned<'a> {
    nodes: &'a [Node],
    /// Per node, per table.
    plans: Vec<Vec<TablePlan>>,
    space: SpaceEstimate,
    /// Seconds spent reading the nodes and planning.
    read_and_plan: f64,
}

fn dry_run(args: &CompactArgs, quiet: bool, verbose: bool, planned: Planned) -> Result<ExitCode> {
    let Planned {
        nodes,
        plans,
        space,
        ..
    } = planned;
    let reports: Vec<NodeReport> = nodes
        .iter()
        .zip(plans)
        .map(|(n, t)| NodeReport::new(n, t))
        .collect();
    if args.json {
        json::print(&plan_doc(args, reports, space));
    } else if !quiet {
        print!(
            "{}",
            plan_text(
                &reports,
                &header(args, "dry run (nothing is changed)"),
                verbose
            )
        );
        println!("\ndisk: {}", space.summary());
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn compact(
    args: &CompactArgs,
    quiet: bool,
    run_id: &str,
    planned: Planned,
    lock: &Lock,
) -> Result<ExitCode> {
    let Planned {
        nodes,
        plans,
        space,
        read_and_plan,
    } = planned;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let data_dir = args.data_dir.path();
    let dirs = RunDirs::new(data_dir, run_id);
    log_findings(nodes);
    // Purged entries alone are worth a commit: it drops them from the metadata.
    let purged_entries: usize = nodes
        .iter()
        .flat_map(|n| n.purged.values())
        .map(|t| t.entries.len())
        .sum();
    let total_groups: usize = plans.iter().flatten().map(|p| p.groups.len()).sum();
    let blocked: usize = plans
        .iter()
        .flatten()
        .map(|p| p.skipped.iter().filter(|k| k.blocked).count())
        .sum();
    let changes = total_groups > 0 || purged_entries > 0;
    let mut report = RunReport {
        format_version: json::FORMAT_VERSION,
        run_id: run_id.to_string(),
        data_dir: data_dir.display().to_string(),
        started: started_at.to_rfc3339(),
        finished: String::new(),
        seconds: 0.0,
        phases: Phases {
            read_and_plan,
            ..Phases::default()
        },
        options: options(args),
        nodes: Vec::new(),
    };
    let mut failures = 0;
    if changes {
        lock.record_holder();
        dirs.set_state(RunState::Merging)?;
        let reports: Vec<NodeReport> = nodes
            .iter()
            .zip(plans.iter())
            .map(|(n, t)| NodeReport::new(n, t.clone()))
            .collect();
        let plan = json::to_string(&plan_doc(args, reports, space));
        dirs.write_run_file("plan.json", plan.as_bytes(), None)?;
        let done = compaction::merge_and_commit(compaction::Job {
            nodes,
            plans: &plans,
            dirs: &dirs,
            engine: args.engine.engine_options(dirs.tmp().join("spill")),
            rules: args.plan.rules(),
            allow_running_server: args.server_check.allow_running_server,
        })?;
        failures = done.failures;
        report.nodes = done.nodes;
        report.phases.merge = done.merge_seconds;
        report.phases.commit = done.commit_seconds;
    } else {
        report.nodes = nodes
            .iter()
            .zip(&plans)
            .map(|(n, tables)| NodeRun::untouched(&n.id, tables))
            .collect();
    }
    // Prepared windows not taken by now belong to windows that changed: of no more use.
    Prepared::remove_all(data_dir)?;
    report.seconds = started.elapsed().as_secs_f64();
    report.finished = chrono::Utc::now().to_rfc3339();
    if changes {
        dirs.write_run_file("report.json", json::to_string(&report).as_bytes(), None)?;
    }
    if args.json {
        json::print(&report);
    } else if !quiet {
        print!("{}", run_text(&report));
    }
    Ok(ExitCode::from(if failures + blocked > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }))
}

/// Logs what discovery found: purged and hidden entries are normal state (the report counts
/// them); the rest is worth a warning, a few lines per kind however many files it concerns.
fn log_findings(nodes: &[Node]) {
    for n in nodes {
        let (info, warn): (Vec<Finding>, Vec<Finding>) = n
            .findings
            .iter()
            .cloned()
            .partition(|f| matches!(f, Finding::Purged { .. } | Finding::Hidden { .. }));
        for l in summarize(&info, false) {
            log::info!("node {}: {l}", n.id);
        }
        for l in summarize(&warn, false) {
            log::warn!("node {}: {l}", n.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::plan::PlanOptions;
    use clap::Parser;

    #[test]
    fn the_command_lines_defaults_are_the_plans_defaults() {
        let cli = crate::commands::Cli::parse_from(["kompactor", "/data", "--hosts", "n"]);
        let a = &cli.compact.plan;
        let d = PlanOptions::default();
        assert_eq!(
            (a.widths(), a.min_age, a.max_rows_per_file, a.include_hidden),
            (d.tiers, d.min_age, d.max_rows_per_file, d.include_hidden)
        );
    }
}
