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
mod node;
pub mod purged;

pub use disk::ListedDirs;
pub use findings::{few_per_kind, summarize, Finding};
pub use live::Generation;
pub use node::{newest_time, CheckpointFile, LiveFile, Node, SnapshotFile};

use crate::error::{Error, Result};
use crate::format::ids::{FileId, FileIdMap, WalSeq};
use crate::format::ids::{SnapshotSeq, TableKey};
use crate::format::layout::ParquetPath;
use crate::format::model::{
    Checkpoint, Doc, EntryPool, MappedText, Snapshot, TableIndexMarker, KNOWN_SNAPSHOT_VERSIONS,
};
use crate::pipeline::workers::lower_priority;
use crate::progress::StepClock;
use disk::{DiskFiles, Footers};
use purged::{find_purged, PurgedTable};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, "read", e))
}

/// Opens a metadata file, with its modification time and size from the open file: a deep
/// history has tens of thousands of snapshots, each a path lookup fewer.
fn open_with_stat(path: &Path) -> Result<(fs::File, SystemTime, u64)> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, "read", e))?;
    let (mtime, size) = file
        .metadata()
        .and_then(|m| Ok((m.modified()?, m.len())))
        .map_err(|e| Error::io(path, "read the modification time of", e))?;
    Ok((file, mtime, size))
}

/// A whole file, with its modification time and size ([`open_with_stat`]).
fn read_with_stat(path: &Path) -> Result<(Vec<u8>, SystemTime, u64)> {
    use std::io::Read;
    let (mut file, mtime, size) = open_with_stat(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok((bytes, mtime, size))
}

/// Reads a JSON document (a `what`) and parses it with `parse`.
fn parse_json_doc<R>(
    path: &Path,
    what: &str,
    parse: impl FnOnce(&[u8]) -> serde_json::Result<R>,
) -> Result<R> {
    let bytes = read(path)?;
    parse(&bytes).map_err(|e| not_valid(path, what, e))
}

/// Parses a JSON document (a `what`) with `parse`, in place in the mapped file
/// ([`MappedText`]): for the largest documents, checkpoints of hundreds of megabytes.
fn parse_mapped_doc<R>(
    path: &Path,
    what: &str,
    parse: impl FnOnce(&[u8]) -> serde_json::Result<R>,
) -> Result<(R, SystemTime, u64)> {
    let (mut file, mtime, size) = open_with_stat(path)?;
    let doc = match MappedText::map(&file, size) {
        Ok(text) => text.parse(parse),
        // Where it cannot be mapped, the text is read whole.
        Err(_) => {
            use std::io::Read;
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::io(path, "read", e))?;
            parse(&bytes)
        }
    }
    .map_err(|e| not_valid(path, what, e))?;
    Ok((doc, mtime, size))
}

fn not_valid(path: &Path, what: &str, e: serde_json::Error) -> Error {
    let hint = if e.is_eof() {
        " (the file is truncated)"
    } else {
        ""
    };
    Error::at(path, format!("not a valid {what}: {e}{hint}")).hint(
        "the node's metadata is damaged; restore this file from a backup before running kompactor",
    )
}

/// Parses the snapshot at `path`, whose text is `bytes`.
fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<Doc<Snapshot>> {
    let unknown_version = |v: &dyn std::fmt::Display| {
        Error::at(
            path,
            format!("snapshot version {v} is not one kompactor knows (known: \"1\")"),
        )
        .hint("this data dir was written by a newer InfluxDB 3 release; upgrade kompactor")
    };
    if let Ok(doc) = Doc::<Snapshot>::parse(bytes) {
        return match &doc.value.version {
            Some(v) if !KNOWN_SNAPSHOT_VERSIONS.contains(&v.as_str()) => {
                Err(unknown_version(&Value::from(v.as_str())))
            }
            _ => Ok(doc),
        };
    }
    // Not the shape kompactor knows: the version tag is checked before the shape, so that an
    // unknown format says so.
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
        let hint = if e.is_eof() { " (the file is truncated)" } else { "" };
        Error::at(path, format!("not a valid snapshot JSON: {e}{hint}"))
            .hint("the node's metadata is damaged; restore this file from a backup before running kompactor")
    })?;
    if let Some(v) = raw.get("version") {
        if !v
            .as_str()
            .is_some_and(|s| KNOWN_SNAPSHOT_VERSIONS.contains(&s))
        {
            return Err(unknown_version(v));
        }
    }
    Doc::from_value(raw).map_err(|e| {
        Error::at(path, format!("not a valid snapshot: {e}"))
            .hint("the node's metadata is damaged; restore this file from a backup before running kompactor")
    })
}

fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "list", e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, "list", e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

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

/// Reads a node's metadata: snapshots, checkpoints, the table index and the WAL names; the
/// live set and everything that needs the Parquet files are left to compute.
fn read_metadata(dir: &Path, node_id: &str, load_window: Option<usize>) -> Result<Node> {
    let mut clock = StepClock::new(node_id);
    let mut findings = Vec::new();
    let snapshots = read_snapshots(dir, node_id, &mut findings)?;
    clock.done("reading the snapshots");
    let checkpoints = read_checkpoints(dir, &snapshots)?;
    clock.done("reading the checkpoints");

    let marker_path = dir.join("table-index-conversion-completed");
    let table_index_marker = if marker_path.is_file() {
        Some(
            parse_json_doc(
                &marker_path,
                "table-index marker",
                Doc::<TableIndexMarker>::parse,
            )?
            .value,
        )
    } else {
        None
    };
    let mut table_index_files = Vec::new();
    for sub in ["db-indices", "table-snapshots"] {
        let p = dir.join(sub);
        if p.is_dir() {
            for e in walkdir::WalkDir::new(&p).sort_by_file_name() {
                let e = e.map_err(|e| Error::at(&p, format!("could not list: {e}")))?;
                if e.file_type().is_file() {
                    table_index_files.push(e.into_path());
                }
            }
        }
    }

    let mut wal = Vec::new();
    let wal_dir = dir.join("wal");
    if wal_dir.is_dir() {
        for e in sorted_entries(&wal_dir)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_suffix(".wal")
                .and_then(|s| s.parse::<u64>().ok())
            {
                wal.push(WalSeq(n));
            }
        }
    }

    let has_removed = snapshots
        .iter()
        .any(|s| s.doc.value.removed_files.is_some());
    let id_only = snapshots
        .iter()
        .flat_map(|s| s.doc.value.databases.iter())
        .next()
        .map(|(_, _, f)| {
            f.path
                .with_str(|p| ParquetPath::parse(p).is_some_and(|p| p.is_id_only()))
        });
    let generation = if !checkpoints.is_empty() {
        Generation::V3_8_2
    } else if id_only == Some(true) {
        Generation::V3_6
    } else if table_index_marker.is_some() || !table_index_files.is_empty() {
        Generation::V3_3
    } else if has_removed {
        Generation::V3_2
    } else if snapshots.iter().any(|s| s.doc.value.version.is_none()) {
        Generation::Alpha
    } else {
        Generation::V3_0
    };

    Ok(Node {
        id: node_id.to_string(),
        dir: dir.to_path_buf(),
        generation,
        snapshots,
        checkpoints,
        table_index_marker,
        table_index_files,
        wal,
        live: BTreeMap::new(),
        load_pos: FileIdMap::for_ids(std::iter::empty()),
        findings,
        loaded_snapshots: 0,
        checkpoints_loaded: 0,
        purged: BTreeMap::new(),
        hidden: BTreeMap::new(),
        listed_dirs: ListedDirs::default(),
        load_window: load_window.unwrap_or_else(|| generation.default_load_window()),
        catalog_names: crate::format::catalog::names(dir),
    })
}

