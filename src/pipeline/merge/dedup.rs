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
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The files in the order their versions of a point take precedence, lowest first, so that
/// a higher index wins, field by field.
///
/// Within one `chunk_time` this is the server's order: the smallest `min_time` is the latest,
/// and equal ones keep the order of its list ([`LiveFile::load_pos`]). Across chunk_times,
/// which the server never deduplicates (it returns a point once per chunk_time that holds
/// it: an overwrite that landed beside an earlier wide merge), the merge orders each point's
/// versions by the chunk_time whose newest file holding one was written last (file ids are
/// handed out in write order), and the others fill the fields it lacks: the later write
/// wins, as on a node never compacted ([`deduplicate`] with [`Order::AcrossChunks`]). The
/// files of one chunk_time stay together here, in the server's order.
pub fn precedence<'a>(files: &[&'a LiveFile]) -> Vec<&'a LiveFile> {
    let mut written_last: BTreeMap<Nanos, FileId> = BTreeMap::new();
    for f in files {
        let e = written_last.entry(f.entry.chunk_time).or_insert(f.entry.id);
        *e = (*e).max(f.entry.id);
    }
    let mut v = files.to_vec();
    v.sort_by(|a, b| {
        let chunk = |f: &LiveFile| written_last[&f.entry.chunk_time];
        chunk(a)
            .cmp(&chunk(b))
            .then(b.entry.min_time.cmp(&a.entry.min_time))
            .then(a.load_pos.cmp(&b.load_pos))
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

/// Which versions of a point come first when they are combined.
pub(super) enum Order<'a> {
    /// Every repeated point lies in one chunk_time: the rank alone (the server's order).
    Rank,
    /// Points may repeat across chunk_times (`ranked`, the files by rank): within a
    /// chunk_time the rank, across them the chunk_time whose newest file holding a version
    /// of that point was written last ([`precedence`]).
    AcrossChunks(&'a [&'a LiveFile]),
}

/// The column the versions of a point are ordered by: the rank, or (across chunk_times) the
/// id of the newest file of the point's chunk_time holding a version of it, then the rank.
fn order_column(order: &Order) -> String {
    match order {
        Order::Rank => RANK_COL.to_string(),
        Order::AcrossChunks(_) => ORDER_COL.to_string(),
    }
}

const ORDER_COL: &str = "__kompactor_order";

/// Collects in `DUP_KEYS` the key hash of every (series key, time) that occurs more than once
/// among the rows of `MERGED` with a key hash, and in `DEDUPED` one row per such key, which
/// takes for each column the last non-null value in `order` (the server's rule): by a hash
/// aggregate up to `aggregate_keys` repeated keys, by a window beyond.
/// Returns `None`, and makes neither table, when no key repeats.
pub(super) fn deduplicate(
    conn: &Connection,
    schema: &TableSchema,
    aggregate_keys: u64,
    order: Order,
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
    let ord = order_column(&order);
    let over = if by_aggregate { "" } else { " OVER latest" };
    let select: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let id = sql_ident(&c.name);
            if keys.contains(&id) {
                id
            } else if by_aggregate {
                format!("arg_max({id}, {ord}) FILTER (WHERE {id} IS NOT NULL) AS {id}")
            } else {
                format!("last_value({id} IGNORE NULLS) OVER latest AS {id}")
            }
        })
        .chain([
            format!("count(*){over} AS {REPLACED_ROWS}"),
            format!("sum({ROW_HASH}){over} AS {REPLACED_SUM}"),
        ])
        .collect();
    let k = keys.join(", ");
    let repeated = match &order {
        Order::Rank => {
            format!("(SELECT m.* FROM {MERGED} m SEMI JOIN {DUP_KEYS} USING ({KEY_HASH}))")
        }
        Order::AcrossChunks(ranked) => {
            // Ids stay below 2^43 and ranks below 2^20: one BIGINT orders by both.
            let id = by_rank(ranked.iter().map(|f| f.entry.id.0.to_string()));
            let chunk = by_rank(ranked.iter().map(|f| f.entry.chunk_time.0.to_string()));
            format!(
                "(SELECT m.*, max({id}) OVER (PARTITION BY {k}, {chunk}) * 1048576 + {RANK_COL} AS {ORDER_COL} \
                 FROM {MERGED} m SEMI JOIN {DUP_KEYS} USING ({KEY_HASH}))"
            )
        }
    };
    // DuckDB's hash aggregate keeps string values in memory, so it fails in a small budget
    // where a window spills; it is used only for as many keys as the budget allows.
    let combine = if by_aggregate {
        format!("SELECT {} FROM {repeated} GROUP BY {k}", select.join(", "))
    } else {
        format!(
            "SELECT {} FROM {repeated} \
             WINDOW latest AS (PARTITION BY {k} ORDER BY {ord} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) \
             QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY {ord}) = 1",
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

/// How many points are present in files of different chunk_time: overwrites written after
/// an earlier wide-window compaction, which the server returns once per chunk_time and the
/// merge combines into one ([`precedence`]).
pub(super) fn cross_chunk_points(
    conn: &Connection,
    schema: &TableSchema,
    clusters: &[Vec<&LiveFile>],
    ranked: &[&LiveFile],
) -> Result<u64> {
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
        return Ok(0);
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
    Ok(n as u64)
}

/// The refusal of a window whose points repeat across chunk_times, when the run keeps such
/// duplicates (`--keep-duplicates`).
pub(super) fn kept_duplicates(n: u64) -> Error {
    Error::new(format!(
        "{n} point(s) exist in files of different chunk_time (overwrites written after an earlier compaction with a window wider than 10m); the server returns each of them once per chunk_time, and --keep-duplicates leaves them so"
    ))
    .hint("run without --keep-duplicates to combine them as a node never compacted would (the later write wins)")
}
