//! The JSON documents the server keeps for a node: snapshots, checkpoints, table-index files.
//!
//! The model is lossless: every integer stays a 64-bit integer, the `[key, value]` pair maps
//! keep their order, unknown keys are kept in `extra` and written back, and a document is
//! written back with its keys in the order it was read.

mod de;
mod mapped;
mod path;

pub use mapped::MappedText;
pub use path::EntryPath;

use crate::format::ids::{DbId, FileId, FileIdMap, Nanos, SnapshotSeq, TableId, WalSeq};
use de::deserialize_with_extra;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::sync::Arc;

/// One Parquet file as the metadata records it.
///
/// Documents hold entries behind an [`EntryRc`]: the snapshots, the checkpoints, the live
/// set and the plan of a deep history all refer to the same millions of files, and share
/// them rather than copy them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileEntry {
    pub id: FileId,
    pub path: EntryPath,
    pub size_bytes: u64,
    pub row_count: u64,
    pub chunk_time: Nanos,
    pub min_time: Nanos,
    pub max_time: Nanos,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The keys of a file entry or a database's tables that kompactor does not know, kept to be
/// written back.
///
/// Boxed and absent when empty (almost always): an inline map would take 72 bytes of every
/// entry, and a deep history holds millions of entries, several times over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extra(Option<Box<Map<String, Value>>>);

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(m) => m.serialize(s),
            None => s.collect_map(std::iter::empty::<(&str, &Value)>()),
        }
    }
}

impl From<Map<String, Value>> for Extra {
    fn from(m: Map<String, Value>) -> Extra {
        Extra((!m.is_empty()).then(|| Box::new(m)))
    }
}

/// A shared [`FileEntry`].
///
/// Counted without weak references (`triomphe::Arc`): an entry (80 bytes) and its count then
/// take 96 bytes of glibc's heap, where std's `Arc` and its two counts took 112; a deep
/// history holds two million of them.
pub type EntryRc = triomphe::Arc<FileEntry>;

deserialize_with_extra!(FileEntry, "a file entry",
    required: [id, path, size_bytes, row_count, chunk_time, min_time, max_time], defaulted: []);

/// The files a document lists under one table, in order.
///
/// A snapshot lists one file per table, almost always; the list holds that one in place,
/// where a `Vec` would take a heap block for it: on a deep history, millions of blocks.
pub type FileList = SmallVec<[EntryRc; 1]>;

/// The tables of one database: `{"tables": [[table_id, [file, ...]], ...]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DbTables {
    pub tables: Vec<(TableId, FileList)>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A database's tables as they are read: each entry through the pool ([`de::Shared`]).
struct DbTablesRead {
    tables: Vec<(TableId, SmallVec<[de::Shared; 1]>)>,
    extra: Map<String, Value>,
}

deserialize_with_extra!(DbTablesRead, "a database's tables", required: [tables], defaulted: []);

impl<'de> Deserialize<'de> for DbTables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DbTables, D::Error> {
        let read = DbTablesRead::deserialize(d)?;
        // The outer conversion keeps its vector's allocation; a list of one is never on the heap.
        let tables = read
            .tables
            .into_iter()
            .map(|(table, files)| (table, files.into_iter().map(|f| f.0).collect()))
            .collect();
        Ok(DbTables {
            tables,
            extra: read.extra.into(),
        })
    }
}

/// File entries that a document being read takes instead of its own equal copies, by id.
///
/// A checkpoint lists again every file of the snapshots it covers: on a deep history a
/// million entries. Read through a pool of the snapshots' entries, it allocates none of
/// them, where reading them first and sharing them after held them all twice.
///
/// Cloning it shares it: the checkpoints are read side by side, through one pool.
///
/// A slot per id ([`FileIdMap`]): 8 bytes per file of a deep history, where a hash map
/// of its two million entries took 36 MB at discovery's peak.
#[derive(Clone)]
pub struct EntryPool(Arc<FileIdMap<EntryRc>>);

