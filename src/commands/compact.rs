//! One invocation: recover what an earlier run left unfinished, then plan, and either report
//! (dry run) or merge, stage, commit and report.

use crate::commands::{Cli, Command, CompactArgs};
use crate::units::format_duration;
use crate::pipeline::commit::{prepare_node, Change, Committed};
use crate::pipeline::discover::{check_hosts, discover_all, Node};
use crate::error::{Error, Result};
use crate::durable::fsutil::create_dir_all;
use crate::durable::interlock::{for_change, Lock};
use crate::durable::journal::{self, failpoint, Manifest, Recovery, RunDirs, RunState, GUARD_NAME};
use crate::pipeline::merge::{merge_group, Engine, EngineOptions, Merged};
use crate::format::parquet::read_footers;
use crate::pipeline::plan::{plan_node, Group, PlanOptions, TablePlan};
use crate::progress;
use crate::pipeline::report::{
    plan_text, run_text, GroupFailure, NodeReport, NodeRun, RunReport, TableOutcome,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit status: everything planned was done (or there was nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit status: an error stopped the run; nothing was changed (or recovery can finish it).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: some groups were merged, others were skipped (the summary says why).
pub const EXIT_PARTIAL: u8 = 3;
/// Exit status of `verify`: the data dir has problems.
pub const EXIT_INCONSISTENT: u8 = 4;

/// Runs the command line.
pub fn main(cli: &Cli) -> Result<ExitCode> {
    let json = match &cli.command {
        None => cli.compact.json,
        Some(Command::Status(a) | Command::Verify(a)) => a.json,
        Some(_) => false,
    };
    if cli.quiet || json {
        progress::hide();
    }
    match &cli.command {
        None => execute(&cli.compact, cli.quiet, cli.verbose),
        Some(Command::Status(a)) => crate::commands::inspect::status(a),
        Some(Command::Verify(a)) => crate::commands::inspect::verify(a, cli.quiet),
        Some(Command::Runs(a)) => crate::commands::runs::list(a),
        Some(Command::Undo(a)) => crate::commands::runs::undo(a, cli.quiet),
        Some(Command::Purge(a)) => crate::commands::runs::purge(a, cli.quiet),
        Some(Command::Archive(a)) => crate::commands::archive::archive(a, cli.quiet),
        Some(Command::Restore(a)) => crate::commands::archive::restore(a, cli.quiet),
    }
}

/// Brings unfinished runs to an end (or, for a dry run, says it would), under the lock.
pub fn recover_first(data_dir: &Path, report_only: bool, quiet: bool) -> Result<Vec<Recovery>> {
    let done = journal::recover(data_dir, report_only)?;
    for r in &done {
        let verb = if report_only { "would be" } else { "was" };
        let action = r.action;
        // Shown even with --quiet: the operator must know an earlier run was interrupted.
        let _ = quiet;
        eprintln!(
            "kompactor: recovery: unfinished run {} ({:?}) {verb} {action}",
            r.run_id, r.was
        );
    }
    Ok(done)
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

fn execute(args: &CompactArgs, quiet: bool, verbose: bool) -> Result<ExitCode> {
    if args.window.0 <= 0 {
        return Err(Error::new("--window must be longer than zero"));
    }
    let data_dir = args.data_dir.path();
    let hosts = &args.hosts.hosts;
    check_hosts(data_dir, hosts)?;
    // A dry run takes no lock and recovers nothing: it must not create or change a file.
    // Taken before reading anything, so that no other run can commit between our reading
    // the metadata and our commit.
    let lock = for_change(data_dir, args.dry_run, args.engine.allow_running_server)?;
    recover_first(data_dir, args.dry_run, quiet)?;
    if !args.dry_run {
        refuse_orphan_guards(data_dir, hosts)?;
    }
    let opts = PlanOptions {
        window: args.window,
        min_age: args.min_age,
        max_rows_per_file: args.max_rows_per_file,
    };
    let run_id = new_run_id();
    let nodes = discover_all(data_dir, hosts)?;
    let plans: Vec<Vec<TablePlan>> = nodes.iter().map(|n| plan_node(n, &opts, &run_id)).collect();
    match lock {
        None => dry_run(args, quiet, verbose, &nodes, plans),
        Some(lock) => compact(args, quiet, &run_id, &nodes, plans, lock),
    }
}

fn header(args: &CompactArgs, what: &str) -> String {
    format!(
        "kompactor {what} for {} (window {}, min-age {}, at most {} rows per file)",
        args.data_dir.path().display(),
        format_duration(args.window),
        format_duration(args.min_age),
        args.max_rows_per_file
    )
}

fn options_json(args: &CompactArgs) -> serde_json::Value {
    serde_json::json!({
        "hosts": args.hosts.hosts,
        "window": format_duration(args.window),
        "min_age": format_duration(args.min_age),
        "max_rows_per_file": args.max_rows_per_file,
        "threads": args.engine.threads,
        "memory_limit": args.engine.memory_limit,
        "dry_run": args.dry_run,
    })
}

fn dry_run(
    args: &CompactArgs,
    quiet: bool,
    verbose: bool,
    nodes: &[Node],
    plans: Vec<Vec<TablePlan>>,
) -> Result<ExitCode> {
    // Read every input footer now, so that a file the run could not merge shows up here.
    let data_dir = args.data_dir.path();
    for p in plans.iter().flatten() {
        for g in &p.groups {
            let paths: Vec<PathBuf> = g
                .inputs
                .iter()
                .map(|f| data_dir.join(&f.entry.path))
                .collect();
            read_footers(&paths)?;
        }
    }
    let reports: Vec<NodeReport> = nodes
        .iter()
        .zip(plans)
        .map(|(n, t)| NodeReport::new(n, t))
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "dry_run": true,
            "options": options_json(args),
            "nodes": reports,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plan serialises")
        );
    } else if !quiet {
        print!(
            "{}",
            plan_text(
                &reports,
                &header(args, "dry run (nothing is changed)"),
                verbose
            )
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// What merging one group gave, and how long it took (seconds).
type GroupResult = (Result<Merged>, f64);

/// Merges every group, several at a time (small groups are dominated by per-query overhead
/// that does not use DuckDB's threads), each worker on its own DuckDB session of one shared
/// database, so one memory budget bounds them all. Results come back in the order of `jobs`,
/// with the seconds each took.
fn merge_all(
    engine: &Engine,
    jobs: &[&Group],
    data_dir: &Path,
    out_dir: &Path,
    args: &CompactArgs,
) -> Result<Vec<GroupResult>> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.engine.threads.map_or(cpus, |t| t as usize).max(1);
    let workers = threads.clamp(1, 4).min(jobs.len().max(1));
    // The thread budget is split: each worker's queries get an equal share of DuckDB's pool
    // (the calling thread works too), so that workers do not fight over the cores.
    engine.set_threads((threads / workers).max(1))?;
    let engines: Vec<Engine> = (0..workers)
        .map(|_| engine.worker())
        .collect::<Result<_>>()?;
    let results: Vec<Mutex<Option<GroupResult>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let (rows_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    let bar = progress::bar(jobs.len() as u64, "merging");
    let started = Instant::now();
    std::thread::scope(|s| {
        for eng in engines {
            let (next, results, bar) = (&next, &results, &bar);
            let (rows_done, bytes_done) = (&rows_done, &bytes_done);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(g) = jobs.get(i) else { break };
                let t0 = Instant::now();
                let r = merge_group(&eng, data_dir, g, out_dir, args.max_rows_per_file);
                *results[i].lock().expect("no worker panics") =
                    Some((r, t0.elapsed().as_secs_f64()));
                let rows = rows_done.fetch_add(g.rows, Ordering::SeqCst) + g.rows;
                let bytes = bytes_done.fetch_add(g.bytes, Ordering::SeqCst) + g.bytes;
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{} {} | {rows} rows, {:.1} MiB, {:.0} rows/s",
                    g.node,
                    g.window_start.to_rfc3339(),
                    bytes as f64 / 1048576.0,
                    rows as f64 / secs
                ));
                bar.inc(1);
                // A crash here leaves merged outputs only in the temporary directory.
                let _ = failpoint("after-merge-group");
            });
        }
    });
    bar.finish_and_clear();
    Ok(results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no worker panics")
                .expect("every job ran")
        })
        .collect())
}

