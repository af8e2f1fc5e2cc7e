//! Discovery: everything a node keeps on disk, and the file set the server would load from it.
//!
//! [`discover_node`] reads a node once: every snapshot and checkpoint, the table index, the
//! WAL names and the Parquet files; it computes the live set by the server's rules
//! ([`live`]), sets purged entries aside ([`purged`]) and records what is wrong or worth
//! knowing ([`findings`]).

mod disk;
mod findings;
mod fingerprint;
mod live;
pub mod load;
mod metadata;
mod node;
pub mod purged;

pub use disk::ListedDirs;
pub use findings::{few_per_kind, summarize, Finding};
pub use live::Generation;
pub use node::{newest_time, CheckpointFile, LiveFile, Node, SnapshotFile};

use crate::error::Result;
use crate::format::ids::{FileId, TableKey};
use crate::pipeline::workers::lower_priority;
use crate::progress::StepClock;
use disk::{DiskFiles, Footers};
use metadata::read_metadata;
use purged::{find_purged, PurgedTable};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
/// Reads one node, for a server with the default load window.
pub fn discover_node(data_dir: &Path, node_id: &str) -> Result<Node> {
    discover_node_with(data_dir, node_id, None)
}

/// Reads one node: every snapshot, checkpoint, table-index file, WAL name and Parquet file.
/// `load_window` is how many snapshots the server loads, when not its release's default.
pub fn discover_node_with(
    data_dir: &Path,
    node_id: &str,
    load_window: Option<usize>,
) -> Result<Node> {
    discover(data_dir, node_id, load_window, Footers::Skip)
}

/// [`discover_node_with`], reading also the row count in every Parquet file's footer: a live
/// file whose footer disagrees with its entry, or cannot be read, is a finding. What
/// `verify` checks.
pub fn discover_node_counting_rows(
    data_dir: &Path,
    node_id: &str,
    load_window: Option<usize>,
) -> Result<Node> {
    discover(data_dir, node_id, load_window, Footers::Read)
}

/// How many nice levels below the steps beside it the listing runs.
const LISTING_NICENESS: i32 = 10;

fn discover(
    data_dir: &Path,
    node_id: &str,
    load_window: Option<usize>,
    footers: Footers,
) -> Result<Node> {
    let dir = data_dir.join(node_id);
    let dbs_rel = format!("{node_id}/dbs");
    // Listing a deep history's window directories is mostly the kernel's work and takes as
    // long as everything else put together: it runs beside the steps that do not need it,
    // several of which use one core only.
    std::thread::scope(|scope| {
        let listing = scope.spawn(|| {
            // The listing keeps both cores busy alone, the steps beside it do not: they go
            // first, and it takes what they leave (a few tenths of a second of a deep
            // history's `verify`).
            lower_priority(LISTING_NICENESS);
            let mut clock = StepClock::new(node_id);
            let disk = DiskFiles::list(data_dir, &dbs_rel, footers);
            clock.done("listing the Parquet files (beside the next steps)");
            disk
        });
        let mut node = read_metadata(&dir, node_id, load_window)?;
        let mut clock = StepClock::new(node_id);
        live::compute_live(&mut node);
        clock.done("the live set");
        let duplicates = findings::duplicate_ids(&node);
        let reused: BTreeSet<FileId> = duplicates.iter().filter_map(Finding::blocks_file).collect();
        clock.done("reused ids");
        let mut disk = listing.join().expect("listing the files does not panic")?;
        node.listed_dirs = disk.take_dirs();
        clock.done("waiting for the listing");
        let (live_findings, absent) = findings::check_live_files(&node, &mut disk, &reused);
        clock.done("checking the live files");
        let removed = node.removal_named_ids();
        let purged = find_purged(&node, data_dir, &disk, &removed, &absent, &reused);
        set_purged_aside(&mut node, purged);
        // A purged file is gone by design; what else is absent is missing.
        let live_findings = [findings::missing(&node, &absent), live_findings].concat();
        clock.done("purged files");
        live::compute_hidden(&mut node, &disk, &removed);
        clock.done("hidden files");
        findings::check_files(&mut node, disk, duplicates, live_findings)?;
        clock.done("unreferenced files");
        Ok(node)
    })
}
/// Reads every requested node.
pub fn discover_all(
    data_dir: &Path,
    hosts: &[String],
    load_window: Option<usize>,
) -> Result<Vec<Node>> {
    hosts
        .iter()
        .map(|h| {
            log::info!("reading node {h}");
            let t = std::time::Instant::now();
            let node = discover_node_with(data_dir, h, load_window);
            log::debug!("node {h}: reading took {:.2}s", t.elapsed().as_secs_f64());
            node
        })
        .collect()
}

/// Lets go of nodes at the end of a command without freeing them: the process exits next,
/// and freeing a deep history's millions of entries one at a time took about a second.
pub fn leave_to_exit(nodes: Vec<Node>) {
    std::mem::forget(nodes);
}

/// Takes the entries the server purged ([`find_purged`]) out of the live set: they hold no
/// row a query can return (expired, or of a deleted table), and they are not damage.
fn set_purged_aside(node: &mut Node, purged: BTreeMap<TableKey, PurgedTable>) {
    node.purged = purged;
    let ids: BTreeSet<FileId> = node
        .purged
        .values()
        .flat_map(|t| t.entries.iter().map(|f| f.id))
        .collect();
    for files in node.live.values_mut() {
        files.retain(|f| !ids.contains(&f.id));
    }
    node.live.retain(|_, files| !files.is_empty());
    for (table, p) in &node.purged {
        let (min_time, max_time) = p.time_range();
        node.findings.push(Finding::Purged {
            table: *table,
            entries: p.entries.len(),
            bytes: p.bytes(),
            rows: p.rows(),
            min_time,
            max_time,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::model::EntryRc;
    use foldhash::HashMap;

    #[test]
    fn checkpoint_entries_share_the_entries_of_the_snapshots_they_cover() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/influxdb3-3.10/small");
        let node = discover_node(&fixture, "node0").unwrap();
        let in_snapshots: HashMap<FileId, &EntryRc> = node
            .snapshots
            .iter()
            .flat_map(|s| s.doc.value.databases.iter())
            .map(|(_, _, f)| (f.id, f))
            .collect();
        let mut shared = 0;
        for c in &node.checkpoints {
            let mut own = 0;
            for (_, _, f) in c.doc.value.databases.iter() {
                match in_snapshots.get(&f.id) {
                    Some(p) => {
                        assert!(EntryRc::ptr_eq(p, f), "file {} is held twice", f.id);
                        shared += 1;
                    }
                    None => own += 1,
                }
            }
            let pending = c.doc.value.pending_removed_files.iter();
            own += pending
                .filter(|(_, _, f)| !in_snapshots.contains_key(&f.id))
                .count();
            assert_eq!(c.own_entries, own, "{}", c.path.display());
        }
        assert!(shared > 0, "the fixture's checkpoints cover some snapshot");
    }
}
