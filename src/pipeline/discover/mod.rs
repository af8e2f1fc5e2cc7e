//! Discovery: everything a node keeps on disk, and the file set the server would load from it.
//!
//! [`discover_node`] reads a node once: every snapshot and checkpoint, the table index, the
//! WAL names and the Parquet files; it computes the live set by the server's rules
//! ([`live`]), sets purged entries aside ([`purged`]) and records what is wrong or worth
//! knowing ([`findings`]).

mod disk;
mod findings;
mod live;
mod node;
pub mod purged;

pub use findings::{summarize, Finding};
pub use live::Generation;
pub use node::{newest_time, CheckpointFile, LiveFile, Node, SnapshotFile};

use crate::error::{Error, Result};
use crate::format::ids::SnapshotSeq;
use crate::format::ids::{FileId, WalSeq};
use crate::format::layout::ParquetPath;
use crate::format::model::{Checkpoint, Doc, Snapshot, TableIndexMarker, KNOWN_SNAPSHOT_VERSIONS};
use disk::DiskFiles;
use foldhash::{HashMap, HashMapExt, HashSet};
use purged::find_purged;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, "read", e))
}

/// A file's modification time and size.
fn stat(path: &Path) -> Result<(SystemTime, u64)> {
    fs::metadata(path)
        .and_then(|m| Ok((m.modified()?, m.len())))
        .map_err(|e| Error::io(path, "read the modification time of", e))
}

fn parse_json_doc<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<Doc<T>> {
    let bytes = read(path)?;
    Doc::parse(&bytes).map_err(|e| {
        let hint = if e.is_eof() { " (the file is truncated)" } else { "" };
        Error::at(path, format!("not a valid {what}: {e}{hint}"))
            .hint("the node's metadata is damaged; restore this file from a backup before running kompactor")
    })
}

fn read_snapshot(path: &Path) -> Result<Doc<Snapshot>> {
    let bytes = read(path)?;
    let unknown_version = |v: &dyn std::fmt::Display| {
        Error::at(
            path,
            format!("snapshot version {v} is not one kompactor knows (known: \"1\")"),
        )
        .hint("this data dir was written by a newer InfluxDB 3 release; upgrade kompactor")
    };
    if let Ok(doc) = Doc::<Snapshot>::parse(&bytes) {
        return match &doc.value.version {
            Some(v) if !KNOWN_SNAPSHOT_VERSIONS.contains(&v.as_str()) => {
                Err(unknown_version(&Value::from(v.as_str())))
            }
            _ => Ok(doc),
        };
    }
    // Not the shape kompactor knows: the version tag is checked before the shape, so that an
    // unknown format says so.
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
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
    let dir = data_dir.join(node_id);
    let mut findings = Vec::new();

    let mut snapshots = Vec::new();
    let entries = sorted_entries(&dir.join("snapshots"))?;
    let bar = crate::progress::bar(entries.len() as u64, "reading");
    bar.set_message(format!("{node_id} snapshots"));
    // Read and parsed on a few threads; a name that is not a snapshot's comes back as `None`.
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
        let mut doc = read_snapshot(&path)?;
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
        let (mtime, size) = stat(&path)?;
        Ok(Some(SnapshotFile {
            mtime,
            size,
            path,
            seq,
            doc,
        }))
    });
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

    let mut checkpoints = Vec::new();
    let cp_dir = dir.join("snapshot-checkpoints");
    if cp_dir.is_dir() {
        for month in sorted_entries(&cp_dir)? {
            if !month.path().is_dir() {
                continue;
            }
            for e in sorted_entries(&month.path())? {
                let path = e.path();
                if !e
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".checkpoint.json")
                {
                    continue;
                }
                let mut doc = parse_json_doc::<Checkpoint>(&path, "snapshot checkpoint")?;
                doc.value.databases.shrink_to_fit();
                doc.value.pending_removed_files.shrink_to_fit();
                let (mtime, size) = stat(&path)?;
                checkpoints.push(CheckpointFile {
                    mtime,
                    size,
                    path,
                    doc,
                });
            }
        }
    }

    share_checkpoint_paths(&snapshots, &mut checkpoints);

    let marker_path = dir.join("table-index-conversion-completed");
    let table_index_marker = if marker_path.is_file() {
        Some(parse_json_doc::<TableIndexMarker>(&marker_path, "table-index marker")?.value)
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

    let disk = DiskFiles::list(&dir.join("dbs"), &format!("{node_id}/dbs"))?;

    let has_removed = snapshots
        .iter()
        .any(|s| s.doc.value.removed_files.is_some());
    let id_only = snapshots
        .iter()
        .flat_map(|s| s.doc.value.databases.iter())
        .next()
        .map(|(_, _, f)| ParquetPath::parse(&f.path).is_some_and(|p| p.is_id_only()));
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

    let mut node = Node {
        id: node_id.to_string(),
        dir,
        generation,
        snapshots,
        checkpoints,
        table_index_marker,
        table_index_files,
        wal,
        live: BTreeMap::new(),
        findings,
        loaded_snapshots: 0,
        purged: BTreeMap::new(),
        hidden: BTreeMap::new(),
        load_window: load_window.unwrap_or_else(|| generation.default_load_window()),
    };
    live::compute_live(&mut node);
    let removed = node.removal_named_ids();
    set_purged_aside(&mut node, data_dir, &disk, &removed);
    live::compute_hidden(&mut node, &disk, &removed);
    findings::check_files(&mut node, disk)?;
    Ok(node)
}

