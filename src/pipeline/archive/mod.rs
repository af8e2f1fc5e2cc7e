//! The archive directory: Hive-partitioned Parquet plus kompactor's records under `_kompactor/`.
//!
//! An archive directory holds `node=<node>/db=<db>/table=<table>/date=YYYY-MM-DD/*.parquet`
//! (merged, deduplicated, sorted, self-describing like compacted files) and kompactor's own
//! records under `_kompactor/`: `ARCHIVE.json` (what makes a directory an archive), one
//! manifest per run in `manifests/`, and the files a restore took back in `restored/<run>/`.
//!
//! - [`plan`]: which UTC days of which tables an archive run takes.
//! - [`write`]: merging them into the archive and taking them out of the nodes.

pub mod plan;
pub mod write;

use crate::durable::fsutil::atomic_write;
use crate::error::{Error, Result};
use crate::format::ids::{DbId, FileId, Nanos, TableId, TableKey};
use crate::format::layout::{date_of, STATE_DIR};
use crate::pipeline::checksum::Checksum;
use crate::pipeline::discover::Node;
use crate::pipeline::row_digest::RowDigest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// kompactor's own directory inside an archive.
pub const META: &str = "_kompactor";

/// The width of an archived window: one UTC day.
pub const DAY: Nanos = Nanos(86_400_000_000_000);

fn one() -> u32 {
    1
}

/// `_kompactor/ARCHIVE.json`: marks a directory as a kompactor archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveMarker {
    /// Always `kompactor-archive`.
    pub format: String,
    /// The archive layout's version (1).
    pub version: u32,
}

/// One archived file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// Relative to the archive dir.
    pub path: String,
    pub size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
}

/// A node file a window was made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    pub id: FileId,
    pub path: String,
    pub size_bytes: u64,
    pub row_count: u64,
}

/// One archived window (a UTC day of one table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Window {
    pub node: String,
    pub db_id: DbId,
    pub table_id: TableId,
    pub db: String,
    pub table: String,
    pub date: String,
    pub window_start: Nanos,
    pub window_end: Nanos,
    pub files: Vec<ArchivedFile>,
    /// The merge's own check of the rows (DuckDB's `hash()`, whatever DuckDB wrote the
    /// archive).
    pub checksum: Checksum,
    /// The rows of the archived files by kompactor's own algorithm, which any later build
    /// recomputes alike; archives written before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<RowDigest>,
    pub sources: Vec<Source>,
}

/// `_kompactor/manifests/<run-id>.json`: what one archive run moved into the archive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// The version of this document's layout (1); manifests written before it carried none.
    #[serde(default = "one")]
    pub format_version: u32,
    pub run_id: String,
    pub created: String,
    pub data_dir: String,
    pub windows: Vec<Window>,
}

/// The run's scratch directory inside the archive, relative to it.
pub fn tmp_rel(run_id: &str) -> String {
    format!("{META}/tmp/{run_id}")
}

/// Where an undo moves a run's archived files, relative to the archive.
pub fn undone_rel(run_id: &str) -> String {
    format!("{META}/undone/{run_id}")
}

pub fn marker(dir: &Path) -> PathBuf {
    dir.join(META).join("ARCHIVE.json")
}

/// Makes `dir` a kompactor archive, or checks that it is one.
pub fn open_archive(dir: &Path, create: bool) -> Result<()> {
    if marker(dir).is_file() {
        return Ok(());
    }
    if !create {
        return Err(Error::at(
            dir,
            "not a kompactor archive (no _kompactor/ARCHIVE.json)",
        ));
    }
    let doc = ArchiveMarker {
        format: "kompactor-archive".into(),
        version: 1,
    };
    atomic_write(
        &marker(dir),
        &serde_json::to_vec_pretty(&doc).expect("json"),
        &dir.join(META).join("tmp"),
        None,
    )
}

/// Reads every manifest of an archive, oldest first.
pub fn manifests(dir: &Path) -> Result<Vec<ArchiveManifest>> {
    let mdir = dir.join(META).join("manifests");
    if !mdir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&mdir)
        .map_err(|e| Error::io(&mdir, "list", e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let bytes = fs::read(p).map_err(|e| Error::io(p, "read", e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::at(p, format!("not a valid archive manifest: {e}")))
        })
        .collect()
}

/// `names.json`: database and table names by id, as `kompactor maintain` records them
/// from the server (`SHOW TABLES` and the catalog's ids).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamesFile {
    /// The version of this document's layout (1); files written before it carried none.
    #[serde(default)]
    pub format_version: u32,
    /// The server the names were read from.
    #[serde(default)]
    pub url: Option<String>,
    /// When, RFC 3339 UTC.
    #[serde(default)]
    pub written_at: Option<String>,
    /// Database name to its id and tables.
    pub databases: BTreeMap<String, NamedDb>,
}

/// One database of a [`NamesFile`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedDb {
    /// `null` when the server did not say.
    pub id: Option<DbId>,
    /// Table name to its id.
    pub tables: BTreeMap<String, NamedTable>,
}

/// One table of a [`NamedDb`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedTable {
    /// `null` when the server did not say.
    pub id: Option<TableId>,
}

/// Database and table names: from a names file, `name-id` paths (up to 3.5), or ids.
pub struct Names(BTreeMap<TableKey, (String, String)>);

impl Names {
    /// Reads `given`, else `DATA_DIR/.kompactor/names.json` when present.
    pub fn load(data_dir: &Path, given: Option<&Path>) -> Result<Names> {
        let path = given
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join(STATE_DIR).join("names.json"));
        let mut out = BTreeMap::new();
        if path.is_file() {
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
            let doc: NamesFile = serde_json::from_slice(&bytes)
                .map_err(|e| Error::at(&path, format!("not a valid names file: {e}")))?;
            for (db, d) in doc.databases {
                let Some(db_id) = d.id else { continue };
                for (table, t) in d.tables {
                    if let Some(table_id) = t.id {
                        out.insert(
                            TableKey {
                                db: db_id,
                                table: table_id,
                            },
                            (db.clone(), table),
                        );
                    }
                }
            }
        } else if given.is_some() {
            return Err(Error::at(&path, "names file not found"));
        }
        Ok(Names(out))
    }

    /// The names of a table of `node`.
    pub fn of(&self, node: &Node, key: TableKey) -> (String, String) {
        if let Some(n) = self.0.get(&key) {
            return n.clone();
        }
        node.table_names(key)
            .unwrap_or_else(|| (key.db.to_string(), key.table.to_string()))
    }
}

/// A Hive partition value: the characters that would split or confuse a path, escaped.
pub fn hive_value(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The partition directory of one archived window.
pub fn partition_dir(node: &str, db: &str, table: &str, start: Nanos) -> String {
    format!(
        "node={}/db={}/table={}/date={}",
        hive_value(node),
        hive_value(db),
        hive_value(table),
        date_of(start)
    )
}
