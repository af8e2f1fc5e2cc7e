//! The server's deduplication: chunk order, the ranked scan, and combining repeated keys.

use super::engine::Laps;
use super::schema::TableSchema;
use super::{read_one, DEDUPED, DUP_KEYS, KEY_HASH, MERGED, ROW_HASH};
use crate::error::{Error, Result};
use crate::format::ids::{FileId, Nanos};
use crate::format::parquet::{sql_ident, sql_list, Footer};
use crate::pipeline::checksum::{checksum_from, row_hash, Checksum};
use crate::pipeline::discover::LiveFile;
use duckdb::Connection;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

const RANK_COL: &str = "__kompactor_rank";
/// DuckDB's virtual column: the position of a row's file in the `read_parquet` list.
const FILE_INDEX: &str = "file_index";
/// In `DEDUPED`: how many rows of `MERGED` each combined row replaces, and their row hashes'
/// sum.
const REPLACED_ROWS: &str = "__kompactor_replaced_rows";
const REPLACED_SUM: &str = "__kompactor_replaced_sum";

/// Partitions files into clusters whose time ranges overlap; only files in one cluster can
/// share a (series key, time), so only clusters of two or more need deduplication.
pub(super) fn overlap_clusters(inputs: &[LiveFile]) -> Vec<Vec<&LiveFile>> {
    let mut sorted: Vec<&LiveFile> = inputs.iter().collect();
    sorted.sort_by_key(|f| (f.entry.min_time, f.entry.id));
    let mut out: Vec<Vec<&LiveFile>> = Vec::new();
    let mut end = Nanos::MIN;
    for f in sorted {
        match out.last_mut() {
            Some(c) if f.entry.min_time <= end => {
                c.push(f);
                end = end.max(f.entry.max_time);
            }
            _ => {
                out.push(vec![f]);
                end = f.entry.max_time;
            }
        }
    }
    out
}

/// The server's chunk order within one chunk_time: of overlapping files, the one with the
/// smallest `min_time` is the latest; equal `min_time`s fall back to the id (newer wins).
/// Returns the files in order, earliest first, so that a higher index wins.
pub fn chunk_order<'a>(files: &[&'a LiveFile]) -> Vec<&'a LiveFile> {
    let mut v = files.to_vec();
    v.sort_by(|a, b| {
        b.entry
            .min_time
            .cmp(&a.entry.min_time)
            .then(a.entry.id.cmp(&b.entry.id))
    });
    v
}

/// The columns of `files`, as named by their footers.
fn present<'a>(files: &[&LiveFile], footer_of: &HashMap<FileId, &'a Footer>) -> BTreeSet<&'a str> {
    files
        .iter()
        .flat_map(|f| {
            footer_of[&f.entry.id]
                .columns
                .iter()
                .map(|c| c.name.as_str())
        })
        .collect()
}

/// `values[rank]` of the row's rank, as SQL: a list literal indexed by the rank column.
fn by_rank(values: impl Iterator<Item = String>) -> String {
    let values: Vec<String> = values.collect();
    format!("[{}][CAST({RANK_COL} AS BIGINT) + 1]", values.join(", "))
}

