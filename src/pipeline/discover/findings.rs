//! What discovery tells an operator about a node: damage, stale entries, hidden data.

use super::disk::{DiskFiles, Footers};
use super::node::Node;
use crate::error::Result;
use crate::format::ids::{FileId, FileIdMap, Nanos, TableKey, WalSeq};
use crate::format::model::FileEntry;
use crate::format::parquet::read_row_count;
use foldhash::{HashSet, HashSetExt};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// Something about a node an operator should know; none of it is changed by kompactor.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A live file whose Parquet file is not on disk, and that nothing marks as removed: lost.
    Missing { id: FileId, path: String },
    /// Entries of one table whose files the server removed (retention, hard delete); the
    /// next compaction drops them from the metadata. Information, not damage.
    Purged {
        table: TableKey,
        entries: usize,
        bytes: u64,
        rows: u64,
        min_time: Nanos,
        max_time: Nanos,
    },
    /// A live file whose size on disk differs from its `size_bytes`.
    SizeMismatch {
        id: FileId,
        path: String,
        recorded: u64,
        on_disk: u64,
    },
    /// A live file whose footer gives another row count than its `row_count`; only `verify`
    /// reads footers.
    RowCountMismatch {
        id: FileId,
        path: String,
        recorded: u64,
        in_footer: u64,
    },
    /// A live file whose footer cannot be read; only `verify` reads footers.
    UnreadableFooter { id: FileId, error: String },
    /// A Parquet file under the node that the server does not serve.
    Unreferenced {
        path: String,
        listed_in_metadata: bool,
    },
    /// One file id given to two different paths.
    DuplicateId { id: FileId, paths: Vec<String> },
    /// Files of one table on disk that the server does not load (beyond its load window):
    /// their rows are invisible to queries. `--include-hidden` merges them back into view.
    Hidden {
        table: TableKey,
        files: usize,
        rows: u64,
        bytes: u64,
        min_time: Nanos,
        max_time: Nanos,
    },
    /// A file under `snapshots/` that is not a snapshot: the server will refuse to start.
    StraySnapshotEntry { path: String },
    /// WAL files newer than the newest snapshot: their rows come back at the next start.
    WalTail {
        newest_snapshot_wal: WalSeq,
        files: Vec<WalSeq>,
    },
}