/// A run id: UTC time and process id, sortable and unique on one machine.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

fn compact(
    args: &CompactArgs,
    quiet: bool,
    run_id: &str,
    nodes: &[Node],
    plans: Vec<Vec<TablePlan>>,
    lock: Lock,
) -> Result<ExitCode> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let data_dir = args.data_dir.path();
    let dirs = RunDirs::new(data_dir, run_id);
    for n in nodes {
        for f in &n.findings {
            if matches!(f, crate::pipeline::discover::Finding::Purged { .. }) {
                log::info!("node {}: {}", n.id, f.describe());
            } else {
                log::warn!("node {}: {}", n.id, f.describe());
            }
        }
    }
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
        run_id: run_id.to_string(),
        data_dir: data_dir.display().to_string(),
        started: started_at.to_rfc3339(),
        finished: String::new(),
        seconds: 0.0,
        options: options_json(args),
        nodes: Vec::new(),
    };
    let mut failures = 0;
    let mut manifest = Manifest::default();
    let mut committed: BTreeMap<String, Committed> = BTreeMap::new();
    if total_groups > 0 || purged_entries > 0 {
        lock.record_holder();
        dirs.set_state(RunState::Merging)?;
        let plan_doc: Vec<NodeReport> = nodes
            .iter()
            .zip(plans.iter())
            .map(|(n, t)| NodeReport::new(n, t.clone()))
            .collect();
        dirs.write_run_file(
            "plan.json",
            &serde_json::to_vec_pretty(&plan_doc).expect("plan serialises"),
            None,
        )?;
        let spill = dirs.tmp().join("spill");
        let out_dir = dirs.tmp().join("out");
        create_dir_all(&spill)?;
        create_dir_all(&out_dir)?;
        let engine = Engine::new(&args.engine.engine_options(spill))?;
        let rows_total: u64 = plans
            .iter()
            .flatten()
            .flat_map(|p| &p.groups)
            .map(|g| g.rows)
            .sum();
        let jobs: Vec<&Group> = plans.iter().flatten().flat_map(|t| &t.groups).collect();
        let t = Instant::now();
        let results = merge_all(&engine, &jobs, data_dir, &out_dir, args)?;
        // The outputs were written without an fsync each (a worker would wait for the disk
        // once a window); they are made durable together, before anything refers to them.
        let mut outputs = crate::durable::fsutil::Batch::default();
        for (m, _) in &results {
            for o in m.iter().flat_map(|m| &m.outputs) {
                outputs.adopt(&o.tmp_path);
            }
        }
        outputs.finish()?;
        let mut results = results.into_iter();
        log::debug!(
            "merging took {:.2}s ({} heap trims skipped)",
            t.elapsed().as_secs_f64(),
            crate::heap::trims_skipped()
        );
        for (node, tables) in nodes.iter().zip(&plans) {
            let mut merged: Vec<(&Group, Merged)> = Vec::new();
            let mut outcomes: BTreeMap<crate::format::ids::TableKey, TableOutcome> = BTreeMap::new();
            for t in tables {
                let o = outcomes
                    .entry(t.table)
                    .or_insert_with(|| TableOutcome::before(t));
                for g in &t.groups {
                    let (result, secs) = results.next().expect("one result per group");
                    o.seconds += secs;
                    match result {
                        Ok(m) => {
                            o.merged(g, &m);
                            merged.push((g, m));
                        }
                        Err(e) => {
                            failures += 1;
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
                let changes: Vec<Change> =
                    merged.iter().map(|(g, m)| Change::merge(g, m)).collect();
                let t = Instant::now();
                let (m, c) = prepare_node(node, &changes, &dirs)?;
                log::debug!(
                    "node {}: staging the metadata took {:.2}s",
                    node.id,
                    t.elapsed().as_secs_f64()
                );
                manifest.nodes.push(m);
                committed.insert(node.id.clone(), c);
            }
            report.nodes.push(NodeRun {
                node: node.id.clone(),
                committed: None,
                tables: tables
                    .iter()
                    .map(|t| {
                        (
                            t.label.clone(),
                            t.table,
                            outcomes.remove(&t.table).unwrap_or_default(),
                        )
                    })
                    .collect(),
            });
        }
        drop(engine);
        log::info!(
            "merged {} of {total_groups} group(s), {rows_total} input rows",
            total_groups - failures
        );
        if manifest.nodes.is_empty() {
            journal::recover(data_dir, false)?;
        } else {
            let t = Instant::now();
            journal::apply_or_recover(&dirs, &manifest)?;
            log::debug!("committing took {:.2}s", t.elapsed().as_secs_f64());
            for n in &mut report.nodes {
                n.committed = committed.remove(&n.node);
            }
        }
    } else {
        report.nodes = nodes
            .iter()
            .zip(&plans)
            .map(|(n, tables)| NodeRun {
                node: n.id.clone(),
                committed: None,
                tables: tables
                    .iter()
                    .map(|t| (t.label.clone(), t.table, TableOutcome::before(t)))
                    .collect(),
            })
            .collect();
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.finished = chrono::Utc::now().to_rfc3339();
    if total_groups > 0 || purged_entries > 0 {
        dirs.write_run_file(
            "report.json",
            &serde_json::to_vec_pretty(&report).expect("report serialises"),
            None,
        )?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else if !quiet {
        print!("{}", run_text(&report));
    }
    drop(lock);
    Ok(ExitCode::from(if failures + blocked > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }))
}
