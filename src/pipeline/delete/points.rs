//! The points a delete removes, found in DuckDB: the server's answer for every point of the
//! candidate files, and the keys of those the selection matches.

use super::{DeleteWindow, Selection};
use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::format::parquet::{sql_ident, sql_str};
use crate::pipeline::discover::LiveFile;
use crate::pipeline::merge::{TableSchema, DROP_KEYS};
use duckdb::Connection;
use std::collections::BTreeMap;
use std::path::Path;

/// The points a delete removes, in `conn`: [`DROP_KEYS`] holds their keys and
/// `__kompactor_answers` the server's row of every point of the candidate files.
pub(super) struct Points<'c> {
    conn: &'c Connection,
    /// `a` (an answer) and `d` (a deleted key) are the same point.
    on: String,
    /// Per candidate file (by rank), how many stored versions of deleted points it holds.
    pub(super) hit: BTreeMap<usize, u64>,
}

impl<'c> Points<'c> {
    /// Combines the versions in `rows` (a [`rows_by_point`] query) by the server's rule and
    /// keeps the keys of the answers `sel` matches.
    pub(super) fn select(
        conn: &'c Connection,
        schema: &TableSchema,
        rows: &str,
        sel: &Selection,
    ) -> Result<Self> {
        let keys: Vec<String> = schema.key_columns();
        let k = keys.join(", ");
        let fields: String = schema
            .columns
            .iter()
            .map(|c| sql_ident(&c.name))
            .filter(|id| !keys.contains(id))
            .map(|id| format!(", arg_max({id}, __rank) FILTER (WHERE {id} IS NOT NULL) AS {id}"))
            .collect();
        // One row per point and chunk_time (and hidden or not): what the server answers.
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE __kompactor_answers AS \
             SELECT {k}, __chunk, __hidden{fields} FROM ({rows}) GROUP BY {k}, __chunk, __hidden"
        ))?;
        // One statement, whatever the predicate holds.
        conn.execute(
            &format!(
                "CREATE TEMP TABLE {DROP_KEYS} AS SELECT DISTINCT {k} FROM __kompactor_answers WHERE {}",
                sel.condition()
            ),
            [],
        )
        .map_err(|e| Error::usage(format!("the selection cannot be evaluated: {e}")))?;
        let on = keys
            .iter()
            .map(|c| format!("a.{c} IS NOT DISTINCT FROM d.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut hit = BTreeMap::new();
        let mut stmt = conn.prepare(&format!(
            "SELECT __file, count(*) FROM ({rows}) a SEMI JOIN {DROP_KEYS} d ON {on} GROUP BY __file"
        ))?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (i, n) = r?;
            hit.insert(i as usize, n as u64);
        }
        Ok(Points { conn, on, hit })
    }

    /// The rows the server answers in `chunk` (live files only): those that go, with their
    /// time range, and those that stay. Files, bytes and versions are left for the caller.
    pub(super) fn window(&self, chunk: Nanos) -> Result<DeleteWindow> {
        let rows = |join: &str| -> Result<(i64, Option<i64>, Option<i64>)> {
            Ok(self.conn.query_row(
                &format!(
                    "SELECT count(*), epoch_ns(min(\"time\")), epoch_ns(max(\"time\")) \
                     FROM __kompactor_answers a {join} JOIN {DROP_KEYS} d ON {} \
                     WHERE a.__chunk = {} AND NOT a.__hidden",
                    self.on, chunk.0
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        };
        let (deleted, lo, hi) = rows("SEMI")?;
        let (kept, _, _) = rows("ANTI")?;
        Ok(DeleteWindow {
            window_start: chunk,
            files: 0,
            rows_deleted: deleted as u64,
            versions_removed: 0,
            rows_kept: kept as u64,
            bytes: 0,
            min_time: Nanos(lo.unwrap_or(i64::MAX)),
            max_time: Nanos(hi.unwrap_or(i64::MIN)),
        })
    }
}

/// A query of every row of `ranked`'s files with its rank, its file's index, `chunk_time`,
/// and whether it is hidden (the files from `split` on).
pub(super) fn rows_by_point(
    schema: &TableSchema,
    data_dir: &Path,
    ranked: &[LiveFile],
    split: usize,
) -> String {
    let by =
        |values: Vec<String>| format!("[{}][CAST(file_index AS BIGINT) + 1]", values.join(", "));
    let chunk = by(ranked
        .iter()
        .map(|f| f.entry.chunk_time.0.to_string())
        .collect());
    let hidden = by((0..ranked.len())
        .map(|i| (i >= split).to_string())
        .collect());
    let list: Vec<String> = ranked
        .iter()
        .map(|f| sql_str(&f.entry.path.under(data_dir).to_string_lossy()))
        .collect();
    let cols: Vec<String> = schema.columns.iter().map(|c| sql_ident(&c.name)).collect();
    format!(
        "SELECT {}, file_index AS __rank, file_index AS __file, {chunk} AS __chunk, {hidden} AS __hidden \
         FROM read_parquet([{}], union_by_name = true)",
        cols.join(", "),
        list.join(", ")
    )
}
