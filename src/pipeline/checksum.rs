//! Verification: an order-independent checksum over every column of every row.
//!
//! The same checksum is computed over the merged rows before they are written (from row
//! hashes taken as the inputs were read, and as deduplicated rows were made) and over the
//! written files read back. Row count, time range and checksum must all agree before a
//! group's inputs may be replaced.

use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::format::parquet::{sql_ident, Column, ColumnType};
use duckdb::Connection;
use serde::{Deserialize, Serialize};

/// Row count, time range and a sum of row hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub rows: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
    /// Sum of DuckDB's `hash()` of every row; a sum, unlike XOR, is not fooled by a row
    /// written twice.
    /// Written as a decimal string: JSON readers would round a 128-bit number.
    #[serde(serialize_with = "ser_i128", deserialize_with = "de_i128")]
    pub hash_sum: i128,
}

fn de_i128<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i128, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn ser_i128<S: serde::Serializer>(v: &i128, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl Checksum {
    pub fn empty() -> Checksum {
        Checksum {
            rows: 0,
            min_time: Nanos::MAX,
            max_time: Nanos::MIN,
            hash_sum: 0,
        }
    }

    /// Takes away `rows` rows whose hashes sum to `hash_sum`: rows being replaced by others
    /// of the same keys and times, so the time range stays.
    pub fn without(self, rows: u64, hash_sum: i128) -> Checksum {
        Checksum {
            rows: self.rows - rows,
            hash_sum: self.hash_sum.wrapping_sub(hash_sum),
            ..self
        }
    }
}

/// Combines the checksums of disjoint sets of rows.
impl std::ops::Add for Checksum {
    type Output = Checksum;

    fn add(self, o: Checksum) -> Checksum {
        Checksum {
            rows: self.rows + o.rows,
            min_time: self.min_time.min(o.min_time),
            max_time: self.max_time.max(o.max_time),
            hash_sum: self.hash_sum.wrapping_add(o.hash_sum),
        }
    }
}

/// The SQL expression of one row's hash: DuckDB's `hash()` of every column, in order.
pub fn row_hash(columns: &[Column]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| sql_ident(&c.name)).collect();
    format!("hash({})", cols.join(", "))
}

/// Computes the checksum of `source` (a table name, subquery or `read_parquet(...)` call).
pub fn checksum(conn: &Connection, columns: &[Column], source: &str) -> Result<Checksum> {
    checksum_of(conn, columns, &row_hash(columns), source)
}

/// Computes the checksum of `source`, whose column `hashes` holds each row's `row_hash`
/// computed earlier.
pub fn checksum_from(
    conn: &Connection,
    columns: &[Column],
    hashes: &str,
    source: &str,
) -> Result<Checksum> {
    checksum_of(conn, columns, &sql_ident(hashes), source)
}

fn checksum_of(
    conn: &Connection,
    columns: &[Column],
    hash: &str,
    source: &str,
) -> Result<Checksum> {
    let time = columns
        .iter()
        .find(|c| c.ty == ColumnType::Time)
        .map(|c| sql_ident(&c.name))
        .ok_or_else(|| Error::new("table has no time column"))?;
    let sql = format!(
        "SELECT count(*), coalesce(epoch_ns(min({time})), {max}), coalesce(epoch_ns(max({time})), {min}), \
         coalesce(sum({hash}::HUGEINT), 0) FROM {source}",
        max = i64::MAX,
        min = i64::MIN,
    );
    let (rows, min, max, hash): (i64, i64, i64, i128) = conn.query_row(&sql, [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(Checksum {
        rows: rows as u64,
        min_time: Nanos(min),
        max_time: Nanos(max),
        hash_sum: hash,
    })
}
