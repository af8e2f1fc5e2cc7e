//! How much disk a planned run needs, checked against what its filesystem has free.

use crate::durable::failpoint::fault_injected;
use crate::durable::journal::trash_dir;
use crate::durable::space::{free_space, FreeSpace};
use crate::error::{Error, Result};
use crate::format::ids::FileIdSet;
use crate::format::model::DbFiles;
use crate::format::parquet::footer_len;
use crate::pipeline::discover::Node;
use crate::pipeline::plan::{Group, TablePlan};
use crate::pipeline::workers::{parallel_map, parallel_map_io};
use crate::units::{human_bytes, MemoryBudget};
use foldhash::{HashSet, HashSetExt};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The space a run needs on the data dir's filesystem, by what takes it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpaceEstimate {
    /// The merged files: their inputs' bytes less all but one Parquet footer (estimated from a
    /// few inputs per window).
    pub outputs: u64,
    /// The journal: every snapshot and checkpoint the commit rewrites, twice (the new one, and
    /// the original it keeps for undo), the new ones, and the plan and manifest listing every
    /// replaced file.
    pub metadata: u64,
    /// The trash's directories: one per table and day of the replaced files, one filesystem
    /// block each.
    pub directories: u64,
    /// Headroom for DuckDB to spill the largest window, when its rows may not fit in
    /// DuckDB's share of the memory budget.
    pub spill: u64,
    /// The sum of the above.
    pub total: u64,
    /// Free on the filesystem now.
    pub available: u64,
    /// That filesystem's mount point.
    pub mount: String,
}

impl SpaceEstimate {
    /// Refuses a run the filesystem has no room for, before anything changes.
    pub fn check(&self) -> Result<()> {
        if self.total <= self.available || fault_injected("skip-space-check") {
            return Ok(());
        }
        Err(Error::new(format!(
            "not enough disk space: the run needs about {}, {} free on {}",
            human_bytes(self.total),
            human_bytes(self.available),
            self.mount
        ))
        .hint(format!(
            "free at least {} there (`kompactor purge` frees old runs' trash), or compact the oldest windows first (a larger --min-age merges fewer)",
            human_bytes(self.total - self.available)
        )))
    }

    /// The estimate in one line.
    pub fn summary(&self) -> String {
        format!(
            "needs about {} ({} merged files, {} metadata, {} directories, {} spill headroom); {} free on {}",
            human_bytes(self.total),
            human_bytes(self.outputs),
            human_bytes(self.metadata),
            human_bytes(self.directories),
            human_bytes(self.spill),
            human_bytes(self.available),
            self.mount
        )
    }

    /// The message for a write that failed for space anyway.
    pub fn explain_failure(&self) -> String {
        format!(
            "the filesystem at {} is full: this run needed about {} and {} was free when it started",
            self.mount,
            human_bytes(self.total),
            human_bytes(self.available)
        )
    }
}

/// How much larger a window's rows are in DuckDB than in their compressed Parquet files, at
/// the most: what decides whether a merge may spill.
const UNCOMPRESSED: u64 = 4;

/// The journal's bytes per replaced file: its entry in `plan.json` and in `manifest.json`
/// (measured: about 500 and 250).
const JOURNAL_PER_FILE: u64 = 800;

/// What a directory takes: one block of the usual 4 KiB.
const DIRECTORY: u64 = 4096;

/// Estimates what the plans need on the data dir's filesystem, merging within `memory`.
pub fn estimate(
    data_dir: &Path,
    nodes: &[Node],
    plans: &[Vec<TablePlan>],
    memory: MemoryBudget,
) -> Result<SpaceEstimate> {
    let FreeSpace { available, mount } = free_space(data_dir)?;
    let mut e = SpaceEstimate {
        available,
        mount: mount.display().to_string(),
        ..SpaceEstimate::default()
    };
    // A footer is most of a small file, and a merged file keeps one: each group's footers are
    // estimated from a few of its inputs (reading every input's tail would cost a second per
    // hundred thousand files), taking the smallest sampled as every input's.
    let groups: Vec<&Group> = plans.iter().flatten().flat_map(|t| &t.groups).collect();
    let mut footers = parallel_map_io(&groups, |g| {
        let n = g.inputs.len();
        if n == 0 {
            return (0, 0);
        }
        let sampled: Vec<u64> = BTreeSet::from([0, n / 2, n - 1])
            .into_iter()
            .filter_map(|i| footer_len(&g.inputs[i].entry.path.under(data_dir)).ok())
            .collect();
        let smallest = sampled.iter().copied().min().unwrap_or(0);
        let largest = sampled.iter().copied().max().unwrap_or(0);
        (smallest * n as u64, largest)
    })
    .into_iter();
    for (node, tables) in nodes.iter().zip(plans) {
        // Every id the commit drops from a document: on a deep history, millions.
        let groups = || tables.iter().flat_map(|t| &t.groups);
        let purged = node
            .purged
            .values()
            .flat_map(|t| t.entries.iter().map(|f| f.id));
        let inputs = groups().flat_map(|g| g.inputs.iter().map(|f| f.entry.id));
        let touched = FileIdSet::new(purged.chain(inputs));
        let mut dirs: HashSet<String> = HashSet::new();
        for g in groups() {
            // A group's inputs come in runs from one directory: each run is noted once.
            let mut last = String::new();
            for f in &g.inputs {
                f.entry.path.with_str(|p| match trash_dir(p) {
                    Some(dir) if dir != last => {
                        last.replace_range(.., dir);
                        dirs.insert(last.clone());
                    }
                    _ => {}
                });
            }
            let (all, largest) = footers.next().expect("one estimate per group");
            e.outputs += g.bytes.saturating_sub(all) + largest;
            let in_memory = g.bytes.saturating_mul(UNCOMPRESSED);
            e.spill = e.spill.max(in_memory.saturating_sub(memory.duckdb_bytes()));
        }
        e.directories += dirs.len() as u64 * DIRECTORY;
        if touched.is_empty() {
            continue;
        }
        e.metadata += touched.len() as u64 * JOURNAL_PER_FILE;
        // A rewritten document is kept as it was and written anew without the replaced
        // entries: its size again, less their share.
        let rewritten = |size: u64, lists: &[&DbFiles]| -> u64 {
            let entries = lists.iter().flat_map(|l| l.iter());
            let (all, gone) = entries.fold((0u64, 0u64), |(a, g), (_, _, f)| {
                (a + 1, g + u64::from(touched.contains(f.id)))
            });
            if gone == 0 {
                0
            } else {
                size + size * (all - gone + 1) / (all + 1)
            }
        };
        // Tens of thousands of small documents: a few threads share them.
        let snapshots = parallel_map(&node.snapshots, |s| {
            let v = &s.doc.value;
            let removed = v.removed_files.iter();
            rewritten(
                s.size,
                &std::iter::once(&v.databases)
                    .chain(removed)
                    .collect::<Vec<_>>(),
            )
        });
        e.metadata += snapshots.iter().sum::<u64>();
        for c in &node.checkpoints {
            let v = &c.doc.value;
            e.metadata += rewritten(c.size, &[&v.databases, &v.pending_removed_files]);
        }
        // A new checkpoint, like the largest.
        e.metadata += node.checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        e.metadata += node.newest_snapshot().map_or(0, |s| s.size);
    }
    e.total = e.outputs + e.metadata + e.directories + e.spill;
    Ok(e)
}
