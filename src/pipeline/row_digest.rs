//! A checksum of rows that kompactor defines itself, for what must stay verifiable after any
//! upgrade of a dependency: archives, which are restored years after they were written.
//!
//! [`checksum`](super::checksum) sums DuckDB's `hash()`, which is fast but is whatever the
//! linked DuckDB makes it. This digest is a function of the values alone (the algorithm is
//! named by [`ALGORITHM`] in every manifest that records one):
//!
//! - each row is encoded as the list of its non-null columns in the byte order of their
//!   names; each column as its name (u32 length, little-endian, then the UTF-8 bytes), a
//!   type tag, and its value: `s` a string (u32 length, then the UTF-8 bytes), `i` an i64,
//!   `u` a u64, `t` a time in nanoseconds (i64), `f` an f64's IEEE 754 bits (u64), each
//!   8 bytes little-endian, `b` a boolean (one byte, 0 or 1);
//! - a row's hash is XXH3-128 (seed 0) of that encoding;
//! - the digest is the row count and the sum of the row hashes modulo 2^128 (a sum, not an
//!   XOR, so that a row written twice changes it).
//!
//! A null column is left out of the encoding: a file whose schema gained a column that is
//! null in every row has the digest it had before.

use crate::error::{Error, Result};
use crate::format::parquet::{read_footer, sql_ident, sql_str, Column, ColumnType};
use duckdb::arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use duckdb::Connection;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The name of the algorithm this module implements, as manifests record it.
pub const ALGORITHM: &str = "kompactor-row-xxh3-128-sum-v1";

/// The digest of a set of rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDigest {
    /// How the digest was computed ([`ALGORITHM`]).
    pub algorithm: String,
    pub rows: u64,
    /// The sum of the row hashes modulo 2^128, in decimal: JSON readers would round it as a
    /// number.
    pub sum: String,
}

/// The digest of the rows of `source` (a table name, subquery or `read_parquet(...)` call)
/// with `columns`.
pub fn digest(conn: &Connection, columns: &[Column], source: &str) -> Result<RowDigest> {
    let (rows, sum) = rows_and_sum(conn, columns, source)?;
    Ok(RowDigest::new(rows, sum))
}

/// The digest of every row of the Parquet files `paths`, each read with the columns its
/// footer lists.
pub fn digest_files(conn: &Connection, paths: &[PathBuf]) -> Result<RowDigest> {
    let (mut rows, mut sum) = (0u64, 0u128);
    for p in paths {
        let footer = read_footer(p)?;
        let source = format!("read_parquet({})", sql_str(&p.to_string_lossy()));
        let (r, s) = rows_and_sum(conn, &footer.columns, &source).map_err(|e| Error {
            path: e.path.or_else(|| Some(p.clone())),
            ..e
        })?;
        rows += r;
        sum = sum.wrapping_add(s);
    }
    Ok(RowDigest::new(rows, sum))
}

impl RowDigest {
    fn new(rows: u64, sum: u128) -> RowDigest {
        RowDigest {
            algorithm: ALGORITHM.to_string(),
            rows,
            sum: sum.to_string(),
        }
    }
}

fn rows_and_sum(conn: &Connection, columns: &[Column], source: &str) -> Result<(u64, u128)> {
    let mut cols: Vec<&Column> = columns.iter().collect();
    cols.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    // Each value read as one Arrow type per column kind, whatever DuckDB stores it as.
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            let id = sql_ident(&c.name);
            match c.ty {
                ColumnType::Time => format!("epoch_ns({id})"),
                ColumnType::Tag | ColumnType::String => format!("{id}::VARCHAR"),
                _ => id,
            }
        })
        .collect();
    let sql = format!("SELECT {} FROM {source}", exprs.join(", "));
    let mut stmt = conn.prepare(&sql)?;
    let (mut rows, mut sum) = (0u64, 0u128);
    let mut buf = Vec::new();
    for batch in stmt.query_arrow([])? {
        let values: Vec<Values> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| Values::of(&batch, i, c))
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            buf.clear();
            for (c, v) in cols.iter().zip(&values) {
                v.encode(&c.name, row, &mut buf);
            }
            sum = sum.wrapping_add(xxhash_rust::xxh3::xxh3_128(&buf));
            rows += 1;
        }
    }
    Ok((rows, sum))
}

