//! A planned compaction's work: merge each window (or take what `prepare` made of it while
//! the server ran), make the outputs durable, stage every node's commit and apply them all
//! in one journaled step.

use crate::durable::apply::{apply_or_recover, recover};
use crate::durable::fsutil::{create_dir_all, Batch};
use crate::durable::interlock::refuse_if_in_use;
use crate::durable::journal::{Manifest, RunDirs};
use crate::error::Result;
use crate::format::ids::TableKey;
use crate::pipeline::commit::{prepare_node, Change, Committed};
use crate::pipeline::discover::Node;
use crate::pipeline::merge::{Engine, EngineOptions, MergeRules, Merged};
use crate::pipeline::plan::{Group, SeenWriters, TablePlan};
use crate::pipeline::prepared::Prepared;
use crate::pipeline::report::{GroupFailure, NodeRun, TableOutcome, TableRun};
use crate::pipeline::workers::{merge_all, GroupResult};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// What a compaction merges and commits, and how.
pub struct Job<'a> {
    pub nodes: &'a [Node],
    /// Per node, per table.
    pub plans: &'a [Vec<TablePlan>],
    /// The run's directories under `.kompactor/runs/`.
    pub dirs: &'a RunDirs,
    /// DuckDB's settings; its spill directory is the run's `tmp/spill`.
    pub engine: EngineOptions,
    pub rules: MergeRules,
    /// Commit even if a server seems to use the data dir (`--allow-running-server`).
    pub allow_running_server: bool,
}

/// What a compaction did.
pub struct Done {
    /// Each node's outcome, with what it committed.
    pub nodes: Vec<NodeRun>,
    /// Windows whose merge failed (their inputs stay).
    pub failures: usize,
    /// Seconds spent merging (and taking prepared windows), and committing.
    pub merge_seconds: f64,
    pub commit_seconds: f64,
}

/// Merges every planned window, then commits every node that changes.
///
/// A full disk stops the run at the first window it fails (every later one would fail
/// too); any other failed window is reported and its inputs stay.
pub fn merge_and_commit(job: Job) -> Result<Done> {
    let data_dir = job.dirs.data_dir.as_path();
    let out_dir = job.dirs.tmp().join("out");
    create_dir_all(&job.engine.spill_dir)?;
    create_dir_all(&out_dir)?;
    let total_groups: usize = job.plans.iter().flatten().map(|p| p.groups.len()).sum();
    let rows_total: u64 = job
        .plans
        .iter()
        .flatten()
        .flat_map(|p| &p.groups)
        .map(|g| g.rows)
        .sum();
    let jobs: Vec<&Group> = job.plans.iter().flatten().flat_map(|t| &t.groups).collect();
    let t = Instant::now();
    let store = Prepared::load(data_dir)?;
    let (results, prepared) = take_prepared_then_merge(&store, &jobs, data_dir, &out_dir, &job)?;
    if let Some(i) = results
        .iter()
        .position(|(r, _)| r.as_ref().is_err_and(|e| e.out_of_space))
    {
        let (r, _) = results.into_iter().nth(i).expect("found");
        return Err(r.expect_err("an error"));
    }
    make_durable(&results, &prepared)?;
    let merge_seconds = t.elapsed().as_secs_f64();
    // Checked again before anything in the nodes changes: a merge can take hours, and a
    // server started meanwhile would write beside the commit, even into a window
    // directory that the commit, going by what discovery listed, moves whole.
    refuse_if_in_use(data_dir, job.allow_running_server)?;
    let commit_started = Instant::now();
    log::debug!("{} heap trims skipped", crate::heap::trims_skipped());
    let mut staged = stage_nodes(job.nodes, job.plans, results, prepared, job.dirs, &store)?;
    log::info!(
        "merged {} of {total_groups} group(s), {rows_total} input rows",
        total_groups - staged.failures
    );
    if staged.manifest.nodes.is_empty() {
        recover(data_dir, false)?;
    } else {
        let t = Instant::now();
        apply_or_recover(job.dirs, &staged.manifest)?;
        remember_writers(data_dir, job.nodes, job.plans);
        log::debug!("committing took {:.2}s", t.elapsed().as_secs_f64());
        for n in &mut staged.nodes {
            n.committed = staged.committed.remove(&n.node);
        }
    }
    Ok(Done {
        nodes: staged.nodes,
        failures: staged.failures,
        merge_seconds,
        commit_seconds: commit_started.elapsed().as_secs_f64(),
    })
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
    job: &Job,
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
        let engine = Engine::new(&job.engine)?;
        merge_all(
            &engine,
            &fresh,
            data_dir,
            out_dir,
            job.engine.threads,
            job.rules,
        )?
    }
    .into_iter();
    let results = taken
        .into_iter()
        .map(|t| t.unwrap_or_else(|| merged.next().expect("one result per fresh job")))
        .collect();
    Ok((results, used))
}
