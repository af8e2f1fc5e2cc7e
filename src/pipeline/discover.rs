//! Discovery: everything a node keeps on disk, and the file set the server would load from it.

use crate::error::{Error, Result};
use crate::format::model::{
    Checkpoint, Doc, FileEntry, Snapshot, TableIndexMarker, KNOWN_SNAPSHOT_VERSIONS,
};
use crate::pipeline::purged::{find_purged, PurgedTable};
use crate::format::ids::{FileId, Nanos, SnapshotSeq, TableKey, WalSeq};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory kompactor keeps its own state in, inside the data dir.
pub const STATE_DIR: &str = ".kompactor";

/// The on-disk generation of a node, from the newest feature its files show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Generation {
    /// Snapshots without a `version` key (Jan 2025 alpha).
    #[serde(rename = "alpha")]
    Alpha,
    /// `version: "1"` snapshots without `removed_files`.
    #[serde(rename = "3.0-3.1")]
    V3_0,
    /// Snapshots carry `removed_files`.
    #[serde(rename = "3.2+")]
    V3_2,
    /// A table index (`db-indices/`, marker) exists.
    #[serde(rename = "3.3+")]
    V3_3,
    /// Parquet paths use ids only (`dbs/<db_id>/<table_id>/...`).
    #[serde(rename = "3.6+")]
    V3_6,
    /// Snapshot checkpoints exist.
    #[serde(rename = "3.8.2+")]
    V3_8_2,
}

impl Generation {
    /// How many of the newest snapshots a server of this generation loads by default.
    pub fn default_load_window(self) -> usize {
        match self {
            Generation::Alpha | Generation::V3_0 => 1000,
            // --gen1-lookback-duration 1 month / gen1 10m.
            _ => 4383,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Generation::Alpha => "alpha",
            Generation::V3_0 => "3.0-3.1",
            Generation::V3_2 => "3.2+ (removed_files)",
            Generation::V3_3 => "3.3+ (table index)",
            Generation::V3_6 => "3.6+ (id-only paths)",
            Generation::V3_8_2 => "3.8.2+ (checkpoints)",
        }
    }
}

/// A snapshot file as read from disk.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub seq: SnapshotSeq,
    pub doc: Doc<Snapshot>,
    pub mtime: SystemTime,
}

/// A checkpoint file as read from disk.
#[derive(Clone, Debug)]
pub struct CheckpointFile {
    pub path: PathBuf,
    pub doc: Doc<Checkpoint>,
    pub mtime: SystemTime,
}