impl EntryPool {
    /// A pool of `entries`; of two with one id, the later.
    pub fn new<'a>(entries: impl Iterator<Item = &'a EntryRc> + Clone) -> EntryPool {
        let mut map = FileIdMap::for_ids(entries.clone().map(|f| f.id));
        for f in entries {
            map.insert(f.id, EntryRc::clone(f));
        }
        EntryPool(Arc::new(map))
    }

    /// The pool's entry of `id`.
    pub fn get(&self, id: FileId) -> Option<&EntryRc> {
        self.0.get(id)
    }
}

/// The `[[db_id, {"tables": ...}], ...]` pair map used for added and removed files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DbFiles(pub Vec<(DbId, DbTables)>);

impl DbFiles {
    /// Every file entry with the database and table it is listed under.
    pub fn iter(&self) -> impl Iterator<Item = (DbId, TableId, &EntryRc)> + Clone {
        self.0.iter().flat_map(|(db, t)| {
            t.tables
                .iter()
                .flat_map(move |(table, files)| files.iter().map(move |f| (*db, *table, f)))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Gives back the room parsing left in the lists: with one file per table a list keeps
    /// room for four, and a deep history holds millions of entries.
    ///
    /// Each list moves to an allocation of its exact size rather than shrinking in place:
    /// shrinking leaves the rest of the old block as a gap too small for the next list,
    /// and over millions of lists those gaps held a third of a deep history's heap. A
    /// whole freed block is the size the next document's lists grow to, and is reused.
    pub fn shrink_to_fit(&mut self) {
        fit(&mut self.0);
        for (_, db) in &mut self.0 {
            fit(&mut db.tables);
            for (_, files) in &mut db.tables {
                if files.spilled() && files.capacity() > files.len() {
                    *files = files.drain(..).collect();
                }
            }
        }
    }

    /// Removes every entry whose id `drop` selects; returns how many were removed.
    ///
    /// Databases and tables stay listed even when they end up empty, as the server itself
    /// leaves them: only file entries change.
    pub fn retain_files(&mut self, mut keep: impl FnMut(&FileEntry) -> bool) -> usize {
        let mut removed = 0;
        for (_, db) in &mut self.0 {
            for (_, files) in &mut db.tables {
                let before = files.len();
                files.retain(|f| keep(f));
                removed += before - files.len();
            }
        }
        removed
    }

    /// Puts `with[id]`'s entries in place of each entry of that id (in its table's list, where
    /// it stood); returns how many entries were replaced.
    pub fn replace_files(
        &mut self,
        with: &std::collections::HashMap<FileId, Vec<EntryRc>>,
    ) -> usize {
        let mut n = 0;
        for (_, db) in &mut self.0 {
            for (_, files) in &mut db.tables {
                if !files.iter().any(|f| with.contains_key(&f.id)) {
                    continue;
                }
                let mut out = FileList::new();
                for f in files.drain(..) {
                    match with.get(&f.id) {
                        Some(new) => {
                            n += 1;
                            out.extend(new.iter().cloned());
                        }
                        None => out.push(f),
                    }
                }
                *files = out;
            }
        }
        n
    }

    /// Appends a file under its database and table, creating either only if missing, so a
    /// key is never listed twice (the server rejects duplicate keys).
    pub fn push(&mut self, db: DbId, table: TableId, file: EntryRc) {
        let pos = match self.0.iter().position(|(d, _)| *d == db) {
            Some(p) => p,
            None => {
                self.0.push((db, DbTables::default()));
                self.0.len() - 1
            }
        };
        let tables = &mut self.0[pos].1.tables;
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, files)) => files.push(file),
            None => tables.push((table, smallvec::smallvec![file])),
        }
    }

    /// Sums of size, rows and the time range over all entries, as the totals keys hold them.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::empty();
        for (_, _, f) in self.iter() {
            t.parquet_size_bytes += f.size_bytes;
            t.row_count += f.row_count;
            t.min_time = t.min_time.min(f.min_time);
            t.max_time = t.max_time.max(f.max_time);
        }
        t
    }
}

