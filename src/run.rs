//! One invocation: discover, plan, then either report (dry run) or merge, commit and report.

use crate::cli::{format_duration, Args};
use crate::commit::{commit_node, RunDirs, GUARD_NAME};
use crate::discover::{check_hosts, discover_node, Node, STATE_DIR};
use crate::error::{Error, Result};
use crate::fsutil::create_dir_all;
use crate::merge::{merge_group, Engine, Merged};
use crate::parquet::read_footers;
use crate::plan::{plan_node, Group, PlanOptions, TablePlan};
use crate::report::{
    plan_text, run_text, GroupFailure, NodeReport, NodeRun, RunReport, TableOutcome,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Exit status: everything planned was done (or there was nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit status: an error stopped the run before anything changed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: some groups were merged, others were skipped (the summary says why).
pub const EXIT_PARTIAL: u8 = 3;

/// Runs the default command.
pub fn execute(args: &Args) -> Result<ExitCode> {
    if args.window.0 <= 0 {
        return Err(Error::new("--window must be longer than zero"));
    }
    let data_dir = &args.data_dir;
    check_hosts(data_dir, &args.hosts)?;
    for h in &args.hosts {
        let guard = data_dir.join(h).join("snapshots").join(GUARD_NAME);
        if guard.exists() {
            return Err(Error::at(&guard, "an earlier kompactor commit on this node did not finish")
                .hint("this version cannot resume it: restore the files listed under .kompactor/runs/<run-id>/original/ and remove this guard file, then run again"));
        }
    }
    // Taken before reading anything, so that no other run can commit between our reading
    // the metadata and our commit. A dry run takes no lock: it must not create a file.
    let lock = if args.dry_run {
        None
    } else {
        Some(lock(&data_dir.join(STATE_DIR))?)
    };
    let opts = PlanOptions {
        window: args.window,
        min_age: args.min_age,
        max_rows_per_file: args.max_rows_per_file,
    };
    let run_id = new_run_id();
    let mut nodes = Vec::new();
    for h in &args.hosts {
        log::info!("reading node {h}");
        nodes.push(discover_node(data_dir, h)?);
    }
    let plans: Vec<Vec<TablePlan>> = nodes.iter().map(|n| plan_node(n, &opts, &run_id)).collect();

    if args.dry_run {
        dry_run(args, &nodes, plans)
    } else {
        compact(
            args,
            &run_id,
            &nodes,
            plans,
            lock.expect("taken for a real run"),
        )
    }
}

fn header(args: &Args, what: &str) -> String {
    format!(
        "kompactor {what} for {} (window {}, min-age {}, at most {} rows per file)",
        args.data_dir.display(),
        format_duration(args.window),
        format_duration(args.min_age),
        args.max_rows_per_file
    )
}

fn dry_run(args: &Args, nodes: &[Node], plans: Vec<Vec<TablePlan>>) -> Result<ExitCode> {
    // Read every input footer now, so that a file the run could not merge shows up here.
    let conn = duckdb::Connection::open_in_memory()?;
    for p in plans.iter().flatten() {
        for g in &p.groups {
            let paths: Vec<PathBuf> = g
                .inputs
                .iter()
                .map(|f| args.data_dir.join(&f.entry.path))
                .collect();
            read_footers(&conn, &paths)?;
        }
    }
    let reports: Vec<NodeReport> = nodes
        .iter()
        .zip(plans)
        .map(|(n, t)| NodeReport::new(n, t))
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "data_dir": args.data_dir.display().to_string(),
            "dry_run": true,
            "options": {
                "window": format_duration(args.window),
                "min_age": format_duration(args.min_age),
                "max_rows_per_file": args.max_rows_per_file,
            },
            "nodes": reports,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plan serialises")
        );
    } else if !args.quiet {
        print!(
            "{}",
            plan_text(
                &reports,
                &header(args, "dry run (nothing is changed)"),
                args.verbose
            )
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// A run id: UTC time and process id, sortable and unique on one machine.
fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

/// Holds `.kompactor/lock` for the life of the run.
struct Lock {
    file: fs::File,
}

fn lock(state: &Path) -> Result<Lock> {
    create_dir_all(state)?;
    let path = state.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, "open the lock file", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::at(
                &path,
                format!(
                    "another kompactor is working on this data dir ({})",
                    holder.trim()
                ),
            )
            .hint("wait for it to finish; two runs at once could corrupt the metadata"));
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
    }
    Ok(Lock { file })
}

impl Lock {
    /// Records who holds the lock, for a second run's message. Done only by a run that is
    /// about to change something, so that a run with nothing to do leaves every file as it was.
    fn record_holder(&self) {
        use std::io::Write;
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = writeln!(f, "pid {}", std::process::id());
    }
}

fn compact(
    args: &Args,
    run_id: &str,
    nodes: &[Node],
    plans: Vec<Vec<TablePlan>>,
    lock: Lock,
) -> Result<ExitCode> {
    let started = Instant::now();
    let dirs = RunDirs {
        data_dir: args.data_dir.clone(),
        run_id: run_id.to_string(),
    };
    for n in nodes {
        for f in &n.findings {
            log::warn!("node {}: {}", n.id, f.describe());
        }
    }
    let total_groups: usize = plans.iter().flatten().map(|p| p.groups.len()).sum();
    let mut report = RunReport {
        run_id: run_id.to_string(),
        data_dir: args.data_dir.display().to_string(),
        seconds: 0.0,
        nodes: Vec::new(),
    };
    let mut failures = 0;
    if total_groups > 0 {
        lock.record_holder();
        create_dir_all(&dirs.run())?;
        let plan_doc: Vec<NodeReport> = nodes
            .iter()
            .zip(plans.iter())
            .map(|(n, t)| NodeReport::new(n, t.clone()))
            .collect();
        crate::fsutil::atomic_write(
            &dirs.run().join("plan.json"),
            &serde_json::to_vec_pretty(&plan_doc).expect("plan serialises"),
            &dirs.tmp(),
            None,
        )?;
    }
    let spill = dirs.tmp().join("spill");
    let engine = if total_groups > 0 {
        create_dir_all(&spill)?;
        Some(Engine::new(&spill)?)
    } else {
        None
    };
    for (node, tables) in nodes.iter().zip(&plans) {
        let mut merged: Vec<(&Group, Merged)> = Vec::new();
        let mut outcomes: BTreeMap<crate::types::TableKey, TableOutcome> = BTreeMap::new();
        for t in tables {
            let o = outcomes.entry(t.table).or_default();
            o.files_before = t.files_now;
            o.files_after = t.files_now;
            o.rows_in_files_before = t.rows;
            o.rows_after = t.rows;
            o.bytes_before = t.bytes;
            o.bytes_after = t.bytes;
            for g in &t.groups {
                let engine = engine
                    .as_ref()
                    .expect("engine exists when there are groups");
                let out_dir = dirs.tmp().join("out");
                create_dir_all(&out_dir)?;
                log::info!(
                    "node {} table {} window {}: merging {} files",
                    node.id,
                    t.label,
                    g.window_start.to_rfc3339(),
                    g.inputs.len()
                );
                match merge_group(engine, &args.data_dir, g, &out_dir, args.max_rows_per_file) {
                    Ok(m) => {
                        o.groups_merged += 1;
                        o.files_after = o.files_after + m.outputs.len() - g.inputs.len();
                        o.rows_after = o.rows_after + m.rows_out - m.rows_in;
                        o.duplicates_removed += m.rows_in - m.rows_out;
                        o.bytes_after = o.bytes_after
                            + m.outputs.iter().map(|x| x.size_bytes).sum::<u64>()
                            - g.bytes;
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
        let committed = if merged.is_empty() {
            None
        } else {
            Some(commit_node(node, &merged, &dirs)?)
        };
        report.nodes.push(NodeRun {
            node: node.id.clone(),
            committed,
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
    if dirs.tmp().exists() {
        fs::remove_dir_all(dirs.tmp())
            .map_err(|e| Error::io(dirs.tmp(), "remove the temporary directory", e))?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else if !args.quiet {
        print!("{}", run_text(&report));
    }
    Ok(ExitCode::from(if failures > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }))
}
