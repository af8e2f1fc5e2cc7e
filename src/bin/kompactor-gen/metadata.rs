//! The node's metadata, built from the files as written (exact sizes, row counts and time
//! ranges) with kompactor's own model: a snapshot per event, snapshot checkpoints over the
//! oldest of them, and the table index with its marker.

use crate::shape::{Cfg, Event, FileJob, Written};
use kompactor::format::ids::{DbId, FileId, Nanos, SnapshotSeq, TableId, WalSeq};
use kompactor::format::model::{
    Checkpoint, DbFiles, DbTables, Doc, EntryRc, FileEntry, Snapshot, TableIndex, TableIndexMarker,
};
use serde_json::Map;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SNAPSHOT_TEMPLATE: &str = r#"{"version": "1", "node_id": "", "next_file_id": 0,
  "snapshot_sequence_number": 0, "wal_file_sequence_number": 0, "catalog_sequence_number": 0,
  "parquet_size_bytes": 0, "row_count": 0, "min_time": 0, "max_time": 0,
  "databases": [], "removed_files": []}"#;

const CHECKPOINT_TEMPLATE: &str = r#"{"version": "1", "node_id": "", "year_month": "",
  "last_snapshot_sequence_number": 0, "next_file_id": 0, "wal_file_sequence_number": 0,
  "catalog_sequence_number": 0, "parquet_size_bytes": 0, "row_count": 0, "min_time": 0,
  "max_time": 0, "databases": [], "pending_removed_files": []}"#;

const TABLE_INDEX_TEMPLATE: &str = r#"{"node_id": "", "db_id": 0, "table_id": 0, "files": [],
  "latest_snapshot_sequence_number": 0, "parquet_size_bytes": 0, "row_count": 0,
  "min_time": 0, "max_time": 0}"#;

const MARKER_TEMPLATE: &str = r#"{"last_sequence_number": 0}"#;

/// The written files, as the metadata documents list them.
struct Listing<'a> {
    cfg: &'a Cfg,
    node_dir: PathBuf,
    events: &'a [Event],
    jobs: &'a [FileJob],
    written: &'a [Written],
    /// The files each event added.
    by_event: Vec<Vec<(&'a FileJob, &'a Written)>>,
}

/// Writes the snapshots, checkpoints and table index of the files `jobs` (as `written`).
pub fn write_metadata(
    cfg: &Cfg,
    events: &[Event],
    jobs: &[FileJob],
    written: &[Written],
) -> Result<(), String> {
    let mut by_event: Vec<Vec<(&FileJob, &Written)>> = vec![Vec::new(); events.len()];
    for (j, w) in jobs.iter().zip(written) {
        by_event[j.event].push((j, w));
    }
    let listing = Listing {
        cfg,
        node_dir: cfg.args.out.join(&cfg.args.node),
        events,
        jobs,
        written,
        by_event,
    };
    let after = listing.write_snapshots()?;
    listing.write_checkpoints(&after)?;
    listing.write_table_index()
}