/// Reads and parses every snapshot, on a few threads, in sequence order; a file in
/// `snapshots/` that is not one is a finding.
fn read_snapshots(
    dir: &Path,
    node_id: &str,
    findings: &mut Vec<Finding>,
) -> Result<Vec<SnapshotFile>> {
    let entries = sorted_entries(&dir.join("snapshots"))?;
    let bar = crate::progress::bar(entries.len() as u64, "reading");
    bar.set_message(format!("{node_id} snapshots"));
    // A name that is not a snapshot's comes back as `None`.
    let read = crate::pipeline::workers::parallel_map(&entries, |e| {
        bar.inc(1);
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_suffix(".info.json")
            .and_then(SnapshotSeq::from_inverted_name);
        let Some(seq) = seq else {
            return Ok(None);
        };
        let (bytes, mtime, size) = read_with_stat(&path)?;
        let mut doc = parse_snapshot(&path, &bytes)?;
        doc.value.databases.shrink_to_fit();
        if let Some(r) = &mut doc.value.removed_files {
            r.shrink_to_fit();
        }
        if doc.value.snapshot_sequence_number != seq {
            return Err(Error::at(
                &path,
                format!(
                    "file name says snapshot {seq} but the file says {}",
                    doc.value.snapshot_sequence_number
                ),
            ));
        }
        Ok(Some(SnapshotFile {
            mtime,
            size,
            path,
            seq,
            doc,
        }))
    });
    let mut snapshots = Vec::with_capacity(read.len());
    for (e, r) in entries.iter().zip(read) {
        match r? {
            Some(s) => snapshots.push(s),
            None => findings.push(Finding::StraySnapshotEntry {
                path: e.path().display().to_string(),
            }),
        }
    }
    snapshots.sort_by_key(|s| s.seq);
    bar.finish_and_clear();
    Ok(snapshots)
}

/// Reads and parses every checkpoint (`snapshot-checkpoints/YYYY-MM/*.checkpoint.json`).
///
/// A checkpoint lists again every file of the snapshots it covers: on a deep history, a
/// million entries in a file of hundreds of megabytes. Each is read through a pool of the
/// snapshots' entries ([`EntryPool`]), so that an entry equal to a snapshot's is that
/// entry, never a copy.
fn read_checkpoints(dir: &Path, snapshots: &[SnapshotFile]) -> Result<Vec<CheckpointFile>> {
    let cp_dir = dir.join("snapshot-checkpoints");
    if !cp_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths = Vec::new();
    for month in sorted_entries(&cp_dir)? {
        if !month.path().is_dir() {
            continue;
        }
        for e in sorted_entries(&month.path())? {
            if e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.json")
            {
                paths.push(e.path());
            }
        }
    }
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    // A checkpoint is named after the last snapshot it covers; newer ones it cannot repeat.
    let covered = paths
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str()?.strip_suffix(".checkpoint.json"))
                .and_then(SnapshotSeq::from_inverted_name)
                .unwrap_or(SnapshotSeq(u64::MAX))
        })
        .max()
        .expect("some checkpoint");
    let listed = || {
        snapshots
            .iter()
            .take_while(|s| s.seq <= covered)
            .flat_map(|s| s.doc.value.databases.iter())
            .map(|(_, _, f)| f)
    };
    let pool = EntryPool::new(listed());
    // Side by side: a deep history's checkpoints are each a few hundred megabytes of text.
    let read = crate::pipeline::workers::parallel_map(&paths, |path| {
        let ((mut doc, own_entries), mtime, size) =
            parse_mapped_doc(path, "snapshot checkpoint", |text| {
                Doc::<Checkpoint>::parse_sharing(text, &pool)
            })?;
        doc.value.databases.shrink_to_fit();
        doc.value.pending_removed_files.shrink_to_fit();
        Ok(CheckpointFile {
            own_entries,
            mtime,
            size,
            path: path.clone(),
            doc,
        })
    });
    read.into_iter().collect()
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
