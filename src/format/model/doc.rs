//! A parsed document with the key order it was read with, and writing it back in that order.

use super::{de, EntryPool};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A parsed document together with the key order it was read with.
#[derive(Clone, Debug)]
pub struct Doc<T> {
    pub value: T,
    /// Shared between documents of the same shape.
    pub(super) key_order: Arc<[String]>,
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
    use crate::format::ids::Nanos;
    use crate::format::model::{Checkpoint, EntryRc, Snapshot};

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