/// Moves `v` to an allocation that holds exactly its elements (see [`DbFiles::shrink_to_fit`]).
fn fit<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() {
        let mut exact = Vec::with_capacity(v.len());
        exact.append(v);
        *v = exact;
    }
}

/// The summary keys every snapshot and checkpoint carries about its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub parquet_size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
}

impl Totals {
    /// The server's values for "no files": zero sums, `i64::MAX` / `i64::MIN` times.
    pub fn empty() -> Totals {
        Totals {
            parquet_size_bytes: 0,
            row_count: 0,
            min_time: Nanos::MAX,
            max_time: Nanos::MIN,
        }
    }

    /// The four summary keys' values, in the order documents hold them.
    fn parts(self) -> (u64, u64, Nanos, Nanos) {
        (
            self.parquet_size_bytes,
            self.row_count,
            self.min_time,
            self.max_time,
        )
    }
}

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

fn node_id_of(extra: &Map<String, Value>) -> Option<&str> {
    ["node_id", "writer_id", "host_id"]
        .iter()
        .find_map(|k| extra.get(*k).and_then(Value::as_str))
}

/// A parsed document together with the key order it was read with.
#[derive(Clone, Debug)]
pub struct Doc<T> {
    pub value: T,
    /// Shared between documents of the same shape.
    key_order: Arc<[String]>,
}

impl<T: Serialize + DeserializeOwned> Doc<T> {
    /// Parses JSON text; the error is serde_json's, with line and column.
    pub fn parse(text: &[u8]) -> Result<Doc<T>, serde_json::Error> {
        de::parse_recording_keys(text)
    }

    /// Parses JSON text like [`Doc::parse`], taking from `pool` every file entry equal to
    /// one of its own; also how many of its entries the pool did not have.
    pub fn parse_sharing(
        text: &[u8],
        pool: &EntryPool,
    ) -> Result<(Doc<T>, usize), serde_json::Error> {
        let (doc, not_in_pool) = de::with_pool(pool, || de::parse_recording_keys(text));
        Ok((doc?, not_in_pool))
    }

    /// Interprets an already parsed JSON value, keeping its key order.
    pub fn from_value(raw: Value) -> Result<Doc<T>, serde_json::Error> {
        let key_order: Arc<[String]> = match &raw {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Arc::new([]),
        };
        Ok(Doc {
            value: serde_json::from_value(raw)?,
            key_order,
        })
    }

    /// A new document with the given key order (for files this tool creates).
    pub fn new(value: T, like: &Doc<T>) -> Doc<T> {
        Doc {
            value,
            key_order: Arc::clone(&like.key_order),
        }
    }

    /// The document as a JSON value, top-level keys in their original order.
    pub fn to_value(&self) -> Value {
        let v = serde_json::to_value(&self.value).expect("model serialises to JSON");
        match v {
            Value::Object(mut m) => {
                let mut out = Map::new();
                for k in self.key_order.iter() {
                    if let Some(x) = m.shift_remove(k) {
                        out.insert(k.clone(), x);
                    }
                }
                out.extend(m);
                Value::Object(out)
            }
            other => other,
        }
    }