/// A file the server would serve, with where it is listed.
#[derive(Clone, Debug, Serialize)]
pub struct LiveFile {
    pub table: TableKey,
    #[serde(flatten)]
    pub entry: FileEntry,
}

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
    /// A Parquet file under the node that the server does not serve.
    Unreferenced {
        path: String,
        listed_in_metadata: bool,
    },
    /// One file id given to two different paths.
    DuplicateId { id: FileId, paths: Vec<String> },
    /// Files listed only in snapshots older than the server's default load window.
    OutsideLoadWindow { snapshot: SnapshotSeq, files: usize },
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
            Finding::Unreferenced { path, listed_in_metadata: true } => {
                format!("Parquet file is not live (removed, or outside the load window): {path}")
            }
            Finding::Unreferenced { path, listed_in_metadata: false } => {
                format!("Parquet file is referenced by no snapshot or checkpoint: {path}")
            }
            Finding::DuplicateId { id, paths } => {
                format!("file id {id} is used for {} different paths: {}", paths.len(), paths.join(", "))
            }
            Finding::OutsideLoadWindow { snapshot, files } => format!(
                "snapshot {snapshot} is outside the server's default load window: its {files} file(s) are invisible to queries and are left alone"
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

    /// Whether this finding makes a file unsafe to merge.
    pub fn blocks_file(&self) -> Option<FileId> {
        match self {
            Finding::Missing { id, .. } | Finding::SizeMismatch { id, .. } => Some(*id),
            Finding::DuplicateId { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Everything known about one node directory.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub dir: PathBuf,
    pub generation: Generation,
    /// Ascending by sequence number.
    pub snapshots: Vec<SnapshotFile>,
    pub checkpoints: Vec<CheckpointFile>,
    pub table_index_marker: Option<TableIndexMarker>,
    /// Files under `db-indices/` and `table-snapshots/`.
    pub table_index_files: Vec<PathBuf>,
    pub wal: Vec<WalSeq>,
    /// Parquet files under `<node>/dbs/`, by path relative to the data dir, with their size.
    pub parquet_on_disk: BTreeMap<String, u64>,
    /// The file set the server would load, per table, ordered by id.
    pub live: BTreeMap<TableKey, Vec<LiveFile>>,
    pub findings: Vec<Finding>,
    /// Snapshots the server loads (all when checkpoints are used).
    pub loaded_snapshots: usize,
    /// Entries of files the server purged (retention, hard deletes), per table; not in `live`.
    pub purged: BTreeMap<TableKey, PurgedTable>,
}

impl Node {
    pub fn newest_snapshot(&self) -> Option<&SnapshotFile> {
        self.snapshots.last()
    }

    /// The first file id that no snapshot or checkpoint has used or promised.
    pub fn next_free_file_id(&self) -> FileId {
        let mut next = 0u64;
        for s in &self.snapshots {
            let v = &s.doc.value;
            next = next.max(v.next_file_id.0);
            let removed = v.removed_files.iter().flat_map(|r| r.iter());
            for (_, _, f) in v.databases.iter().chain(removed) {
                next = next.max(f.id.0 + 1);
            }
        }
        for c in &self.checkpoints {
            let v = &c.doc.value;
            next = next.max(v.next_file_id.map_or(0, |n| n.0));
            for (_, _, f) in v.databases.iter().chain(v.pending_removed_files.iter()) {
                next = next.max(f.id.0 + 1);
            }
        }
        FileId(next)
    }

    /// The newest checkpoint of each month, oldest month first: what the server merges.
    pub fn effective_checkpoints(&self) -> Vec<&CheckpointFile> {
        let mut by_month: BTreeMap<&str, &CheckpointFile> = BTreeMap::new();
        for c in &self.checkpoints {
            let v = &c.doc.value;
            let e = by_month.entry(v.year_month.as_str()).or_insert(c);
            if v.last_snapshot_sequence_number > e.doc.value.last_snapshot_sequence_number {
                *e = c;
            }
        }
        by_month.into_values().collect()
    }

    /// Display name of a table: `db/table` names from `name-id` paths (up to 3.5), else ids.
    pub fn table_label(&self, key: TableKey) -> String {
        let names = self
            .live
            .get(&key)
            .and_then(|files| files.first())
            .and_then(|f| {
                let segs: Vec<&str> = f.entry.path.split('/').collect();
                let name =
                    |seg: &str, id: u64| seg.strip_suffix(&format!("-{id}")).map(str::to_string);
                Some((
                    name(segs.get(2)?, key.db.0)?,
                    name(segs.get(3)?, key.table.0)?,
                ))
            });
        match names {
            Some((db, table)) => format!("{db}.{table}"),
            None => format!("{}/{}", key.db, key.table),
        }
    }
}

/// Lists the node directories of a data dir (directories holding `snapshots/`).
pub fn list_nodes(data_dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(data_dir).map_err(|e| Error::io(data_dir, "read the data dir", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(data_dir, "list the data dir", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == STATE_DIR {
            continue;
        }
        if entry.path().join("snapshots").is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Checks the data dir and the requested hosts before anything is read.
pub fn check_hosts(data_dir: &Path, hosts: &[String]) -> Result<()> {
    if !data_dir.is_dir() {
        return Err(
            Error::at(data_dir, "data dir does not exist or is not a directory")
                .hint("pass the directory given to `influxdb3 serve --data-dir`"),
        );
    }
    let nodes = list_nodes(data_dir)?;
    for h in hosts {
        if !nodes.contains(h) {
            let known = if nodes.is_empty() {
                "none".to_string()
            } else {
                nodes.join(", ")
            };
            return Err(
                Error::at(data_dir, format!("no node `{h}` in this data dir")).hint(format!(
                    "nodes found: {known} (a node is a directory holding snapshots/)"
                )),
            );
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, "read", e))
}

fn mtime(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
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
    // Check the version tag before the shape, so an unknown format says so.
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let hint = if e.is_eof() { " (the file is truncated)" } else { "" };
        Error::at(path, format!("not a valid snapshot JSON: {e}{hint}"))
            .hint("the node's metadata is damaged; restore this file from a backup before running kompactor")
    })?;
    if let Some(v) = raw.get("version") {
        let known = v
            .as_str()
            .is_some_and(|s| KNOWN_SNAPSHOT_VERSIONS.contains(&s));
        if !known {
            return Err(Error::at(
                path,
                format!("snapshot version {v} is not one kompactor knows (known: \"1\")"),
            )
            .hint("this data dir was written by a newer InfluxDB 3 release; upgrade kompactor"));
        }
    }
    parse_json_doc(path, "snapshot")
}

fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, "list", e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, "list", e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Reads one node: every snapshot, checkpoint, table-index file, WAL name and Parquet file.
pub fn discover_node(data_dir: &Path, node_id: &str) -> Result<Node> {
    let dir = data_dir.join(node_id);
    let mut findings = Vec::new();

    let mut snapshots = Vec::new();
    let entries = sorted_entries(&dir.join("snapshots"))?;
    let bar = crate::progress::bar(entries.len() as u64, "reading");
    bar.set_message(format!("{node_id} snapshots"));
    for e in entries {
        bar.inc(1);
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_suffix(".info.json")
            .and_then(SnapshotSeq::from_inverted_name);
        let Some(seq) = seq else {
            findings.push(Finding::StraySnapshotEntry {
                path: path.display().to_string(),
            });
            continue;
        };
        let doc = read_snapshot(&path)?;
        if doc.value.snapshot_sequence_number != seq {
            return Err(Error::at(
                &path,
                format!(
                    "file name says snapshot {seq} but the file says {}",
                    doc.value.snapshot_sequence_number
                ),
            ));
        }
        snapshots.push(SnapshotFile {
            mtime: mtime(&path)?,
            path,
            seq,
            doc,
        });
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
                let doc = parse_json_doc::<Checkpoint>(&path, "snapshot checkpoint")?;
                checkpoints.push(CheckpointFile {
                    mtime: mtime(&path)?,
                    path,
                    doc,
                });
            }
        }
    }

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

    let mut parquet_on_disk = BTreeMap::new();
    let dbs = dir.join("dbs");
    if dbs.is_dir() {
        for e in walkdir::WalkDir::new(&dbs).sort_by_file_name() {
            let e = e.map_err(|e| Error::at(&dbs, format!("could not list: {e}")))?;
            if e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".parquet") {
                let rel = e.path().strip_prefix(data_dir).expect("under data dir");
                let size = e
                    .metadata()
                    .map_err(|err| Error::at(e.path(), format!("could not stat: {err}")))?
                    .len();
                parquet_on_disk.insert(rel.to_string_lossy().replace('\\', "/"), size);
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
            let segs: Vec<&str> = f.path.split('/').collect();
            segs.len() > 3
                && segs[2].bytes().all(|b| b.is_ascii_digit())
                && segs[3].bytes().all(|b| b.is_ascii_digit())
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

    let mut node = Node {
        id: node_id.to_string(),
        dir,
        generation,
        snapshots,
        checkpoints,
        table_index_marker,
        table_index_files,
        wal,
        parquet_on_disk,
        live: BTreeMap::new(),
        findings,
        loaded_snapshots: 0,
        purged: BTreeMap::new(),
    };
    compute_live(&mut node);
    set_purged_aside(&mut node, data_dir);
    check_files(&mut node);
    Ok(node)
}

/// Reads every requested node.
pub fn discover_all(data_dir: &Path, hosts: &[String]) -> Result<Vec<Node>> {
    hosts
        .iter()
        .map(|h| {
            log::info!("reading node {h}");
            let t = std::time::Instant::now();
            let node = discover_node(data_dir, h);
            log::debug!("node {h}: reading took {:.2}s", t.elapsed().as_secs_f64());
            node
        })
        .collect()
}

/// Builds the file set exactly as the server does at startup (spec §3).
fn compute_live(node: &mut Node) {
    let mut live: BTreeMap<FileId, LiveFile> = BTreeMap::new();
    let add = |live: &mut BTreeMap<FileId, LiveFile>, files: &crate::format::model::DbFiles| {
        for (db, table, f) in files.iter() {
            live.insert(
                f.id,
                LiveFile {
                    table: TableKey { db, table },
                    entry: f.clone(),
                },
            );
        }
    };
    let remove = |live: &mut BTreeMap<FileId, LiveFile>, files: &crate::format::model::DbFiles| {
        for (_, _, f) in files.iter() {
            live.remove(&f.id);
        }
    };

    let cps = node.effective_checkpoints();
    if let Some(newest) = cps
        .iter()
        .map(|c| c.doc.value.last_snapshot_sequence_number)
        .max()
    {
        for c in &cps {
            add(&mut live, &c.doc.value.databases);
            remove(&mut live, &c.doc.value.pending_removed_files);
        }
        let newer: Vec<&SnapshotFile> = node.snapshots.iter().filter(|s| s.seq > newest).collect();
        for s in &newer {
            add(&mut live, &s.doc.value.databases);
            if let Some(r) = &s.doc.value.removed_files {
                remove(&mut live, r);
            }
        }
        node.loaded_snapshots = newer.len();
    } else {
        let window = node.generation.default_load_window();
        let apply_removals = node.generation >= Generation::V3_2;
        let loaded = node.snapshots.len().min(window);
        for s in node.snapshots.iter().rev().take(window) {
            add(&mut live, &s.doc.value.databases);
            if apply_removals {
                if let Some(r) = &s.doc.value.removed_files {
                    remove(&mut live, r);
                }
            }
        }
        node.loaded_snapshots = loaded;
        let outside = node.snapshots.len() - loaded;
        for s in &node.snapshots[..outside] {
            let n = s.doc.value.databases.iter().count();
            if n > 0 {
                node.findings.push(Finding::OutsideLoadWindow {
                    snapshot: s.seq,
                    files: n,
                });
            }
        }
    }

    let mut by_table: BTreeMap<TableKey, Vec<LiveFile>> = BTreeMap::new();
    for (_, f) in live {
        by_table.entry(f.table).or_default().push(f);
    }
    node.live = by_table;
}

/// Takes the entries the server purged out of the live set: they hold no row a query can
/// return (expired, or of a deleted table), and they are not damage.
fn set_purged_aside(node: &mut Node, data_dir: &Path) {
    node.purged = find_purged(node, data_dir);
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

fn check_files(node: &mut Node) {
    let data_dir = node
        .dir
        .parent()
        .expect("node dir has a parent")
        .to_path_buf();
    let mut paths_by_id: HashMap<FileId, BTreeSet<String>> = HashMap::new();
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    for s in &node.snapshots {
        for (_, _, f) in s.doc.value.databases.iter() {
            paths_by_id.entry(f.id).or_default().insert(f.path.clone());
            listed.insert(&f.path);
        }
    }
    for c in &node.checkpoints {
        for (_, _, f) in c.doc.value.databases.iter() {
            paths_by_id.entry(f.id).or_default().insert(f.path.clone());
            listed.insert(&f.path);
        }
    }
    let mut findings = Vec::new();
    let mut dup: Vec<_> = paths_by_id
        .into_iter()
        .filter(|(_, p)| p.len() > 1)
        .collect();
    dup.sort_by_key(|(id, _)| *id);
    for (id, paths) in dup {
        findings.push(Finding::DuplicateId {
            id,
            paths: paths.into_iter().collect(),
        });
    }
    let mut live_paths = BTreeSet::new();
    for f in node.live.values().flatten() {
        live_paths.insert(f.entry.path.as_str());
        match node.parquet_on_disk.get(&f.entry.path) {
            None => {
                // Not under dbs/ (or not named .parquet): check the path itself.
                match fs::metadata(data_dir.join(&f.entry.path)) {
                    Ok(m) if m.len() != f.entry.size_bytes => {
                        findings.push(Finding::SizeMismatch {
                            id: f.entry.id,
                            path: f.entry.path.clone(),
                            recorded: f.entry.size_bytes,
                            on_disk: m.len(),
                        })
                    }
                    Ok(_) => {}
                    Err(_) => findings.push(Finding::Missing {
                        id: f.entry.id,
                        path: f.entry.path.clone(),
                    }),
                }
            }
            Some(&size) if size != f.entry.size_bytes => findings.push(Finding::SizeMismatch {
                id: f.entry.id,
                path: f.entry.path.clone(),
                recorded: f.entry.size_bytes,
                on_disk: size,
            }),
            Some(_) => {}
        }
    }
    for p in node.parquet_on_disk.keys() {
        if !live_paths.contains(p.as_str()) {
            findings.push(Finding::Unreferenced {
                path: p.clone(),
                listed_in_metadata: listed.contains(p.as_str()),
            });
        }
    }
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
}

/// The newest data time of each table's live files.
pub fn newest_time(files: &[LiveFile]) -> Nanos {
    files
        .iter()
        .map(|f| f.entry.max_time)
        .max()
        .unwrap_or(Nanos::MIN)
}