impl Finding {
    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            Finding::Missing { id, path } => format!(
                "file {id} is lost: live in the metadata but missing on disk, and neither the table index nor any removal says the server deleted it: {path}"
            ),
            Finding::Purged { table, entries, bytes, rows, min_time, max_time } => format!(
                "table {table}: {entries} entr{} of files the server removed (retention or a deleted table) are still listed ({rows} rows, {bytes} bytes, {} .. {}); a compaction drops them from the metadata",
                if *entries == 1 { "y" } else { "ies" },
                min_time.to_rfc3339(),
                max_time.to_rfc3339()
            ),
            Finding::SizeMismatch { id, path, recorded, on_disk } => format!(
                "file {id} is {on_disk} bytes on disk but the metadata records {recorded}: {path}"
            ),
            Finding::RowCountMismatch { id, path, recorded, in_footer } => format!(
                "file {id} holds {in_footer} rows but the metadata records {recorded}: {path}"
            ),
            Finding::UnreadableFooter { id, error } => format!("file {id}: {error}"),
            Finding::Unreferenced { path, listed_in_metadata: true } => {
                format!("Parquet file is not live (removed, or outside the load window): {path}")
            }
            Finding::Unreferenced { path, listed_in_metadata: false } => {
                format!("Parquet file is referenced by no snapshot or checkpoint: {path}")
            }
            Finding::DuplicateId { id, paths } => {
                format!("file id {id} is used for {} different paths: {}", paths.len(), paths.join(", "))
            }
            Finding::Hidden { table, files, rows, bytes, min_time, max_time } => format!(
                "table {table}: {files} file(s) ({rows} rows, {bytes} bytes, {} .. {}) are beyond the server's load window: invisible to queries; left alone unless --include-hidden",
                min_time.to_rfc3339(),
                max_time.to_rfc3339()
            ),
            Finding::StraySnapshotEntry { path } => format!(
                "{path} is not a snapshot file: the server reads everything under snapshots/ and will refuse to start; move it elsewhere"
            ),
            Finding::WalTail { newest_snapshot_wal, files } => format!(
                "{} WAL file(s) newer than the newest snapshot (WAL {newest_snapshot_wal}): their rows are not in any Parquet file; the server replays them at start with their own 10-minute chunk_time, and a later overwrite of a point in a window merged wider than 10m is not deduplicated against it",
                files.len()
            ),
        }
    }

    /// The kind of finding, for summaries: one word.
    fn kind(&self) -> &'static str {
        match self {
            Finding::Missing { .. } => "lost",
            Finding::Purged { .. } => "purged",
            Finding::SizeMismatch { .. } => "resized",
            Finding::RowCountMismatch { .. } => "miscounted",
            Finding::UnreadableFooter { .. } => "unreadable",
            Finding::Unreferenced { .. } => "unreferenced",
            Finding::DuplicateId { .. } => "duplicate id",
            Finding::Hidden { .. } => "hidden",
            Finding::StraySnapshotEntry { .. } => "stray",
            Finding::WalTail { .. } => "wal tail",
        }
    }

    /// Whether this finding makes the data dir inconsistent (what `verify` fails on): damage
    /// to one file, an id given to two, a stray file among the snapshots.
    pub fn is_inconsistency(&self) -> bool {
        matches!(
            self,
            Finding::Missing { .. }
                | Finding::SizeMismatch { .. }
                | Finding::RowCountMismatch { .. }
                | Finding::UnreadableFooter { .. }
                | Finding::DuplicateId { .. }
                | Finding::StraySnapshotEntry { .. }
        )
    }

    /// Whether this finding makes a file unsafe to merge.
    pub fn blocks_file(&self) -> Option<FileId> {
        match self {
            Finding::Missing { id, .. }
            | Finding::SizeMismatch { id, .. }
            | Finding::RowCountMismatch { id, .. }
            | Finding::UnreadableFooter { id, .. }
            | Finding::DuplicateId { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Lines for the operator, at most a few per kind: findings that concern one file each are
/// counted (with an example) beyond a few, unless `verbose`; per-table and per-node
/// findings are few and shown whole.
pub fn summarize(findings: &[Finding], verbose: bool) -> Vec<String> {
    few_per_kind(
        findings,
        |f| {
            let per_file = f.is_inconsistency() || matches!(f, Finding::Unreferenced { .. });
            (f.kind(), per_file)
        },
        Finding::describe,
        verbose,
    )
}

/// Lines for the operator from `items`, at most a few per kind unless `verbose`: a kind that
/// concerns one file per item (`kind` gives each item's kind and whether it does) is, beyond
/// that, one line with its count and an example. Kinds keep the order they first appear in.
///
/// What keeps a command's output short however big the node: [`summarize`] for findings,
/// and `verify` for the problems it finds itself.
pub fn few_per_kind<T>(
    items: &[T],
    kind: impl Fn(&T) -> (&'static str, bool),
    describe: impl Fn(&T) -> String,
    verbose: bool,
) -> Vec<String> {
    const PER_KIND: usize = 3;
    let mut by_kind: Vec<(&str, bool, Vec<&T>)> = Vec::new();
    for item in items {
        let (k, per_file) = kind(item);
        match by_kind.iter_mut().find(|(seen, _, _)| *seen == k) {
            Some((_, _, v)) => v.push(item),
            None => by_kind.push((k, per_file, vec![item])),
        }
    }
    let mut out = Vec::new();
    for (kind, per_file, items) in by_kind {
        if verbose || !per_file || items.len() <= PER_KIND {
            out.extend(items.iter().map(|i| describe(i)));
        } else {
            out.push(format!(
                "{} {kind} file(s), e.g. {} (--verbose or --json lists them all)",
                items.len(),
                describe(items[0])
            ));
        }
    }
    out
}

/// The ids that the snapshots and checkpoints list with more than one path.
///
/// It needs only the documents, so discovery finds them beside the purged files. A deep
/// history lists millions of entries, most of them twice (a snapshot and a checkpoint):
/// only the first path of each id is kept, and the paths of the few ids listed with
/// another one are gathered in a second pass.
pub(super) fn duplicate_ids(node: &Node) -> Vec<Finding> {
    let listed = || node.listings().flat_map(|files| files.iter().map(|e| e.2));
    let mut first = FileIdMap::for_ids(listed().map(|f| f.id));
    let mut reused = BTreeMap::<FileId, BTreeSet<String>>::new();
    for f in listed() {
        if **first.get_or_insert(f.id, &f.path) != f.path {
            reused.entry(f.id).or_default();
        }
    }
    if reused.is_empty() {
        return Vec::new();
    }
    for f in listed() {
        if let Some(paths) = reused.get_mut(&f.id) {
            paths.insert(f.path.to_string());
        }
    }
    reused
        .into_iter()
        .map(|(id, paths)| Finding::DuplicateId {
            id,
            paths: paths.into_iter().collect(),
        })
        .collect()
}

/// Compares the live files with the files on disk (and with their footers' row counts, when
/// the listing read them). Gives the findings, and the ids of the live files that are not on
/// disk: lost, or purged by the server ([`super::purged::find_purged`] tells which, and
/// [`missing`] names the lost ones). A node with a retention period lists a great many
/// purged files: none of them is made a finding only to be dropped.
///
/// Done before anything else that needs the listing: these are most of the node's files, and
/// what it finds missing is all [`super::purged::find_purged`] needs to know of them.
/// The row count of a reused id (`reused`, from [`duplicate_ids`]) is not compared.
pub(super) fn check_live_files(
    node: &Node,
    disk: &mut DiskFiles,
    reused: &BTreeSet<FileId>,
) -> (Vec<Finding>, BTreeSet<FileId>) {
    let data_dir = node
        .dir
        .parent()
        .expect("node dir has a parent")
        .to_path_buf();
    // Rows are compared only where the file is whole and its id means one file.
    let count_rows = disk.footers() == Footers::Read;
    let mut miscounted = Vec::new();
    let mut compare_rows = |f: &FileEntry, size: u64, rows: Option<u64>| {
        if !count_rows || reused.contains(&f.id) {
            return;
        }
        // A footer the listing could not read in one go is read again, the slow way that
        // says what is wrong with it.
        let rows = rows.map_or_else(|| read_row_count(&f.path.under(&data_dir), size), Ok);
        match rows {
            Ok(rows) if rows != f.row_count => miscounted.push(Finding::RowCountMismatch {
                id: f.id,
                path: f.path.to_string(),
                recorded: f.row_count,
                in_footer: rows,
            }),
            Ok(_) => {}
            Err(mut e) => {
                // The error's hint is a run's ("its group is left alone"); a finding says
                // what is wrong, and each command says what it does about it.
                e.hint = None;
                miscounted.push(Finding::UnreadableFooter {
                    id: f.id,
                    error: e.to_string(),
                })
            }
        }
    };
    let resized = |f: &FileEntry, on_disk: u64| Finding::SizeMismatch {
        id: f.id,
        path: f.path.to_string(),
        recorded: f.size_bytes,
        on_disk,
    };
    let mut on_disk = Vec::new();
    let mut absent = BTreeSet::new();
    let live = node.live.values().flatten();
    disk.refer_each(
        live,
        |f| &f.path,
        |f, found| match found {
            None => {
                // Not under dbs/ (or not named .parquet): check the path itself.
                match fs::metadata(f.path.under(&data_dir)) {
                    Ok(m) if m.len() != f.size_bytes => on_disk.push(resized(f, m.len())),
                    Ok(m) => compare_rows(f, m.len(), None),
                    Err(_) => {
                        absent.insert(f.id);
                    }
                }
            }
            Some(d) if d.size != f.size_bytes => on_disk.push(resized(f, d.size)),
            Some(d) => compare_rows(f, d.size, d.rows),
        },
    );
    on_disk.append(&mut miscounted);
    (on_disk, absent)
}

/// A finding for each live file whose id is in `absent` ([`check_live_files`]): once the
/// purged files are set aside, the files that are lost.
pub(super) fn missing(node: &Node, absent: &BTreeSet<FileId>) -> Vec<Finding> {
    if absent.is_empty() {
        return Vec::new();
    }
    node.live
        .values()
        .flatten()
        .filter(|f| absent.contains(&f.id))
        .map(|f| Finding::Missing {
            id: f.id,
            path: f.path.to_string(),
        })
        .collect()
}

/// Marks the hidden files as referenced, names the files on disk that nothing refers to, and
/// looks for WAL tails; the node's findings get `duplicates` ([`duplicate_ids`]) first, then
/// `live` ([`check_live_files`], less the purged files' entries), then these.
///
/// The files on disk are let go of as soon as they are compared: on a deep history they
/// take a hundred megabytes or more.
pub(super) fn check_files(
    node: &mut Node,
    mut disk: DiskFiles,
    duplicates: Vec<Finding>,
    live: Vec<Finding>,
) -> Result<()> {
    let docs = || {
        node.snapshots
            .iter()
            .map(|s| &s.doc.value.databases)
            .chain(node.checkpoints.iter().map(|c| &c.doc.value.databases))
    };
    let mut on_disk = live;
    let hidden = node.hidden.values().flatten();
    disk.refer_each(hidden, |f| &f.path, |_, _| {});
    let unreferenced = disk.unreferenced()?;
    drop(disk);
    // Which of them the metadata still names, looked up only when there are any.
    let mut named: HashSet<&str> = HashSet::new();
    if !unreferenced.is_empty() {
        let wanted: HashSet<&str> = unreferenced.iter().map(String::as_str).collect();
        for files in docs() {
            for (_, _, f) in files.iter() {
                if let Some(p) = f.path.with_str(|p| wanted.get(p).copied()) {
                    named.insert(p);
                }
            }
        }
    }
    for p in &unreferenced {
        on_disk.push(Finding::Unreferenced {
            path: p.clone(),
            listed_in_metadata: named.contains(p.as_str()),
        });
    }

    let mut findings = duplicates;
    findings.extend(on_disk);
    if let Some(newest) = node.newest_snapshot() {
        let w = newest.doc.value.wal_file_sequence_number;
        let tail: Vec<WalSeq> = node.wal.iter().copied().filter(|s| *s > w).collect();
        if !tail.is_empty() {
            findings.push(Finding::WalTail {
                newest_snapshot_wal: w,
                files: tail,
            });
        }
    }
    node.findings.extend(findings);
    Ok(())
}