/// One column of a batch, as the type the encoding needs.
enum Values<'a> {
    Str(&'a StringArray),
    I64(&'a Int64Array, u8),
    U64(&'a UInt64Array),
    F64(&'a Float64Array),
    Bool(&'a BooleanArray),
}

impl<'a> Values<'a> {
    fn of(batch: &'a RecordBatch, i: usize, c: &Column) -> Result<Values<'a>> {
        let a = batch.column(i).as_any();
        let v = match c.ty {
            ColumnType::Tag | ColumnType::String => a.downcast_ref().map(Values::Str),
            ColumnType::Time => a.downcast_ref().map(|x| Values::I64(x, b't')),
            ColumnType::Integer => a.downcast_ref().map(|x| Values::I64(x, b'i')),
            ColumnType::UInteger => a.downcast_ref().map(Values::U64),
            ColumnType::Float => a.downcast_ref().map(Values::F64),
            ColumnType::Boolean => a.downcast_ref().map(Values::Bool),
        };
        v.ok_or_else(|| {
            Error::new(format!(
                "column {}: DuckDB returned {} for a {:?} column",
                c.name,
                batch.column(i).data_type(),
                c.ty
            ))
        })
    }

    /// Appends column `name` of `row` to `buf`, unless it is null there.
    fn encode(&self, name: &str, row: usize, buf: &mut Vec<u8>) {
        let null = match self {
            Values::Str(a) => a.is_null(row),
            Values::I64(a, _) => a.is_null(row),
            Values::U64(a) => a.is_null(row),
            Values::F64(a) => a.is_null(row),
            Values::Bool(a) => a.is_null(row),
        };
        if null {
            return;
        }
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        match self {
            Values::Str(a) => {
                let s = a.value(row).as_bytes();
                buf.push(b's');
                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                buf.extend_from_slice(s);
            }
            Values::I64(a, tag) => {
                buf.push(*tag);
                buf.extend_from_slice(&a.value(row).to_le_bytes());
            }
            Values::U64(a) => {
                buf.push(b'u');
                buf.extend_from_slice(&a.value(row).to_le_bytes());
            }
            Values::F64(a) => {
                buf.push(b'f');
                buf.extend_from_slice(&a.value(row).to_bits().to_le_bytes());
            }
            Values::Bool(a) => {
                buf.push(b'b');
                buf.push(a.value(row) as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            ty,
        }
    }

    fn table(conn: &Connection, rows: &str) -> RowDigest {
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TABLE t (host VARCHAR, n BIGINT, u UBIGINT, x DOUBLE, ok BOOLEAN, \
             \"time\" TIMESTAMP_NS); INSERT INTO t VALUES {rows}"
        ))
        .unwrap();
        let cols = [
            col("time", ColumnType::Time),
            col("host", ColumnType::Tag),
            col("n", ColumnType::Integer),
            col("u", ColumnType::UInteger),
            col("x", ColumnType::Float),
            col("ok", ColumnType::Boolean),
        ];
        digest(conn, &cols, "t").unwrap()
    }

    /// The algorithm is fixed: these sums are the encoding above hashed, whatever DuckDB
    /// is linked. A change here breaks every archive written before it.
    #[test]
    fn digests_are_the_documented_function_of_the_values() {
        let conn = Connection::open_in_memory().unwrap();
        let one = table(&conn, "('a', -1, 2, 0.5, true, make_timestamp_ns(1000))");
        let mut enc = Vec::new();
        for (name, tag, v) in [
            ("host", b's', [&1u32.to_le_bytes()[..], b"a"].concat()),
            ("n", b'i', (-1i64).to_le_bytes().to_vec()),
            ("ok", b'b', vec![1]),
            ("time", b't', 1000i64.to_le_bytes().to_vec()),
            ("u", b'u', 2u64.to_le_bytes().to_vec()),
            ("x", b'f', 0.5f64.to_bits().to_le_bytes().to_vec()),
        ] {
            enc.extend_from_slice(&(name.len() as u32).to_le_bytes());
            enc.extend_from_slice(name.as_bytes());
            enc.push(tag);
            enc.extend_from_slice(&v);
        }
        assert_eq!(one.rows, 1);
        assert_eq!(one.algorithm, ALGORITHM);
        assert_eq!(one.sum, xxhash_rust::xxh3::xxh3_128(&enc).to_string());
        assert_eq!(one.sum, "197819581250969443639813468547763470981");
    }

    #[test]
    fn order_does_not_count_nulls_are_left_out_and_duplicates_do_count() {
        let conn = Connection::open_in_memory().unwrap();
        let a = "('a', 1, NULL, NULL, NULL, make_timestamp_ns(1))";
        let b = "('b', NULL, 7, '-0.0'::DOUBLE, false, make_timestamp_ns(2))";
        let ab = table(&conn, &format!("{a}, {b}"));
        assert_eq!(ab, table(&conn, &format!("{b}, {a}")));
        assert_ne!(ab, table(&conn, &format!("{a}, {b}, {b}")));
        assert_ne!(
            ab,
            table(
                &conn,
                &format!("{a}, ('b', NULL, 7, 0.0, false, make_timestamp_ns(2))")
            )
        );
        // A column null in every row: the same digest as without it.
        let without = digest(
            &conn,
            &[
                col("host", ColumnType::Tag),
                col("n", ColumnType::Integer),
                col("time", ColumnType::Time),
            ],
            "(SELECT * FROM t WHERE host = 'a')",
        )
        .unwrap();
        let with = table(&conn, a);
        assert_eq!(without, with);
    }
}
