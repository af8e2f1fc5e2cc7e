//! The commit: the new metadata that makes the server see the merged files instead of their
//! inputs (`docs/on-disk-format.md`, section 7), prepared in full before any node changes.
//!
//! [`compute_node`] computes every file the commit writes: one new snapshot (new ids, the
//! replaced files in `removed_files`), every older snapshot that listed a replaced file
//! rewritten without it (keeping its modification time), the checkpoints rewritten and one
//! added that covers the new snapshot, and the table index set aside for the server to
//! rebuild. [`prepare_node`] also stages them in the run directory with links to the
//! originals, and lists the moves of the replaced files into the trash; the journal
//! ([`crate::durable::apply::apply`]) then puts them in place in a crash-safe order.

mod checkpoints;
mod compute;
mod entries;
mod order;
mod stage;
mod trash;

pub use compute::compute_node;

use crate::durable::apply::apply_or_recover;
use crate::durable::journal::{Manifest, NodeManifest, RunDirs};
use crate::error::Result;
use crate::format::ids::{SnapshotSeq, TableKey};
use crate::format::model::{Checkpoint, DbFiles, Doc, Snapshot};
use crate::pipeline::discover::{LiveFile, Node};
use crate::pipeline::merge::{Merged, Output};
use crate::pipeline::plan::Group;
use crate::pipeline::prepared::Prepared;
use serde::Serialize;
use stage::stage_node;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a commit changes on one node.
#[derive(Clone, Debug, Serialize)]
pub struct Committed {
    pub node: String,
    pub snapshot: SnapshotSeq,
    pub files_added: usize,
    pub files_replaced: usize,
    pub snapshots_rewritten: usize,
    /// Entries moved from the snapshot that falls out of the load window into the new one.
    pub entries_relisted: usize,
    pub checkpoints_written: usize,
    pub table_index_set_aside: bool,
    pub trash_bytes: u64,
    /// Entries of files the server had purged, dropped from every snapshot and checkpoint.
    pub purged_entries_dropped: usize,
    /// Bytes of the snapshot and checkpoint files this commit rewrites, before and after
    /// (the new snapshot and checkpoint not counted).
    pub metadata_bytes_before: u64,
    pub metadata_bytes_after: u64,
    /// Rewritten snapshot and checkpoint files `prepare` had written already, taken as they
    /// were rather than written again while the server is stopped.
    pub metadata_files_prepared: usize,
}

fn rel_to_data_dir(dirs: &RunDirs, p: &Path) -> String {
    p.strip_prefix(&dirs.data_dir)
        .expect("under the data dir")
        .to_string_lossy()
        .into_owned()
}

/// One change to a table: files that leave the node, and verified files that join it.
///
/// Compaction replaces a window's inputs by its outputs; archiving removes a window's files
/// (their data is in the archive); restoring adds archived files back.
pub struct Change<'a> {
    pub table: TableKey,
    pub removes: &'a [LiveFile],
    pub adds: &'a [Output],
    /// The new files take the place of the first of `removes` (by id) in every document
    /// that lists it, instead of being listed in the new snapshot: they stay where the server
    /// held their inputs (in its order, and visible or hidden as they were). A delete's
    /// rewritten files.
    pub in_place: bool,
}

impl<'a> Change<'a> {
    /// The change a merged group makes: its inputs replaced by its outputs.
    pub fn merge(g: &'a Group, m: &'a Merged) -> Change<'a> {
        Change {
            table: g.table,
            removes: &g.inputs,
            adds: &m.outputs,
            in_place: false,
        }
    }
}

/// The document a metadata file holds.
enum MetaDoc {
    Snapshot(Doc<Snapshot>),
    Checkpoint(Doc<Checkpoint>),
}

/// One metadata file a commit writes: a new snapshot or checkpoint, or a rewritten one.
pub struct MetaFile {
    pub path: PathBuf,
    doc: MetaDoc,
    /// The modification time it keeps (that of the file it rewrites).
    pub mtime: Option<SystemTime>,
    /// Whether it replaces an existing file.
    pub existed: bool,
}

impl MetaFile {
    /// The file's path relative to its node's directory.
    pub fn in_node(&self, node: &Node) -> String {
        self.path
            .strip_prefix(&node.dir)
            .expect("under the node dir")
            .to_string_lossy()
            .into_owned()
    }

    /// The file's bytes, as the server writes them.
    ///
    /// Made when needed and dropped once written: a deep history rewrites tens of thousands
    /// of snapshots, and holding all their bytes beside their documents would double the
    /// commit's memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.doc {
            MetaDoc::Snapshot(d) => d.to_bytes(),
            MetaDoc::Checkpoint(d) => d.to_bytes(),
        }
    }
}

/// Everything the commit of one node's changes consists of, computed but not yet staged.
pub struct NodeCommit {
    /// The new snapshot first: from the moment it is in place no row can be missing.
    pub files: Vec<MetaFile>,
    /// The manifest without its `writes` and `replaced`: staging fills them in, the moves
    /// from what the replaced files' directories hold once the server is stopped.
    pub manifest: NodeManifest,
    /// Without `metadata_bytes_after`, which staging adds up as it writes.
    pub committed: Committed,
    replaced: DbFiles,
}

/// Stages the commit of each node's changes (`changes`: a node's index in `nodes`, and its
/// changes; a node without any is left out) into `manifest`, then commits every node in one
/// journaled step, recovering if that fails: how every command but compaction (which stages
/// each node as soon as its merges are done) ends. What each node committed, by index.
pub fn commit_nodes(
    nodes: &[Node],
    changes: &[(usize, Vec<Change>)],
    dirs: &RunDirs,
    mut manifest: Manifest,
) -> Result<Vec<(usize, Committed)>> {
    let mut committed = Vec::new();
    for (i, changes) in changes.iter().filter(|(_, c)| !c.is_empty()) {
        let (m, c) = prepare_node(&nodes[*i], changes, dirs, None)?;
        manifest.nodes.push(m);
        committed.push((*i, c));
    }
    apply_or_recover(dirs, &manifest)?;
    Ok(committed)
}

/// Computes and stages the commit of one node's changes; changes nothing in the node.
///
/// A rewritten file whose exact bytes `prestaged` holds (written by `prepare` while the
/// server ran) is moved into the run instead of written and flushed again.
pub fn prepare_node(
    node: &Node,
    changes: &[Change],
    dirs: &RunDirs,
    prestaged: Option<&Prepared>,
) -> Result<(NodeManifest, Committed)> {
    let c = compute_node(node, changes, dirs)?;
    stage_node(node, c, dirs, prestaged)
}