/// A query of every row of `ranked` (files in chunk order), in the output's columns and
/// types, with each row's rank (its file's position), its `checksum::row_hash` and, if its
/// file overlaps another (`overlaps[rank]`), a hash of its key.
pub(super) fn ranked_scan(
    data_dir: &Path,
    schema: &TableSchema,
    ranked: &[&LiveFile],
    footer_of: &HashMap<FileId, &Footer>,
    overlaps: &[bool],
) -> String {
    // One scan of all files, listed in chunk order, so that DuckDB's `file_index` is the
    // rank: a scan per file would hold a reader per file in memory. A table with its own
    // `file_index` column would shadow it, so such a table gets one scan per file.
    let rows = if present(ranked, footer_of).contains(FILE_INDEX) {
        ranked
            .iter()
            .enumerate()
            .map(|(rank, f)| {
                format!(
                    "SELECT {}, {rank} AS {RANK_COL} FROM {}",
                    schema.projection(&present(&[*f], footer_of)),
                    read_one(&f.entry.path.under(data_dir))
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    } else {
        // Matching columns by name costs a little per file; needed only if the files differ.
        let columns = |f: &&LiveFile| &footer_of[&f.entry.id].columns;
        let by_name = if ranked.iter().all(|f| columns(f) == columns(&ranked[0])) {
            ""
        } else {
            ", union_by_name = true"
        };
        format!(
            "SELECT {}, {FILE_INDEX} AS {RANK_COL} FROM read_parquet({}{by_name})",
            schema.projection(&present(ranked, footer_of)),
            sql_list(
                &ranked
                    .iter()
                    .map(|f| f.entry.path.under(data_dir))
                    .collect::<Vec<_>>()
            )
        )
    };
    let hash = format!("hash({})", schema.key_columns().join(", "));
    let key_hash = if overlaps.iter().all(|o| !o) {
        String::new()
    } else if overlaps.iter().all(|o| *o) {
        format!(", {hash} AS {KEY_HASH}")
    } else {
        let overlapping = by_rank(overlaps.iter().map(|o| o.to_string()));
        format!(", CASE WHEN {overlapping} THEN {hash} END AS {KEY_HASH}")
    };
    format!(
        "SELECT *, {} AS {ROW_HASH}{key_hash} FROM ({rows})",
        row_hash(&schema.columns)
    )
}

/// The rows of `MERGED` that deduplication replaces, and what replaces them.
pub(super) struct Replaced {
    /// How many rows of `MERGED` have a repeated key.
    pub(super) rows: u64,
    /// The sum of their row hashes.
    pub(super) hash_sum: i128,
    /// The checksum of `DEDUPED`, one row per repeated key.
    pub(super) combined: Checksum,
}

/// Collects in `DUP_KEYS` the key hash of every (series key, time) that occurs more than once
/// among the rows of `MERGED` with a key hash, and in `DEDUPED` one row per such key, which
/// takes for each column the last non-null value in chunk order (the server's rule): by a hash
/// aggregate up to `aggregate_keys` repeated keys, by a window beyond.
/// Returns `None`, and makes neither table, when no key repeats.
pub(super) fn deduplicate(
    conn: &Connection,
    schema: &TableSchema,
    aggregate_keys: u64,
    laps: &mut Laps,
) -> Result<Option<Replaced>> {
    // Repeated keys are found by a 64-bit hash of the key: grouping one integer column costs
    // a fraction of grouping the tag strings. A collision only sends a unique row through
    // the combining below, which groups by the key itself and so returns that row unchanged.
    let found = conn.execute(
        &format!(
            "CREATE OR REPLACE TEMP TABLE {DUP_KEYS} AS SELECT {KEY_HASH} FROM {MERGED} \
             WHERE {KEY_HASH} IS NOT NULL GROUP BY {KEY_HASH} HAVING count(*) > 1"
        ),
        [],
    )?;
    laps.lap("find repeated keys");
    if found == 0 {
        return Ok(None);
    }
    // Each field: its value in the row of the highest rank where it is not null. Each key
    // also counts and sums the rows it replaces, for the checksum.
    let by_aggregate = found as u64 <= aggregate_keys;
    let keys = schema.key_columns();
    let over = if by_aggregate { "" } else { " OVER latest" };
    let select: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let id = sql_ident(&c.name);
            if keys.contains(&id) {
                id
            } else if by_aggregate {
                format!("arg_max({id}, {RANK_COL}) FILTER (WHERE {id} IS NOT NULL) AS {id}")
            } else {
                format!("last_value({id} IGNORE NULLS) OVER latest AS {id}")
            }
        })
        .chain([
            format!("count(*){over} AS {REPLACED_ROWS}"),
            format!("sum({ROW_HASH}){over} AS {REPLACED_SUM}"),
        ])
        .collect();
    let repeated = format!("(SELECT m.* FROM {MERGED} m SEMI JOIN {DUP_KEYS} USING ({KEY_HASH}))");
    let k = keys.join(", ");
    // DuckDB's hash aggregate keeps string values in memory, so it fails in a small budget
    // where a window spills; it is used only for as many keys as the budget allows.
    let combine = if by_aggregate {
        format!("SELECT {} FROM {repeated} GROUP BY {k}", select.join(", "))
    } else {
        format!(
            "SELECT {} FROM {repeated} \
             WINDOW latest AS (PARTITION BY {k} ORDER BY {RANK_COL} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) \
             QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY {RANK_COL}) = 1",
            select.join(", ")
        )
    };
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE {DEDUPED} AS SELECT *, {} AS {ROW_HASH} FROM ({combine})",
        row_hash(&schema.columns),
    ))?;
    let (rows, hash_sum): (i64, i128) = conn.query_row(
        &format!("SELECT sum({REPLACED_ROWS})::BIGINT, sum({REPLACED_SUM}) FROM {DEDUPED}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let combined = checksum_from(conn, &schema.columns, ROW_HASH, DEDUPED)?;
    laps.lap("combine");
    Ok(Some(Replaced {
        rows: rows as u64,
        hash_sum,
        combined,
    }))
}

/// A point present in two files of different chunk_time (an overwrite written after an
/// earlier wide-window compaction) is returned twice by the server; merging would return it
/// once. That changes an answer, so such a group is refused.
pub(super) fn check_cross_chunk_collisions(
    conn: &Connection,
    schema: &TableSchema,
    clusters: &[Vec<&LiveFile>],
    ranked: &[&LiveFile],
) -> Result<()> {
    let mixed: BTreeSet<FileId> = clusters
        .iter()
        .filter(|c| {
            c.iter()
                .map(|f| f.entry.chunk_time)
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        })
        .flatten()
        .map(|f| f.entry.id)
        .collect();
    if mixed.is_empty() {
        return Ok(());
    }
    let in_mixed = by_rank(
        ranked
            .iter()
            .map(|f| mixed.contains(&f.entry.id).to_string()),
    );
    let chunk = by_rank(ranked.iter().map(|f| f.entry.chunk_time.0.to_string()));
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {MERGED} WHERE {in_mixed} GROUP BY {} \
         HAVING count(DISTINCT {chunk}) > 1)",
        schema.key_columns().join(", ")
    );
    let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
    if n > 0 {
        return Err(Error::new(format!(
            "{n} point(s) exist in files of different chunk_time (overwrites written after an earlier compaction with a window wider than 10m); the server returns each of them twice and merging would return it once"
        ))
        .hint("leave this window as it is, or compact with --window 10m"));
    }
    Ok(())
}