impl Listing<'_> {
    /// The metadata entry of file `j`, written as `w`.
    fn entry(&self, j: &FileJob, w: &Written) -> FileEntry {
        FileEntry {
            id: FileId(j.id),
            path: j.rel.as_str().into(),
            size_bytes: w.size,
            row_count: w.rows,
            chunk_time: Nanos(self.cfg.window_start(j.window)),
            min_time: Nanos(w.min),
            max_time: Nanos(w.max),
            extra: Default::default(),
        }
    }

    /// One snapshot per event; per event, the next file id and catalog sequence after it
    /// (for the checkpoints).
    fn write_snapshots(&self) -> Result<Vec<(u64, u64)>, String> {
        let (cfg, a) = (self.cfg, &self.cfg.args);
        // Tables are created, then the new tag and field are added to each.
        let tables = a.dbs * a.tables;
        let catalog_seq = |w: u64| {
            if cfg.after_change(w) {
                2 * tables + 1
            } else {
                tables + 1
            }
        };
        let snap_t = template::<Snapshot>(SNAPSHOT_TEMPLATE);
        let mut next_file_id = 0u64;
        let mut max_catalog = 0u64;
        let mut after: Vec<(u64, u64)> = Vec::with_capacity(self.events.len());
        for (e, files) in self.events.iter().zip(&self.by_event) {
            let mut dbs = DbFiles::default();
            for (j, w) in files {
                dbs.push(DbId(j.db), TableId(j.table), EntryRc::new(self.entry(j, w)));
                next_file_id = next_file_id.max(j.id + 1);
            }
            max_catalog = max_catalog.max(catalog_seq(e.window));
            let mut s = Snapshot {
                version: Some("1".into()),
                next_file_id: FileId(next_file_id),
                snapshot_sequence_number: SnapshotSeq(e.seq),
                wal_file_sequence_number: WalSeq(e.wal),
                catalog_sequence_number: max_catalog,
                parquet_size_bytes: 0,
                row_count: 0,
                min_time: Nanos::MAX,
                max_time: Nanos::MIN,
                databases: dbs,
                removed_files: Some(DbFiles::default()),
                extra: node_extra(&a.node),
            };
            s.recompute_totals();
            after.push((next_file_id, max_catalog));
            let path = self
                .node_dir
                .join("snapshots")
                .join(format!("{}.info.json", SnapshotSeq(e.seq).inverted_name()));
            write_json(
                &path,
                &Doc::new(s, &snap_t).to_bytes(),
                Some(e.persisted_at),
            )?;
        }
        Ok(after)
    }

    /// Checkpoints: the first `checkpoint_frac` of the snapshots, one per month (by the
    /// snapshot's mtime, as the server groups them), each cumulative over its month.
    fn write_checkpoints(&self, after: &[(u64, u64)]) -> Result<(), String> {
        let a = &self.cfg.args;
        let covered = ((self.events.len() as f64) * a.checkpoint_frac).floor() as usize;
        if covered == 0 {
            return Ok(());
        }
        let cp_t = template::<Checkpoint>(CHECKPOINT_TEMPLATE);
        let mut months: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in self.events[..covered].iter().enumerate() {
            months
                .entry(year_month(e.persisted_at))
                .or_default()
                .push(i);
        }
        for (month, idx) in months {
            let last = *idx.last().expect("month has a snapshot");
            let mut dbs = DbFiles::default();
            for &i in &idx {
                for (j, w) in &self.by_event[i] {
                    dbs.push(DbId(j.db), TableId(j.table), EntryRc::new(self.entry(j, w)));
                }
            }
            let e = &self.events[last];
            let mut c = Checkpoint {
                version: Some("1".into()),
                year_month: month.clone(),
                last_snapshot_sequence_number: SnapshotSeq(e.seq),
                next_file_id: Some(FileId(after[last].0)),
                wal_file_sequence_number: WalSeq(e.wal),
                catalog_sequence_number: after[last].1,
                parquet_size_bytes: 0,
                row_count: 0,
                min_time: Nanos::MAX,
                max_time: Nanos::MIN,
                databases: dbs,
                pending_removed_files: DbFiles::default(),
                extra: node_extra(&a.node),
            };
            c.recompute_totals();
            let path = self
                .node_dir
                .join("snapshot-checkpoints")
                .join(&month)
                .join(format!(
                    "{}.checkpoint.json",
                    SnapshotSeq(e.seq).inverted_name()
                ));
            write_json(
                &path,
                &Doc::new(c, &cp_t).to_bytes(),
                Some(e.persisted_at + 1_000_000_000),
            )?;
        }
        Ok(())
    }

    /// The table index, complete up to the newest snapshot, and its marker.
    fn write_table_index(&self) -> Result<(), String> {
        let a = &self.cfg.args;
        let newest = self.events.last().map_or(0, |e| e.seq);
        let ti_t = template::<TableIndex>(TABLE_INDEX_TEMPLATE);
        let mut per_table: BTreeMap<(u64, u64), Vec<FileEntry>> = BTreeMap::new();
        for (j, w) in self.jobs.iter().zip(self.written) {
            per_table
                .entry((j.db, j.table))
                .or_default()
                .push(self.entry(j, w));
        }
        for ((db, table), files) in per_table {
            let totals = DbFiles(vec![(
                DbId(db),
                DbTables {
                    tables: vec![(
                        TableId(table),
                        files.iter().cloned().map(EntryRc::new).collect(),
                    )],
                    extra: Default::default(),
                },
            )])
            .totals();
            let ti = TableIndex {
                db_id: DbId(db),
                table_id: TableId(table),
                files,
                latest_snapshot_sequence_number: SnapshotSeq(newest),
                parquet_size_bytes: totals.parquet_size_bytes,
                row_count: totals.row_count,
                min_time: totals.min_time,
                max_time: totals.max_time,
                extra: node_extra(&a.node),
            };
            let path = self
                .node_dir
                .join("db-indices")
                .join(db.to_string())
                .join(table.to_string())
                .join("index.info.json");
            write_json(&path, &Doc::new(ti, &ti_t).to_bytes(), None)?;
        }
        let marker_t = template::<TableIndexMarker>(MARKER_TEMPLATE);
        let marker = TableIndexMarker {
            last_sequence_number: SnapshotSeq(newest),
            extra: Map::new(),
        };
        write_json(
            &self.node_dir.join("table-index-conversion-completed"),
            &Doc::new(marker, &marker_t).to_bytes(),
            None,
        )
    }
}

/// A document of the model with the fields (and their order) of `text`.
fn template<T: serde::Serialize + serde::de::DeserializeOwned>(text: &str) -> Doc<T> {
    Doc::parse(text.as_bytes()).expect("template parses")
}

/// The fields the model does not name that every document of the node carries.
fn node_extra(node: &str) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    m.insert("node_id".into(), node.into());
    m
}

/// Writes `bytes` to `path` (creating its directory), with `mtime` (nanoseconds) if given.
fn write_json(path: &Path, bytes: &[u8], mtime: Option<i64>) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(ns) = mtime {
        let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
        set_mtime(path, t)?;
    }
    Ok(())
}

/// Sets the modification time of `path`.
fn set_mtime(path: &Path, t: SystemTime) -> Result<(), String> {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| format!("{}: set mtime: {e}", path.display()))
}

/// `YYYY-MM` of a time in nanoseconds.
fn year_month(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .expect("in range")
        .format("%Y-%m")
        .to_string()
}