/// Points each checkpoint entry at the path of the snapshot entry for the same file, where
/// the two are equal, instead of a copy of its own.
///
/// A checkpoint lists again every file of the snapshots it covers: on a deep history, a
/// million paths held twice.
fn share_checkpoint_paths(snapshots: &[SnapshotFile], checkpoints: &mut [CheckpointFile]) {
    let Some(covered) = checkpoints
        .iter()
        .map(|c| c.doc.value.last_snapshot_sequence_number)
        .max()
    else {
        return;
    };
    let listed = || {
        snapshots
            .iter()
            .take_while(|s| s.seq <= covered)
            .flat_map(|s| s.doc.value.databases.iter())
    };
    let mut paths: HashMap<FileId, &Arc<str>> = HashMap::with_capacity(listed().count());
    paths.extend(listed().map(|(_, _, f)| (f.id, &f.path)));
    for c in checkpoints {
        for f in c.doc.value.databases.entries_mut() {
            if let Some(&p) = paths.get(&f.id) {
                if *p == f.path {
                    f.path = Arc::clone(p);
                }
            }
        }
    }
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

/// Takes the entries the server purged out of the live set: they hold no row a query can
/// return (expired, or of a deleted table), and they are not damage.
fn set_purged_aside(
    node: &mut Node,
    data_dir: &Path,
    disk: &DiskFiles,
    removal_named: &HashSet<FileId>,
) {
    node.purged = find_purged(node, data_dir, disk, removal_named);
    let ids: BTreeSet<FileId> = node
        .purged
        .values()
        .flat_map(|t| t.entries.iter().map(|f| f.id))
        .collect();
    for files in node.live.values_mut() {
        files.retain(|f| !ids.contains(&f.entry.id));
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

    #[test]
    fn checkpoint_entries_share_the_paths_of_the_snapshots_they_cover() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/influxdb3-3.10/small");
        let node = discover_node(&fixture, "node0").unwrap();
        let in_snapshots: HashMap<FileId, &Arc<str>> = node
            .snapshots
            .iter()
            .flat_map(|s| s.doc.value.databases.iter())
            .map(|(_, _, f)| (f.id, &f.path))
            .collect();
        let mut shared = 0;
        for c in &node.checkpoints {
            for (_, _, f) in c.doc.value.databases.iter() {
                if let Some(p) = in_snapshots.get(&f.id) {
                    assert!(Arc::ptr_eq(p, &f.path), "file {} is held twice", f.id);
                    shared += 1;
                }
            }
        }
        assert!(shared > 0, "the fixture's checkpoints cover some snapshot");
    }
}