    /// Pretty-printed JSON, as the server writes it, top-level keys in their original order.
    ///
    /// The same text as pretty-printing [`Doc::to_value`], without building that tree: a
    /// commit's new snapshot can list millions of replaced files, and as a tree of JSON
    /// values they took gigabytes. The model is printed once, and only its top-level keys are
    /// put back in order; each value's text was printed one level deep, where it goes back.
    pub fn to_bytes(&self) -> Vec<u8> {
        use serde::Serializer as _;
        let text = serde_json::to_vec_pretty(&self.value).expect("model serialises to JSON");
        let Ok(de::TopLevel(fields)) = serde_json::from_slice::<de::TopLevel>(&text) else {
            return text; // not an object: nothing to order
        };
        let position = |k: &str| self.key_order.iter().position(|o| o == k);
        let mut ordered: Vec<(Option<usize>, usize, &str, &serde_json::value::RawValue)> = fields
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (position(k), i, k.as_str(), *v))
            .collect();
        // Keys the document was read with first, in its order; new ones after, as printed.
        ordered.sort_by_key(|&(p, i, _, _)| (p.is_none(), p, i));
        let mut out = Vec::with_capacity(text.len());
        serde_json::Serializer::pretty(&mut out)
            .collect_map(ordered.into_iter().map(|(_, _, k, v)| (k, v)))
            .expect("printed JSON prints again");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_ZERO: &str = r#"{
      "version": "1", "node_id": "n", "next_file_id": 3, "snapshot_sequence_number": 2,
      "wal_file_sequence_number": 5, "catalog_sequence_number": 1,
      "parquet_size_bytes": 10, "row_count": 2,
      "min_time": 1794981000500000030, "max_time": 1794981041595000001,
      "databases": [[1, {"tables": [[0, [{"id": 2, "path": "n/dbs/a-1/b-0/2026-11-18/05-50/0000000005.parquet",
        "size_bytes": 10, "row_count": 2, "chunk_time": 1794981000000000000,
        "min_time": 1794981000500000030, "max_time": 1794981041595000001, "future": [1]}]]]}]],
      "something_new": {"x": 18446744073709551615}
    }"#;

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

    #[test]
    fn round_trip_keeps_integers_unknown_keys_and_order() {
        let doc: Doc<Snapshot> = Doc::parse(THREE_ZERO.as_bytes()).unwrap();
        let original: Value = serde_json::from_str(THREE_ZERO).unwrap();
        assert_eq!(doc.to_value(), original);
        let keys: Vec<_> = doc
            .to_value()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let want: Vec<_> = original.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, want);
        assert_eq!(doc.value.node_id(), Some("n"));
        assert!(doc.value.removed_files.is_none());
        let f = doc.value.databases.iter().next().unwrap().2;
        assert_eq!(f.max_time, Nanos(1_794_981_041_595_000_001));
    }

    #[test]
    fn bytes_are_the_pretty_printed_value_in_the_documents_key_order() {
        let doc: Doc<Snapshot> = Doc::parse(THREE_ZERO.as_bytes()).unwrap();
        let via_value = |d: &Doc<Snapshot>| serde_json::to_vec_pretty(&d.to_value()).unwrap();
        assert_eq!(doc.to_bytes(), via_value(&doc));
        // A key the template was not read with goes after the others.
        let mut grown = doc.value.clone();
        grown.removed_files = Some(grown.databases.clone());
        let short_template: Doc<Snapshot> = Doc::parse(
            THREE_ZERO
                .replace(
                    r#""something_new": {"x": 18446744073709551615}"#,
                    r#""z": 1"#,
                )
                .as_bytes(),
        )
        .unwrap();
        let grown = Doc::new(grown, &short_template);
        assert_eq!(grown.to_bytes(), via_value(&grown));
        let text = String::from_utf8(grown.to_bytes()).unwrap();
        assert!(
            text.find("removed_files") > text.find("\"databases\""),
            "{text}"
        );
    }

    #[test]
    fn missing_and_repeated_fields_are_errors_and_optional_ones_default() {
        let no_path = THREE_ZERO.replace(
            r#""path": "n/dbs/a-1/b-0/2026-11-18/05-50/0000000005.parquet","#,
            "",
        );
        let e = Doc::<Snapshot>::parse(no_path.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("missing field `path`"), "{e}");
        let twice = THREE_ZERO.replace(r#""row_count": 2,"#, r#""row_count": 2, "row_count": 3,"#);
        let e = Doc::<Snapshot>::parse(twice.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("duplicate field `row_count`"), "{e}");
        let extra_twice = THREE_ZERO.replace(r#""future": [1]"#, r#""future": [1], "future": 2"#);
        assert!(Doc::<Snapshot>::parse(extra_twice.as_bytes()).is_err());
        let trailing = format!("{THREE_ZERO} x");
        assert!(Doc::<Snapshot>::parse(trailing.as_bytes()).is_err());
        let cp = r#"{"year_month": "2026-11", "last_snapshot_sequence_number": 4,
          "wal_file_sequence_number": 4, "catalog_sequence_number": 1, "parquet_size_bytes": 0,
          "row_count": 0, "min_time": 0, "max_time": 0, "databases": []}"#;
        let doc = Doc::<Checkpoint>::parse(cp.as_bytes()).unwrap();
        assert!(doc.value.pending_removed_files.is_empty());
        assert_eq!((doc.value.version, doc.value.next_file_id), (None, None));
        assert_eq!(doc.key_order.len(), 9);
    }

    #[test]
    fn alpha_snapshot_names_the_node_writer_id() {
        let alpha = r#"{"writer_id": "w", "next_file_id": 0, "next_db_id": 2, "next_table_id": 3,
          "next_column_id": 9, "snapshot_sequence_number": 1, "wal_file_sequence_number": 1,
          "catalog_sequence_number": 0, "parquet_size_bytes": 0, "row_count": 0,
          "min_time": 9223372036854775807, "max_time": -9223372036854775808, "databases": []}"#;
        let doc: Doc<Snapshot> = Doc::parse(alpha.as_bytes()).unwrap();
        assert_eq!(doc.value.version, None);
        assert_eq!(doc.value.node_id(), Some("w"));
        assert_eq!(
            doc.to_value(),
            serde_json::from_str::<Value>(alpha).unwrap()
        );
    }

    #[test]
    fn push_never_lists_a_key_twice() {
        let mut d = DbFiles::default();
        let f = |id| {
            EntryRc::new(FileEntry {
                id: FileId(id),
                path: "".into(),
                size_bytes: 1,
                row_count: 1,
                chunk_time: Nanos(0),
                min_time: Nanos(0),
                max_time: Nanos(1),
                extra: Extra::default(),
            })
        };
        d.push(DbId(1), TableId(0), f(1));
        d.push(DbId(1), TableId(0), f(2));
        d.push(DbId(1), TableId(1), f(3));
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].1.tables.len(), 2);
        assert_eq!(d.retain_files(|e| e.id != FileId(2)), 1);
        assert_eq!(d.totals().row_count, 2);
    }

    #[test]
    fn a_pool_gives_its_entry_only_for_an_equal_one() {
        let snap: Doc<Snapshot> = Doc::parse(THREE_ZERO.as_bytes()).unwrap();
        let entry =
            |doc: &Doc<Snapshot>| EntryRc::clone(doc.value.databases.iter().next().unwrap().2);
        let pool = EntryPool::new(std::iter::once(&entry(&snap)));
        let (same, not_in_pool) = Doc::parse_sharing(THREE_ZERO.as_bytes(), &pool).unwrap();
        assert!(EntryRc::ptr_eq(&entry(&same), &entry(&snap)));
        assert_eq!(not_in_pool, 0);
        let resized = THREE_ZERO.replace(
            r#""size_bytes": 10, "row_count": 2, "chunk"#,
            r#""size_bytes": 11, "row_count": 2, "chunk"#,
        );
        let (other, not_in_pool): (Doc<Snapshot>, _) =
            Doc::parse_sharing(resized.as_bytes(), &pool).unwrap();
        assert_eq!(not_in_pool, 1);
        assert!(!EntryRc::ptr_eq(&entry(&other), &entry(&snap)));
        assert_eq!(
            entry(&other).size_bytes,
            11,
            "an entry that differs is read as it is"
        );
        let alone: Doc<Snapshot> = Doc::parse(THREE_ZERO.as_bytes()).unwrap();
        assert!(
            !EntryRc::ptr_eq(&entry(&alone), &entry(&snap)),
            "no pool outside parse_sharing"
        );
    }
}
