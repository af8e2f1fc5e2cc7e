//! How much disk a planned run needs, checked against what its filesystem has free.

use crate::durable::failpoint::fault_injected;
use crate::durable::space::{free_space, FreeSpace};
use crate::error::{Error, Result};
use crate::format::ids::FileId;
use crate::pipeline::discover::Node;
use crate::pipeline::plan::TablePlan;
use crate::units::{human_bytes, MemoryBudget};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The space a run needs on the data dir's filesystem, by what takes it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpaceEstimate {
    /// The merged files: their inputs' bytes less all but one Parquet footer.
    pub outputs: u64,
    /// The journal's staged metadata: every snapshot and checkpoint the commit rewrites, and
    /// the new ones (the originals are kept as hard links, which take no space).
    pub metadata: u64,
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
            "needs about {} ({} merged files, {} metadata, {} spill headroom); {} free on {}",
            human_bytes(self.total),
            human_bytes(self.outputs),
            human_bytes(self.metadata),
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
    for (node, tables) in nodes.iter().zip(plans) {
        let mut touched: HashSet<FileId> = node
            .purged
            .values()
            .flat_map(|t| t.entries.iter().map(|f| f.id))
            .collect();
        for g in tables.iter().flat_map(|t| &t.groups) {
            let mut footers = Vec::with_capacity(g.inputs.len());
            for f in &g.inputs {
                touched.insert(f.entry.id);
                footers.push(footer_len(&data_dir.join(&f.entry.path)).unwrap_or(0));
            }
            let largest_footer = footers.iter().copied().max().unwrap_or(0);
            e.outputs += g.bytes - footers.iter().sum::<u64>() + largest_footer;
            let in_memory = g.bytes.saturating_mul(UNCOMPRESSED);
            e.spill = e.spill.max(in_memory.saturating_sub(memory.duckdb_bytes()));
        }
        if touched.is_empty() {
            continue;
        }
        let lists = |files: &crate::format::model::DbFiles| {
            files.iter().any(|(_, _, f)| touched.contains(&f.id))
        };
        for s in &node.snapshots {
            let v = &s.doc.value;
            if lists(&v.databases) || v.removed_files.as_ref().is_some_and(lists) {
                e.metadata += s.size;
            }
        }
        // Every checkpoint may be rewritten, and one is added like the newest.
        e.metadata += node.checkpoints.iter().map(|c| c.size).sum::<u64>();
        e.metadata += node.checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        e.metadata += node.newest_snapshot().map_or(0, |s| s.size);
    }
    e.total = e.outputs + e.metadata + e.spill;
    Ok(e)
}

/// The length of a Parquet file's footer (metadata, its length field and the magic), from
/// its last 8 bytes; `None` when the file cannot be read as Parquet.
fn footer_len(path: &Path) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::End(-8)).ok()?;
    let mut tail = [0u8; 8];
    f.read_exact(&mut tail).ok()?;
    if &tail[4..] != b"PAR1" {
        return None;
    }
    Some(u32::from_le_bytes(tail[..4].try_into().ok()?) as u64 + 8)
}
