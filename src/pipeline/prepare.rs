//! `prepare`'s work: merge while the server runs and keep each verified window, with the
//! metadata files its commit will rewrite, under `.kompactor/prepared/`.

use crate::durable::fsutil::create_dir_all;
use crate::durable::journal::RunDirs;
use crate::error::{Error, Result};
use crate::pipeline::commit::{compute_node, Change};
use crate::pipeline::discover::{discover_all, Node};
use crate::pipeline::merge::{Engine, EngineOptions, MergeRules, Merged};
use crate::pipeline::plan::{Group, TablePlan};
use crate::pipeline::prepared::PreparedWriter;
use crate::pipeline::workers::merge_all;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often discovery is tried again when the server changes the metadata meanwhile.
const READ_ATTEMPTS: usize = 10;

/// What `prepare` kept.
pub struct Outcome {
    /// Windows merged, verified and kept for the next compaction.
    pub windows_prepared: usize,
    /// Windows whose merge failed (the compaction merges them itself).
    pub windows_failed: usize,
    /// Bytes the prepared files take under `.kompactor/prepared/`.
    pub bytes: u64,
}

/// Merges every planned window of `nodes` (DuckDB set up by `engine`, given the spill
/// directory) and keeps those that merged, as prepare `prepare_id`.
pub fn merge_and_keep(
    data_dir: &Path,
    nodes: &[Node],
    plans: &[Vec<TablePlan>],
    prepare_id: &str,
    engine: impl FnOnce(PathBuf) -> EngineOptions,
    rules: MergeRules,
) -> Result<Outcome> {
    let jobs: Vec<&Group> = plans.iter().flatten().flat_map(|t| &t.groups).collect();

    let tmp = RunDirs::new(data_dir, prepare_id).tmp();
    let (spill, out_dir) = (tmp.join("spill"), tmp.join("out"));
    create_dir_all(&spill)?;
    create_dir_all(&out_dir)?;
    // The scratch directory goes whatever happens; the prepared files are moved out of it.
    let _scratch = RemoveOnDrop(&tmp);
    let opts = engine(spill);
    let engine = Engine::new(&opts)?;
    let results = merge_all(&engine, &jobs, data_dir, &out_dir, opts.threads, rules)?;
    drop(engine);
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
    let (kept, bytes) = keep(data_dir, nodes, prepare_id, merged)?;
    Ok(Outcome {
        windows_prepared: kept,
        windows_failed: failed,
        bytes,
    })
}

/// Writes the merged windows, and the metadata files their commit rewrites, into the
/// prepared store; how many windows it holds, and the bytes they take.
fn keep(
    data_dir: &Path,
    nodes: &[Node],
    prepare_id: &str,
    merged: Vec<(&Group, Merged)>,
) -> Result<(usize, u64)> {
    let mut writer = PreparedWriter::new(data_dir, prepare_id)?;
    // The metadata files the commit of these windows rewrites, written now while the server
    // runs; the commit takes those whose bytes are still exactly what it needs.
    let dirs = RunDirs::new(data_dir, prepare_id);
    for node in nodes {
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
    Ok((manifest.windows.len(), bytes))
}

/// Reads the nodes while the server may be writing: the read counts only if no snapshot or
/// checkpoint file appeared, changed or vanished while it ran (a read that failed on a
/// file being written counts as changed too). Otherwise it is tried again, a few times.
///
/// The server puts each metadata file in place whole (written under a temporary name, then
/// renamed), so a settled read is the state after some snapshot: never a torn or mixed view.
pub fn discover_settled(
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
