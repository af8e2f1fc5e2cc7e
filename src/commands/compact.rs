//! The default command: plan, then either show the plan (dry run) or merge, verify, commit
//! and report.

use crate::commands::args::{DataDir, EngineArgs, Hosts, PlanArgs, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK, EXIT_PARTIAL};
use crate::durable::apply::{apply_or_recover, recover};
use crate::durable::fsutil::{create_dir_all, Batch};
use crate::durable::interlock::{refuse_if_in_use, Lock};
use crate::durable::journal::{Manifest, RunDirs, RunState, GUARD_NAME};
use crate::error::{Error, Result};
use crate::format::ids::TableKey;
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::commit::{prepare_node, Change, Committed};
use crate::pipeline::discover::{discover_all, leave_to_exit, summarize, Finding, Node};
use crate::pipeline::merge::{Engine, Merged};
use crate::pipeline::plan::{plan_node, Group, SeenWriters, TablePlan};
use crate::pipeline::prepared::Prepared;
use crate::pipeline::report::{
    plan_text, run_text, GroupFailure, NodeReport, NodeRun, Phases, PlanDoc, RunOptions, RunReport,
    TableOutcome, TableRun,
};
use crate::pipeline::space::{estimate, SpaceEstimate};
use crate::pipeline::workers::{merge_all, GroupResult};
use crate::units::format_duration;
use clap::Args;
use std::collections::BTreeMap;
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
    if total_groups > 0 || purged_entries > 0 {
        lock.record_holder();
        dirs.set_state(RunState::Merging)?;
        let reports: Vec<NodeReport> = nodes
            .iter()
            .zip(plans.iter())
            .map(|(n, t)| NodeReport::new(n, t.clone()))
            .collect();
        let plan = json::to_string(&plan_doc(args, reports, space));
        dirs.write_run_file("plan.json", plan.as_bytes(), None)?;
        let spill = dirs.tmp().join("spill");
        let out_dir = dirs.tmp().join("out");
        create_dir_all(&spill)?;
        create_dir_all(&out_dir)?;
        let rows_total: u64 = plans
            .iter()
            .flatten()
            .flat_map(|p| &p.groups)
            .map(|g| g.rows)
            .sum();
        let jobs: Vec<&Group> = plans.iter().flatten().flat_map(|t| &t.groups).collect();
        let t = Instant::now();
        let store = Prepared::load(data_dir)?;
        let (results, prepared) =
            take_prepared_then_merge(&store, &jobs, data_dir, &out_dir, &spill, args)?;
        // A full disk would fail every window after it too: the run stops there.
        if let Some(i) = results
            .iter()
            .position(|(r, _)| r.as_ref().is_err_and(|e| e.out_of_space))
        {
            let (r, _) = results.into_iter().nth(i).expect("found");
            return Err(r.expect_err("an error"));
        }
        make_durable(&results, &prepared)?;
        report.phases.merge = t.elapsed().as_secs_f64();
        // Checked again before anything in the nodes changes: a merge can take hours, and a
        // server started meanwhile would write beside the commit, even into a window
        // directory that the commit, going by what discovery listed, moves whole.
        refuse_if_in_use(data_dir, args.server_check.allow_running_server)?;
        let commit_started = Instant::now();
        log::debug!("{} heap trims skipped", crate::heap::trims_skipped());
        let mut staged = stage_nodes(nodes, &plans, results, prepared, &dirs, &store)?;
        failures = staged.failures;
        report.nodes = std::mem::take(&mut staged.nodes);
        log::info!(
            "merged {} of {total_groups} group(s), {rows_total} input rows",
            total_groups - failures
        );
        if staged.manifest.nodes.is_empty() {
            recover(data_dir, false)?;
        } else {
            let t = Instant::now();
            apply_or_recover(&dirs, &staged.manifest)?;
            remember_writers(data_dir, nodes, &plans);
            log::debug!("committing took {:.2}s", t.elapsed().as_secs_f64());
            for n in &mut report.nodes {
                n.committed = staged.committed.remove(&n.node);
            }
        }
        report.phases.commit = commit_started.elapsed().as_secs_f64();
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
    if total_groups > 0 || purged_entries > 0 {
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

/// Makes the merged outputs durable together, before anything refers to them: they were
/// written without an fsync each (a worker would wait for the disk once a window). A prepared
/// window's files were made durable by `prepare`; only their move is new.
fn make_durable(results: &[GroupResult], prepared: &[bool]) -> Result<()> {
    let mut outputs = Batch::default();
    for ((m, _), was_prepared) in results.iter().zip(prepared) {
        for o in m.iter().flat_map(|m| &m.outputs) {
            if *was_prepared {
                outputs.adopt_moved(&o.tmp_path);
            } else {
                outputs.adopt(&o.tmp_path);
            }
        }
    }
    outputs.finish()
}

/// What staging every node's merged windows gave: each node's outcomes, the manifest of the
/// nodes that change, and their commits to be.
struct Staged {
    nodes: Vec<NodeRun>,
    manifest: Manifest,
    committed: BTreeMap<String, Committed>,
    /// Windows whose merge failed (their inputs stay).
    failures: usize,
}

/// Accounts for each window's result (in job order) and stages the new metadata of every
/// node that changes.
fn stage_nodes(
    nodes: &[Node],
    plans: &[Vec<TablePlan>],
    results: Vec<GroupResult>,
    prepared: Vec<bool>,
    dirs: &RunDirs,
    store: &Prepared,
) -> Result<Staged> {
    let mut staged = Staged {
        nodes: Vec::new(),
        manifest: Manifest::default(),
        committed: BTreeMap::new(),
        failures: 0,
    };
    let mut results = results.into_iter();
    let mut prepared = prepared.into_iter();
    for (node, tables) in nodes.iter().zip(plans) {
        let mut merged: Vec<(&Group, Merged)> = Vec::new();
        let mut outcomes: BTreeMap<TableKey, TableOutcome> = BTreeMap::new();
        for t in tables {
            let o = outcomes
                .entry(t.table)
                .or_insert_with(|| TableOutcome::before(t));
            for g in &t.groups {
                let (result, secs) = results.next().expect("one result per group");
                let was_prepared = prepared.next().expect("one flag per group");
                o.seconds += secs;
                match result {
                    Ok(m) => {
                        o.merged(g, &m);
                        o.windows_prepared += usize::from(was_prepared);
                        merged.push((g, m));
                    }
                    Err(e) => {
                        staged.failures += 1;
                        log::warn!(
                            "node {} table {} window {}: skipped: {e}",
                            node.id,
                            t.label,
                            g.window_start.to_rfc3339()
                        );
                        o.groups_failed.push(GroupFailure {
                            window_start: g.window_start.to_rfc3339(),
                            inputs: g.inputs.len(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        if !merged.is_empty() || !node.purged.is_empty() {
            let changes: Vec<Change> = merged.iter().map(|(g, m)| Change::merge(g, m)).collect();
            let t = Instant::now();
            let (m, c) = prepare_node(node, &changes, dirs, Some(store))?;
            log::debug!(
                "node {}: staging the metadata took {:.2}s",
                node.id,
                t.elapsed().as_secs_f64()
            );
            staged.manifest.nodes.push(m);
            staged.committed.insert(node.id.clone(), c);
        }
        staged.nodes.push(NodeRun {
            node: node.id.clone(),
            committed: None,
            tables: tables
                .iter()
                .map(|t| TableRun::new(t, outcomes.remove(&t.table).unwrap_or_default()))
                .collect(),
        });
    }
    Ok(staged)
}

/// Keeps what this run saw of each table's writers for the next runs: merging the late
/// files erased the evidence. A failure to write it costs only wider 10-minute windows later
/// than they would have been, so it is logged, not fatal.
fn remember_writers(data_dir: &Path, nodes: &[Node], plans: &[Vec<TablePlan>]) {
    let mut seen = SeenWriters::load(data_dir);
    for (n, tables) in nodes.iter().zip(plans) {
        seen.remember(&n.id, tables.iter().map(|t| (t.table, t.writers)));
    }
    if let Err(e) = seen.save(data_dir) {
        log::warn!("could not record what the writers did: {e}");
    }
}

/// Takes the windows prepared while the server ran (checked against their inputs, and
/// their files byte for byte) and merges the others, starting DuckDB only if there are any;
/// results and whether each came prepared, in job order.
fn take_prepared_then_merge(
    store: &Prepared,
    jobs: &[&Group],
    data_dir: &Path,
    out_dir: &Path,
    spill: &Path,
    args: &CompactArgs,
) -> Result<(Vec<GroupResult>, Vec<bool>)> {
    let mut taken: Vec<Option<GroupResult>> = Vec::with_capacity(jobs.len());
    let mut fresh: Vec<&Group> = Vec::new();
    // One warning however many windows: each is listed at debug level.
    let mut rejected: Vec<String> = Vec::new();
    for g in jobs {
        let t = Instant::now();
        match store.take(g, out_dir) {
            Ok(Some(m)) => taken.push(Some((Ok(m), t.elapsed().as_secs_f64()))),
            Ok(None) => {
                taken.push(None);
                fresh.push(g);
            }
            Err(why) => {
                let what = format!(
                    "node {} table {} window {}: {why}",
                    g.node,
                    g.table,
                    g.window_start.to_rfc3339()
                );
                log::debug!("prepared window not used: {what}");
                rejected.push(what);
                taken.push(None);
                fresh.push(g);
            }
        }
    }
    if let Some(first) = rejected.first() {
        log::warn!(
            "{} prepared window(s) failed their check and are merged now (first: {first})",
            rejected.len()
        );
    }
    let used: Vec<bool> = taken.iter().map(Option::is_some).collect();
    let unused = store.unused(jobs, &used);
    for w in &unused {
        log::debug!(
            "node {} table {} window {}: prepared window not used: {}",
            w.node,
            w.table,
            w.window_start.to_rfc3339(),
            w.reason
        );
    }
    if let Some(w) = unused.first() {
        log::info!("{} prepared window(s) not used: {}", unused.len(), w.reason);
    }
    let mut merged = if fresh.is_empty() {
        Vec::new()
    } else {
        let engine = Engine::new(&args.engine.engine_options(spill.to_path_buf()))?;
        merge_all(
            &engine,
            &fresh,
            data_dir,
            out_dir,
            args.engine.threads,
            args.plan.rules(),
        )?
    }
    .into_iter();
    let results = taken
        .into_iter()
        .map(|t| t.unwrap_or_else(|| merged.next().expect("one result per fresh job")))
        .collect();
    Ok((results, used))
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
