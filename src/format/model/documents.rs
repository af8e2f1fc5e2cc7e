//! The documents themselves: snapshots, checkpoints, table-index files and the table-index
//! marker.

use super::de::deserialize_with_extra;
use super::{DbFiles, FileEntry};
use crate::format::ids::{DbId, FileId, Nanos, SnapshotSeq, TableId, WalSeq};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A snapshot file, `snapshots/<inverted seq>.info.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// `"1"` from beta/3.0 on; absent in the alpha.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub next_file_id: FileId,
    pub snapshot_sequence_number: SnapshotSeq,
    pub wal_file_sequence_number: WalSeq,
    pub catalog_sequence_number: u64,
    pub parquet_size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
    pub databases: DbFiles,
    /// Files removed by this snapshot (3.2+); absent before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_files: Option<DbFiles>,
    /// Keys the model does not interpret (the node id key among them), kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(Snapshot, "a snapshot",
    required: [next_file_id, snapshot_sequence_number, wal_file_sequence_number,
        catalog_sequence_number, parquet_size_bytes, row_count, min_time, max_time, databases],
    defaulted: [version, removed_files]);

/// The snapshot format versions this tool understands.
pub const KNOWN_SNAPSHOT_VERSIONS: &[&str] = &["1"];

impl Snapshot {
    /// The node name, under whichever key this release used for it.
    pub fn node_id(&self) -> Option<&str> {
        node_id_of(&self.extra)
    }

    /// Sets `parquet_size_bytes`, `row_count`, `min_time`, `max_time` from the added files.
    pub fn recompute_totals(&mut self) {
        (
            self.parquet_size_bytes,
            self.row_count,
            self.min_time,
            self.max_time,
        ) = self.databases.totals().parts();
    }
}

/// A snapshot checkpoint, `snapshot-checkpoints/YYYY-MM/<inverted seq>.checkpoint.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checkpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub year_month: String,
    pub last_snapshot_sequence_number: SnapshotSeq,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_file_id: Option<FileId>,
    pub wal_file_sequence_number: WalSeq,
    pub catalog_sequence_number: u64,
    pub parquet_size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
    /// Every live file of the month, cumulative.
    pub databases: DbFiles,
    /// Removals of files that earlier months' checkpoints list.
    pub pending_removed_files: DbFiles,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(Checkpoint, "a snapshot checkpoint",
    required: [year_month, last_snapshot_sequence_number, wal_file_sequence_number,
        catalog_sequence_number, parquet_size_bytes, row_count, min_time, max_time, databases],
    defaulted: [version, next_file_id, pending_removed_files]);

impl Checkpoint {
    /// Sets the totals from the month's files.
    pub fn recompute_totals(&mut self) {
        (
            self.parquet_size_bytes,
            self.row_count,
            self.min_time,
            self.max_time,
        ) = self.databases.totals().parts();
    }
}

/// A table-index file, `db-indices/<db>/<table>/index.info.json` (3.3+).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableIndex {
    pub db_id: DbId,
    pub table_id: TableId,
    pub files: Vec<FileEntry>,
    pub latest_snapshot_sequence_number: SnapshotSeq,
    pub parquet_size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(TableIndex, "a table-index file",
    required: [db_id, table_id, files, latest_snapshot_sequence_number, parquet_size_bytes,
        row_count, min_time, max_time],
    defaulted: []);

/// What checking a table-index file needs of it: its table, and the id and path of each file
/// it lists, the path borrowed from the text where it has no escapes.
///
/// Read where [`TableIndex`] would be read only to be looked through: a deep history's index
/// lists every file again, and this reads it without a heap block per entry. The fields it
/// does not keep are required all the same, with their types, so that a file this reads is
/// one [`TableIndex`] reads too (except for keys it would keep as unknown).
#[derive(Debug, Deserialize)]
pub struct TableIndexFiles<'a> {
    pub db_id: DbId,
    pub table_id: TableId,
    #[serde(borrow)]
    pub files: Vec<IndexedFile<'a>>,
    #[serde(rename = "latest_snapshot_sequence_number")]
    _latest_snapshot_sequence_number: SnapshotSeq,
    #[serde(rename = "parquet_size_bytes")]
    _parquet_size_bytes: u64,
    #[serde(rename = "row_count")]
    _row_count: u64,
    #[serde(rename = "min_time")]
    _min_time: Nanos,
    #[serde(rename = "max_time")]
    _max_time: Nanos,
}

/// One file of a [`TableIndexFiles`]: the fields of a [`FileEntry`], of which the id and path
/// are kept.
#[derive(Debug, Deserialize)]
pub struct IndexedFile<'a> {
    pub id: FileId,
    #[serde(borrow)]
    pub path: std::borrow::Cow<'a, str>,
    #[serde(rename = "size_bytes")]
    _size_bytes: u64,
    #[serde(rename = "row_count")]
    _row_count: u64,
    #[serde(rename = "chunk_time")]
    _chunk_time: Nanos,
    #[serde(rename = "min_time")]
    _min_time: Nanos,
    #[serde(rename = "max_time")]
    _max_time: Nanos,
}

/// The table-index marker, `table-index-conversion-completed`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableIndexMarker {
    pub last_sequence_number: SnapshotSeq,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(TableIndexMarker, "a table-index marker",
    required: [last_sequence_number], defaulted: []);

/// The node name in a document's unknown keys, under whichever key its release used.
fn node_id_of(extra: &Map<String, Value>) -> Option<&str> {
    ["node_id", "writer_id", "host_id"]
        .iter()
        .find_map(|k| extra.get(*k).and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::model::Doc;

    #[test]
    fn a_table_index_is_looked_through_as_it_is_read() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/influxdb3-3.8.3/small/node0/db-indices/1/0/index.info.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let full = Doc::<TableIndex>::parse(text.as_bytes()).unwrap().value;
        let lean: TableIndexFiles = serde_json::from_str(&text).unwrap();
        assert_eq!((lean.db_id, lean.table_id), (full.db_id, full.table_id));
        let ids = |f: &IndexedFile| (f.id, f.path.to_string());
        assert_eq!(
            lean.files.iter().map(ids).collect::<Vec<_>>(),
            full.files
                .iter()
                .map(|f| (f.id, f.path.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(!lean.files.is_empty());
        assert!(
            lean.files
                .iter()
                .all(|f| matches!(f.path, std::borrow::Cow::Borrowed(_))),
            "paths are borrowed from the text"
        );
        // The fields it does not keep are required all the same, as by TableIndex.
        for field in ["\"max_time\"", "\"size_bytes\""] {
            let broken = text.replacen(field, "\"other\"", 1);
            assert!(
                serde_json::from_str::<TableIndexFiles>(&broken).is_err(),
                "{field}"
            );
            assert!(
                Doc::<TableIndex>::parse(broken.as_bytes()).is_err(),
                "{field}"
            );
        }
    }
}
