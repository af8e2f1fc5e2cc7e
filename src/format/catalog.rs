//! Database and table names from a node's catalog, read-only.
//!
//! Releases 3.0 to 3.9 keep the catalog as framed JSON: a 10-byte version tag (`idb3.00N.l`
//! for a log file, `idb3.00N.s` for a snapshot), a 4-byte checksum, then one JSON document.
//! 3.0 to 3.3 write them under `catalogs/` (with `_catalog_checkpoint`), 3.4 to 3.9 under
//! `catalog/v2/` (`snapshot` and `logs/`). The snapshot holds the databases and tables as
//! they were; each log holds a batch of operations after it (`CreateDatabase`,
//! `CreateTable`, ...). From 3.10 the catalog is binary, under `catalog/v3/` (`snapshot` and
//! `logs/`): a 64-byte header (`IDB3`, then little-endian fields: flags at 0x0C, record count at
//! 0x28, group-index entries at 0x2C), a snapshot's group index (24 bytes an entry), then
//! records of a 16-byte header (id `u16`, flags `u16`, sequence `u64`, length `u32`) and a
//! `bitcode` body; `CreateDatabase` is record 4 and `CreateTable` record 6
//! (`influxdb3_catalog/src/format/` in the server's source).

use crate::format::ids::{DbId, TableId, TableKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Database and table names by id, from the catalog files of the node at `node_dir`; empty
/// when it has none kompactor can read. A file that is not framed JSON is left out.
pub fn names(node_dir: &Path) -> BTreeMap<TableKey, (String, String)> {
    let mut files = Vec::new();
    for dir in [
        "catalogs",
        "catalog/v2",
        "catalog/v2/logs",
        "catalog/v3",
        "catalog/v3/logs",
    ] {
        let Ok(entries) = std::fs::read_dir(node_dir.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut dbs: BTreeMap<u64, String> = BTreeMap::new();
    let mut tables: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut docs: Vec<(u8, u64, Value)> = files
        .iter()
        .filter_map(|p| {
            let bytes = std::fs::read(p).ok()?;
            if bytes.starts_with(b"IDB3") {
                binary(&bytes, &mut dbs, &mut tables);
                return None;
            }
            let (kind, doc) = framed_json(&bytes)?;
            let seq = doc["sequence_number"]
                .as_u64()
                .or_else(|| doc["sequence"].as_u64())
                .unwrap_or(0);
            // Snapshots first, then the logs in sequence order.
            Some((u8::from(kind == b'l'), seq, doc))
        })
        .collect();
    docs.sort_by_key(|(kind, seq, _)| (*kind, *seq));
    for (_, _, doc) in &docs {
        walk(doc, &mut dbs, &mut tables);
    }
    tables
        .into_iter()
        .filter_map(|((db, t), name)| {
            let db_name = dbs.get(&db)?.clone();
            Some((
                TableKey {
                    db: DbId(db),
                    table: TableId(t),
                },
                (db_name, name),
            ))
        })
        .collect()
}

/// A retention period as a 3.10 catalog record holds it.
#[derive(bitcode::Decode)]
#[allow(dead_code)]
enum WireRetention {
    Indefinite,
    Duration { duration_secs: u64 },
}

/// A table's field family mode, as a 3.10 catalog record holds it.
#[derive(bitcode::Decode)]
#[allow(dead_code)]
enum WireFieldFamilyMode {
    Aware,
    Auto,
}

/// Record 4 of a 3.10 catalog.
#[derive(bitcode::Decode)]
#[allow(dead_code)]
struct CreateDatabase {
    database_id: u32,
    database_name: String,
    retention_period: WireRetention,
}

/// Record 6 of a 3.10 catalog.
#[derive(bitcode::Decode)]
#[allow(dead_code)]
struct CreateTable {
    database_id: u32,
    database_name: String,
    table_name: String,
    table_id: u32,
    retention_period: WireRetention,
    field_family_mode: WireFieldFamilyMode,
}

/// The databases and tables a 3.10+ binary catalog file creates (see the module's
/// documentation); a file cut short, or a record that does not decode, ends the reading.
fn binary(b: &[u8], dbs: &mut BTreeMap<u64, String>, tables: &mut BTreeMap<(u64, u64), String>) {
    let u16_at = |o: usize| b.get(o..o + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let (Some(records), Some(groups)) = (u32_at(0x28), u32_at(0x2C)) else {
        return;
    };
    let mut at = 64 + groups as usize * 24;
    for _ in 0..records {
        let (Some(id), Some(len)) = (u16_at(at), u32_at(at + 12)) else {
            return;
        };
        let Some(body) = b.get(at + 16..at + 16 + len as usize) else {
            return;
        };
        at += 16 + len as usize;
        match id {
            4 => {
                if let Ok(r) = bitcode::decode::<CreateDatabase>(body) {
                    dbs.insert(u64::from(r.database_id), r.database_name);
                }
            }
            6 => {
                if let Ok(r) = bitcode::decode::<CreateTable>(body) {
                    dbs.entry(u64::from(r.database_id))
                        .or_insert(r.database_name);
                    tables.insert(
                        (u64::from(r.database_id), u64::from(r.table_id)),
                        r.table_name,
                    );
                }
            }
            _ => {}
        }
    }
}

/// The kind (`l` log, `s` snapshot) and JSON of a framed catalog file.
fn framed_json(bytes: &[u8]) -> Option<(u8, Value)> {
    let tag = bytes.get(..10)?;
    if !tag.starts_with(b"idb3.00") || tag[8] != b'.' {
        return None;
    }
    let doc = serde_json::from_slice(bytes.get(14..)?).ok()?;
    Some((tag[9], doc))
}

/// Collects every database and table a catalog document names, by id, wherever they sit:
/// operations (`CreateDatabase`, `CreateTable`, ...) and snapshot entries alike carry
/// `database_id` with `database_name`, and tables `table_id` with `table_name`.
fn walk(v: &Value, dbs: &mut BTreeMap<u64, String>, tables: &mut BTreeMap<(u64, u64), String>) {
    match v {
        Value::Object(m) => {
            // A snapshot's database: `{id, name, tables: {repo: [[table_id, {table_name}]]}}`.
            if let (Some(id), Some(name), Some(repo)) = (
                m.get("id").and_then(Value::as_u64),
                m.get("name").and_then(Value::as_str),
                m.get("tables")
                    .and_then(|t| t.get("repo"))
                    .and_then(Value::as_array),
            ) {
                dbs.insert(id, name.to_string());
                for pair in repo {
                    let t = pair.get(1);
                    if let (Some(tid), Some(tname)) = (
                        pair.get(0).and_then(Value::as_u64),
                        t.and_then(|t| t.get("table_name")).and_then(Value::as_str),
                    ) {
                        tables.insert((id, tid), tname.to_string());
                    }
                }
            }
            let db = m.get("database_id").and_then(Value::as_u64);
            if let (Some(id), Some(name)) = (db, m.get("database_name").and_then(Value::as_str)) {
                dbs.insert(id, name.to_string());
            }
            let table = m.get("table_id").and_then(Value::as_u64);
            if let (Some(db), Some(t), Some(name)) =
                (db, table, m.get("table_name").and_then(Value::as_str))
            {
                tables.insert((db, t), name.to_string());
            }
            for x in m.values() {
                walk(x, dbs, tables);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, dbs, tables);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, json: &str) -> Vec<u8> {
        let mut b = b"idb3.004.".to_vec();
        b.push(kind);
        b.extend([0, 0, 0, 0]);
        b.extend(json.as_bytes());
        b
    }

    #[test]
    fn names_come_from_the_operations_of_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("catalog/v2/logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("00000000000000000001.catalog"),
            frame(b'l', r#"{"catalog_batch":{"Database":{"database_id":1,"database_name":"metrics","ops":[{"CreateDatabase":{"database_id":1,"database_name":"metrics"}},{"CreateTable":{"database_id":1,"database_name":"metrics","table_name":"temp-°C","table_id":0}}]}},"sequence_number":1}"#),
        )
        .unwrap();
        std::fs::write(
            logs.join("00000000000000000002.catalog"),
            frame(b'l', r#"{"catalog_batch":{"Database":{"database_id":1,"database_name":"metrics","ops":[{"CreateTable":{"database_id":1,"database_name":"metrics","table_name":"net/io","table_id":1}}]}},"sequence_number":2}"#),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("catalog/v2/snapshot"),
            frame(b's', r#"{"databases":{"repo":[[2,{"id":2,"name":"events","tables":{"repo":[[0,{"table_id":0,"table_name":"温度"}]]}}]]},"sequence":0}"#),
        )
        .unwrap();
        std::fs::write(logs.join("binary.catalog"), b"IDB3 binary").unwrap();
        let n = names(dir.path());
        assert_eq!(
            n[&TableKey {
                db: DbId(2),
                table: TableId(0)
            }],
            ("events".into(), "温度".into())
        );
        let key = |t| TableKey {
            db: DbId(1),
            table: TableId(t),
        };
        assert_eq!(n[&key(0)], ("metrics".into(), "temp-°C".into()));
        assert_eq!(n[&key(1)], ("metrics".into(), "net/io".into()));
    }
}
