//! Reading a node's metadata files: snapshots, checkpoints, the table index and the WAL
//! names, each parsed, with errors that name the file.

use super::findings::Finding;
use super::{CheckpointFile, Generation, ListedDirs, Node, SnapshotFile};
use crate::error::{Error, Result};
use crate::format::ids::{FileIdMap, SnapshotSeq, WalSeq};
use crate::format::layout::ParquetPath;
use crate::format::model::{
    Checkpoint, Doc, EntryPool, MappedText, Snapshot, TableIndexMarker, KNOWN_SNAPSHOT_VERSIONS,
};
use crate::progress::StepClock;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Reads a node's metadata: snapshots, checkpoints, the table index and the WAL names; the
/// live set and everything that needs the Parquet files are left to compute.
pub(super) fn read_metadata(dir: &Path, node_id: &str, load_window: Option<usize>) -> Result<Node> {
    let mut clock = StepClock::new(node_id);
    let mut findings = Vec::new();
    let snapshots = read_snapshots(dir, node_id, &mut findings)?;
    clock.done("reading the snapshots");
    let checkpoints = read_checkpoints(dir, &snapshots)?;
    clock.done("reading the checkpoints");
    let (table_index_marker, table_index_files) = read_table_index(dir)?;
    let wal = read_wal_names(dir)?;
    let generation = generation_of(
        &snapshots,
        &checkpoints,
        table_index_marker.is_some() || !table_index_files.is_empty(),
    );
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

/// The table index's conversion marker, when present, and the files under `db-indices/`
/// and `table-snapshots/`.
fn read_table_index(dir: &Path) -> Result<(Option<TableIndexMarker>, Vec<PathBuf>)> {
    let marker_path = dir.join("table-index-conversion-completed");
    let marker = if marker_path.is_file() {
        let doc = parse_json_doc(
            &marker_path,
            "table-index marker",
            Doc::<TableIndexMarker>::parse,
        )?;
        Some(doc.value)
    } else {
        None
    };
    let mut files = Vec::new();
    for sub in ["db-indices", "table-snapshots"] {
        let p = dir.join(sub);
        if p.is_dir() {
            for e in walkdir::WalkDir::new(&p).sort_by_file_name() {
                let e = e.map_err(|e| Error::at(&p, format!("could not list: {e}")))?;
                if e.file_type().is_file() {
                    files.push(e.into_path());
                }
            }
        }
    }
    Ok((marker, files))
}

/// The sequence numbers of the WAL files in `wal/`, in order.
fn read_wal_names(dir: &Path) -> Result<Vec<WalSeq>> {
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
    Ok(wal)
}

/// Which releases could have written the node, from the newest feature its metadata shows.
fn generation_of(
    snapshots: &[SnapshotFile],
    checkpoints: &[CheckpointFile],
    has_table_index: bool,
) -> Generation {
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
    if !checkpoints.is_empty() {
        Generation::V3_8_2
    } else if id_only == Some(true) {
        Generation::V3_6
    } else if has_table_index {
        Generation::V3_3
    } else if has_removed {
        Generation::V3_2
    } else if snapshots.iter().any(|s| s.doc.value.version.is_none()) {
        Generation::Alpha
    } else {
        Generation::V3_0
    }
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
