//! Merging one group with DuckDB: union the columns, deduplicate by the server's rule, write
//! sorted ZSTD Parquet, and verify what was written.

use crate::pipeline::discover::LiveFile;
use crate::error::{Error, Result};
use crate::format::parquet::{
    encode_arrow_schema, read_footers, sql_ident, sql_list, sql_str, Column, ColumnType, Footer,
};
use crate::pipeline::plan::Group;
use crate::format::ids::{FileId, Nanos};
use crate::pipeline::checksum::{checksum, checksum_from, row_hash, Checksum};
use duckdb::Connection;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// The largest row group written: at most the server's largest (100,000 rows; DuckDB's
/// writer never exceeds the size it is given), and a multiple of DuckDB's 2,048-row vectors.
const MAX_ROW_GROUP: u64 = 98_304;
const VECTOR: u64 = 2_048;
const RANK_COL: &str = "__kompactor_rank";
/// The server's own ZSTD level (spec §5): fast to write, and what its readers expect.
pub const ZSTD_LEVEL: u32 = 1;
/// DuckDB's virtual column: the position of a row's file in the `read_parquet` list.
const FILE_INDEX: &str = "file_index";
const MERGED: &str = "__kompactor_merged";
const DUP_KEYS: &str = "__kompactor_dup_keys";
const DEDUPED: &str = "__kompactor_deduped";
const KEY_HASH: &str = "__kompactor_key_hash";
/// Each merged row's `verify::row_hash`, taken once as it is read or made.
const ROW_HASH: &str = "__kompactor_row_hash";
/// In `DEDUPED`: how many rows of `MERGED` each combined row replaces, and their row hashes'
/// sum.
const REPLACED_ROWS: &str = "__kompactor_replaced_rows";
const REPLACED_SUM: &str = "__kompactor_replaced_sum";

/// Where a group's time goes, step by step, for `RUST_LOG=kompactor=debug`.
struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Laps {
    fn start() -> Laps {
        Laps {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Records the time since the previous lap under `step`.
    fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        log::trace!("{step}: {ms:.1}ms");
        self.laps.push((step, ms));
        self.last = now;
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .laps
            .iter()
            .map(|(s, ms)| format!("{s} {ms:.1}ms"))
            .collect();
        parts.join(", ")
    }
}

/// How much of the machine the merge may use.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where DuckDB spills what does not fit in `memory_limit`.
    pub spill_dir: PathBuf,
    /// Worker threads; DuckDB's default (all CPUs) when `None`.
    pub threads: Option<u32>,
    /// The process's memory budget.
    pub memory_limit: crate::units::MemoryBudget,
}

/// A DuckDB session for merging.
pub struct Engine {
    conn: Connection,
    /// Up to this many repeated keys a window are combined by a hash aggregate, which is
    /// quick but holds a row per key in memory; more go through a window, which spills.
    aggregate_keys: u64,
}

/// The memory a repeated key may take in the hash aggregate, in the worst case: a row of
/// long strings, with the aggregate's own overhead.
const AGGREGATE_KEY_BYTES: u64 = 64 << 10;

impl Engine {
    /// Opens an in-memory DuckDB bounded by `opts`.
    pub fn new(opts: &EngineOptions) -> Result<Engine> {
        crate::heap::tune(opts.memory_limit);
        let conn = Connection::open_in_memory()?;
        let mut setup = format!(
            "SET temp_directory = {}; SET preserve_insertion_order = true; SET memory_limit = {};",
            sql_str(&opts.spill_dir.to_string_lossy()),
            sql_str(&opts.memory_limit.duckdb_limit())
        );
        if let Some(t) = opts.threads {
            setup.push_str(&format!(" SET threads = {t};"));
        }
        conn.execute_batch(&setup)
            .map_err(|e| Error::new(format!("could not configure DuckDB ({setup}): {e}")))?;
        Ok(Engine {
            conn,
            aggregate_keys: opts.memory_limit.0 / AGGREGATE_KEY_BYTES,
        })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Sets the size of DuckDB's thread pool (shared by every session of the database).
    pub fn set_threads(&self, n: usize) -> Result<()> {
        Ok(self.conn.execute_batch(&format!("SET threads = {n};"))?)
    }

    /// Another session on the same database (same memory budget), for a parallel worker.
    pub fn worker(&self) -> Result<Engine> {
        Ok(Engine {
            conn: self.conn.try_clone()?,
            aggregate_keys: self.aggregate_keys,
        })
    }
}

/// The columns and series key of a group's merged output.
#[derive(Clone, Debug)]
pub struct TableSchema {
    /// In output order: the newest input's order, then columns only older inputs have.
    pub columns: Vec<Column>,
    pub series_key: Vec<String>,
}

impl TableSchema {
    /// The union of the inputs' columns; fails if a column's type differs between inputs.
    pub fn union(footers: &[(u64, &Footer)]) -> Result<TableSchema> {
        let mut by_newest: Vec<&(u64, &Footer)> = footers.iter().collect();
        by_newest.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        let mut columns: Vec<Column> = Vec::new();
        let mut seen: HashMap<String, (ColumnType, PathBuf)> = HashMap::new();
        for (_, f) in &by_newest {
            for c in &f.columns {
                match seen.get(&c.name) {
                    Some((ty, first)) if *ty != c.ty => {
                        return Err(Error::at(&f.path, format!(
                            "column `{}` is {:?} here but {:?} in {}; kompactor does not merge files whose column types differ",
                            c.name, c.ty, ty, first.display()
                        )))
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(c.name.clone(), (c.ty, f.path.clone()));
                        columns.push(c.clone());
                    }
                }
            }
        }
        let times: Vec<&Column> = columns
            .iter()
            .filter(|c| c.ty == ColumnType::Time)
            .collect();
        if times.len() != 1 || times[0].name != "time" {
            return Err(Error::new(
                "the inputs do not have exactly one timestamp column named `time`",
            ));
        }
        let tags: BTreeSet<&str> = columns
            .iter()
            .filter(|c| c.ty == ColumnType::Tag)
            .map(|c| c.name.as_str())
            .collect();
        let declared = by_newest.iter().find_map(|(_, f)| f.series_key.clone());
        let mut series_key = Vec::new();
        if let Some(key) = declared {
            for k in key {
                if tags.contains(k.as_str()) && !series_key.contains(&k) {
                    series_key.push(k);
                }
            }
        }
        // Tags the declared key does not name (or all tags, without one) follow by name.
        for t in tags {
            if !series_key.iter().any(|k| k == t) {
                series_key.push(t.to_string());
            }
        }
        Ok(TableSchema {
            columns,
            series_key,
        })
    }

    /// Every column, cast to its type; a column the file lacks is a typed NULL.
    fn projection(&self, present: &BTreeSet<&str>) -> String {
        self.columns
            .iter()
            .map(|c| {
                let id = sql_ident(&c.name);
                let value = if present.contains(c.name.as_str()) {
                    id.clone()
                } else {
                    "NULL".to_string()
                };
                format!("CAST({value} AS {}) AS {id}", c.ty.duckdb_type())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_columns(&self) -> Vec<String> {
        self.series_key
            .iter()
            .map(|k| sql_ident(k))
            .chain([sql_ident("time")])
            .collect()
    }
}

/// One written, verified output file, still in the temporary directory.
#[derive(Clone, Debug)]
pub struct Output {
    pub tmp_path: PathBuf,
    /// Relative to the data dir.
    pub final_path: String,
    pub size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
}

/// The result of merging one group.
#[derive(Clone, Debug)]
pub struct Merged {
    pub outputs: Vec<Output>,
    pub rows_in: u64,
    pub rows_out: u64,
    pub checksum: Checksum,
}

/// Partitions files into clusters whose time ranges overlap; only files in one cluster can
/// share a (series key, time), so only clusters of two or more need deduplication.
fn overlap_clusters(inputs: &[LiveFile]) -> Vec<Vec<&LiveFile>> {
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

fn read_one(path: &Path) -> String {
    format!("read_parquet({})", sql_str(&path.to_string_lossy()))
}

/// Merges, writes and verifies one group. Nothing under the node changes: outputs are left
/// in `tmp_dir` for the commit, not yet fsynced (the caller makes them durable together).
pub fn merge_group(
    engine: &Engine,
    data_dir: &Path,
    group: &Group,
    tmp_dir: &Path,
    max_rows: u64,
) -> Result<Merged> {
    let conn = engine.conn();
    let mut laps = Laps::start();
    let abs: Vec<PathBuf> = group
        .inputs
        .iter()
        .map(|f| data_dir.join(&f.entry.path))
        .collect();
    let footers = read_footers(&abs)?;
    for (f, ft) in group.inputs.iter().zip(&footers) {
        if ft.num_rows != f.entry.row_count {
            return Err(Error::at(
                &ft.path,
                format!(
                    "the footer holds {} rows but the metadata records {} for file {}",
                    ft.num_rows, f.entry.row_count, f.entry.id
                ),
            ));
        }
    }
    let footer_of: HashMap<u64, &Footer> = group
        .inputs
        .iter()
        .zip(&footers)
        .map(|(f, ft)| (f.entry.id.0, ft))
        .collect();
    let pairs: Vec<(u64, &Footer)> = footer_of.iter().map(|(id, f)| (*id, *f)).collect();
    let schema = TableSchema::union(&pairs)?;
    let rows_in: u64 = footers.iter().map(|f| f.num_rows).sum();
    laps.lap("footers");

    // The temporary tables go whatever happens: a failed window must not hold its rows in
    // DuckDB's memory (or spill files) while the next ones are merged.
    let result = (|| {
        let clusters = overlap_clusters(&group.inputs);
        let all: Vec<&LiveFile> = group.inputs.iter().collect();
        let ranked = chunk_order(&all);
        let in_multi: BTreeSet<FileId> = clusters
            .iter()
            .filter(|c| c.len() > 1)
            .flatten()
            .map(|f| f.entry.id)
            .collect();
        let overlaps: Vec<bool> = ranked
            .iter()
            .map(|f| in_multi.contains(&f.entry.id))
            .collect();
        // Every row is read once into memory; the checks, the checksum and the write then
        // read the same rows.
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE {MERGED} AS {}",
            ranked_scan(data_dir, &schema, &ranked, &footer_of, &overlaps)
        ))?;
        laps.lap("read");
        check_cross_chunk_collisions(conn, &schema, &clusters, &ranked)?;
        laps.lap("collisions");
        let read = checksum_from(conn, &schema.columns, ROW_HASH, MERGED)?;
        laps.lap("checksum");
        // Everything after this is checked against what was read: a row the reader missed
        // would vanish unnoticed, so the count is held against the footers.
        if read.rows != rows_in {
            return Err(Error::new(format!(
                "DuckDB read {} rows from the {} inputs, but their footers hold {rows_in}",
                read.rows,
                group.inputs.len()
            ))
            .hint("the inputs were left in place; please report this"));
        }
        let replaced = if in_multi.is_empty() {
            None
        } else {
            deduplicate(conn, &schema, engine.aggregate_keys, &mut laps)?
        };
        let columns: Vec<String> = schema.columns.iter().map(|c| sql_ident(&c.name)).collect();
        let columns = columns.join(", ");
        // The merged rows: those of unrepeated keys, and one row per repeated key. (Deleting
        // the repeated rows from MERGED instead would pin DuckDB's delete markers in memory.)
        // Their checksum is worked out from the parts rather than taken from this query, so
        // that the write is checked against rows counted apart from it.
        let (rows, expected) = match replaced {
            Some(r) => (
                format!(
                    "(SELECT {columns} FROM {MERGED} ANTI JOIN {DUP_KEYS} USING ({KEY_HASH}) \
                     UNION ALL SELECT {columns} FROM {DEDUPED})"
                ),
                read.without(r.rows, r.hash_sum) + r.combined,
            ),
            None => (format!("(SELECT {columns} FROM {MERGED})"), read),
        };
        write_and_verify(
            conn, &schema, group, tmp_dir, max_rows, &rows, expected, &mut laps,
        )
    })();
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {MERGED}; DROP TABLE IF EXISTS {DUP_KEYS}; DROP TABLE IF EXISTS {DEDUPED}"
    ))?;
    let (outputs, expected) = result?;
    log::debug!(
        "table {} window {}: {} files, {} rows: {}",
        group.table,
        group.window_start.to_rfc3339(),
        group.inputs.len(),
        rows_in,
        laps.summary()
    );
    Ok(Merged {
        rows_out: expected.rows,
        outputs,
        rows_in,
        checksum: expected,
    })
}

/// The columns of `files`, as named by their footers.
fn present<'a>(files: &[&LiveFile], footer_of: &HashMap<u64, &'a Footer>) -> BTreeSet<&'a str> {
    files
        .iter()
        .flat_map(|f| {
            footer_of[&f.entry.id.0]
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
/// types, with each row's rank (its file's position), its `verify::row_hash` and, if its
/// file overlaps another (`overlaps[rank]`), a hash of its key.
fn ranked_scan(
    data_dir: &Path,
    schema: &TableSchema,
    ranked: &[&LiveFile],
    footer_of: &HashMap<u64, &Footer>,
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
                    read_one(&data_dir.join(&f.entry.path))
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    } else {
        // Matching columns by name costs a little per file; needed only if the files differ.
        let columns = |f: &&LiveFile| &footer_of[&f.entry.id.0].columns;
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
                    .map(|f| data_dir.join(&f.entry.path))
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
struct Replaced {
    /// How many rows of `MERGED` have a repeated key.
    rows: u64,
    /// The sum of their row hashes.
    hash_sum: i128,
    /// The checksum of `DEDUPED`, one row per repeated key.
    combined: Checksum,
}

/// Collects in `DUP_KEYS` the key hash of every (series key, time) that occurs more than once
/// among the rows of `MERGED` with a key hash, and in `DEDUPED` one row per such key, which
/// takes for each column the last non-null value in chunk order (the server's rule): by a hash
/// aggregate up to `aggregate_keys` repeated keys, by a window beyond.
/// Returns `None`, and makes neither table, when no key repeats.
fn deduplicate(
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
fn check_cross_chunk_collisions(
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

/// Writes `source` sorted by series key and time (split by `max_rows`) into `tmp_dir`, and
/// checks that the files read back hold exactly the rows `expected` describes.
fn write_and_verify(
    conn: &Connection,
    schema: &TableSchema,
    group: &Group,
    tmp_dir: &Path,
    max_rows: u64,
    source: &str,
    expected: Checksum,
    laps: &mut Laps,
) -> Result<(Vec<Output>, Checksum)> {
    let ranges = split_ranges(conn, expected.rows, max_rows, source)?;
    laps.lap("split");
    let kv = encode_arrow_schema(&schema.columns, &schema.series_key);
    let order: Vec<String> = schema.key_columns();
    let mut outputs = Vec::new();
    let mut written = Checksum::empty();
    let n = ranges.len();
    for (i, Range { lo, hi, rows }) in ranges.into_iter().enumerate() {
        let final_path = if n == 1 {
            group.output_path.clone()
        } else {
            group
                .output_path
                .replace(".parquet", &format!("-{}.parquet", i + 1))
        };
        // Outputs of all groups share the temporary directory: name them by their full path.
        // Not named *.parquet: a crash must not leave a file an archive glob would read.
        let tmp_path = tmp_dir.join(format!("{}.tmp", final_path.replace('/', "__")));
        let mut filter = Vec::new();
        if let Some(lo) = lo {
            filter.push(format!("epoch_ns(\"time\") >= {}", lo.0));
        }
        if let Some(hi) = hi {
            filter.push(format!("epoch_ns(\"time\") < {}", hi.0));
        }
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filter.join(" AND "))
        };
        let copy = format!(
            "COPY (SELECT * FROM {source} {filter} ORDER BY {}) TO {} \
             (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, ROW_GROUP_SIZE {}, KV_METADATA {{'ARROW:schema': {}}})",
            order.join(", "),
            sql_str(&tmp_path.to_string_lossy()),
            row_group_size(rows),
            sql_str(&kv)
        );
        let done = (|| -> Result<Output> {
            crate::durable::journal::failpoint("write-output")?;
            conn.execute_batch(&copy)?;
            laps.lap("write");
            if crate::durable::journal::fault_injected("corrupt-output") {
                drop_first_row(conn, &tmp_path)?;
            }
            // Row count, time range and checksum are measured from the file as written.
            let back = checksum(conn, &schema.columns, &read_one(&tmp_path))?;
            written = written + back;
            laps.lap("read back");
            let size_bytes = fs::metadata(&tmp_path)
                .map_err(|e| Error::io(&tmp_path, "stat", e))?
                .len();
            Ok(Output {
                tmp_path: tmp_path.clone(),
                final_path,
                size_bytes,
                row_count: back.rows,
                min_time: back.min_time,
                max_time: back.max_time,
            })
        })();
        match done {
            Ok(o) => outputs.push(o),
            Err(e) => {
                remove_outputs(&outputs);
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        }
    }
    if written != expected {
        remove_outputs(&outputs);
        return Err(Error::new(format!(
            "verification failed: merged rows {} [{}, {}] checksum {} but the written files hold {} [{}, {}] checksum {}",
            expected.rows, expected.min_time, expected.max_time, expected.hash_sum,
            written.rows, written.min_time, written.max_time, written.hash_sum
        ))
        .hint("the inputs were left in place; please report this"));
    }
    Ok((outputs, expected))
}

/// Rewrites a written file without its first row: the fault a bad writer or disk would make,
/// which verification must catch (tests only).
fn drop_first_row(conn: &Connection, path: &Path) -> Result<()> {
    let shorter = path.with_extension("short");
    conn.execute_batch(&format!(
        "COPY (SELECT * FROM {} OFFSET 1) TO {} (FORMAT parquet)",
        read_one(path),
        sql_str(&shorter.to_string_lossy())
    ))?;
    fs::rename(&shorter, path).map_err(|e| Error::io(path, "replace", e))
}

/// Removes written outputs after a failure.
pub fn remove_outputs(outputs: &[Output]) {
    for o in outputs {
        let _ = fs::remove_file(&o.tmp_path);
    }
}

/// Row groups of equal size for a file of `rows` rows (each a whole number of vectors, at
/// most `MAX_ROW_GROUP`): DuckDB's sorted writer spends about 7% more on a file split into
/// a full row group and a short remainder than on the same rows in even halves.
fn row_group_size(rows: u64) -> u64 {
    let groups = rows.div_ceil(MAX_ROW_GROUP).max(1);
    rows.div_ceil(groups)
        .next_multiple_of(VECTOR)
        .clamp(VECTOR, MAX_ROW_GROUP)
}

/// The rows of one output file: `lo <= time < hi` (unbounded where `None`).
#[derive(Debug, PartialEq)]
struct Range {
    lo: Option<Nanos>,
    hi: Option<Nanos>,
    rows: u64,
}

/// Time ranges that hold at most `max_rows` rows each; a single timestamp is never split,
/// so only a range of one timestamp can hold more.
///
/// Cuts come from histograms of `time` (4,096 buckets, refined where one bucket alone holds
/// more than `max_rows`): streaming aggregates that need little memory, unlike a sort of
/// the whole window.
fn split_ranges(conn: &Connection, rows: u64, max_rows: u64, source: &str) -> Result<Vec<Range>> {
    if rows <= max_rows {
        return Ok(vec![Range {
            lo: None,
            hi: None,
            rows,
        }]);
    }
    let (min, max): (i64, i64) = conn.query_row(
        &format!("SELECT epoch_ns(min(\"time\")), epoch_ns(max(\"time\")) FROM {source}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut cuts = Cuts {
        max_rows,
        filled: 0,
        at: Vec::new(),
    };
    cuts.histogram(conn, source, min as i128, max as i128 + 1)?;
    let mut out = Vec::new();
    let mut lo = None;
    for (c, rows) in cuts.at {
        out.push(Range {
            lo,
            hi: Some(c),
            rows,
        });
        lo = Some(c);
    }
    out.push(Range {
        lo,
        hi: None,
        rows: cuts.filled,
    });
    Ok(out)
}

/// The cuts of `split_ranges` so far (each with the rows since the one before), and the rows
/// since the last one.
struct Cuts {
    max_rows: u64,
    filled: u64,
    at: Vec<(Nanos, u64)>,
}

impl Cuts {
    /// Adds the cuts for the rows with `lo <= time < hi`, in time order.
    fn histogram(&mut self, conn: &Connection, source: &str, lo: i128, hi: i128) -> Result<()> {
        const BUCKETS: i128 = 4096;
        let width = ((hi - lo) / BUCKETS).max(1);
        let sql = format!(
            "SELECT (epoch_ns(\"time\")::HUGEINT - {lo}) // {width} AS b, count(*) FROM {source} \
             WHERE epoch_ns(\"time\") >= {lo} AND epoch_ns(\"time\") < {hi} GROUP BY b ORDER BY b"
        );
        let mut stmt = conn.prepare(&sql)?;
        let buckets = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i128>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (b, n) in buckets {
            let start = lo + b * width;
            if self.filled + n <= self.max_rows {
                self.filled += n;
                continue;
            }
            if self.filled > 0 {
                self.at.push((Nanos(start as i64), self.filled));
                self.filled = 0;
            }
            if n <= self.max_rows || width == 1 {
                self.filled = n;
            } else {
                self.histogram(conn, source, start, (start + width).min(hi))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The server's deduplication rules, on small hand-written files.

    use super::*;
    use crate::units::MemoryBudget;
    use crate::format::model::FileEntry;
    use crate::format::ids::{DbId, TableId, TableKey};

    const CHUNK: i64 = 0;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }

    /// A table with tags `host`, `region` (series key in that order), fields `usage` and
    /// `count`, and `extra` (a field of the given name).
    fn columns(extra: &str) -> Vec<Column> {
        vec![
            col("host", ColumnType::Tag),
            col("region", ColumnType::Tag),
            col("usage", ColumnType::Float),
            col("count", ColumnType::Integer),
            col(extra, ColumnType::Integer),
            col("time", ColumnType::Time),
        ]
    }

    /// (host, region, usage, count, extra, time), NULL as `None`.
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        i64,
    );

    struct Dir {
        tmp: tempfile::TempDir,
        conn: Connection,
        extra: String,
        files: Vec<LiveFile>,
    }

    impl Dir {
        fn new(extra: &str) -> Dir {
            Dir {
                tmp: tempfile::tempdir().unwrap(),
                conn: Connection::open_in_memory().unwrap(),
                extra: extra.into(),
                files: Vec::new(),
            }
        }

        /// Writes file `id` of the test chunk with `rows`.
        fn file(&mut self, id: u64, rows: &[Row]) {
            self.file_in(id, CHUNK, rows)
        }

        /// Writes file `id` of chunk `chunk` with `rows`.
        fn file_in(&mut self, id: u64, chunk: i64, rows: &[Row]) {
            let cols = columns(&self.extra);
            let lit = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
            let values: Vec<String> = rows
                .iter()
                .map(|(h, r, u, c, e, t)| {
                    format!(
                        "({}, {}, {}, {}, {}, {t})",
                        sql_str(h),
                        lit(r.map(sql_str)),
                        lit(u.map(|u| u.to_string())),
                        lit(c.map(|c| c.to_string())),
                        lit(e.map(|e| e.to_string()))
                    )
                })
                .collect();
            let select: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = format!("col{i}");
                    let v = if c.ty == ColumnType::Time {
                        format!("make_timestamp_ns({v})")
                    } else {
                        v
                    };
                    format!(
                        "CAST({v} AS {}) AS {}",
                        c.ty.duckdb_type(),
                        sql_ident(&c.name)
                    )
                })
                .collect();
            let rel = format!("dbs/1/0/{id}.parquet");
            let path = self.tmp.path().join(&rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let kv = encode_arrow_schema(&cols, &["host".into(), "region".into()]);
            self.conn
                .execute_batch(&format!(
                    "COPY (SELECT {} FROM (VALUES {})) TO {} (FORMAT parquet, KV_METADATA {{'ARROW:schema': {}}})",
                    select.join(", "),
                    values.join(", "),
                    sql_str(&path.to_string_lossy()),
                    sql_str(&kv)
                ))
                .unwrap();
            let times = rows.iter().map(|r| r.5);
            self.files.push(LiveFile {
                table: TableKey {
                    db: DbId(1),
                    table: TableId(0),
                },
                entry: FileEntry {
                    id: FileId(id),
                    path: rel,
                    size_bytes: fs::metadata(&path).unwrap().len(),
                    row_count: rows.len() as u64,
                    chunk_time: Nanos(chunk),
                    min_time: Nanos(times.clone().min().unwrap()),
                    max_time: Nanos(times.max().unwrap()),
                    extra: Default::default(),
                },
            });
        }

        /// Merges every file written so far; returns the output's rows, in file order.
        fn merge(&self) -> Vec<String> {
            self.try_merge().unwrap()
        }

        /// Merges with repeated rows combined both ways (hash aggregate and window), which
        /// must agree.
        fn try_merge(&self) -> Result<Vec<String>> {
            let engine = Engine::new(&EngineOptions {
                spill_dir: self.tmp.path().join("spill"),
                threads: Some(1),
                memory_limit: MemoryBudget(256 << 20),
            })
            .unwrap();
            let by_aggregate = self.merge_with(&engine)?;
            let by_window = self.merge_with(&Engine {
                aggregate_keys: 0,
                ..engine
            })?;
            assert_eq!(
                by_aggregate, by_window,
                "the aggregate and the window disagree"
            );
            Ok(by_window)
        }

        fn merge_with(&self, engine: &Engine) -> Result<Vec<String>> {
            let out_dir = self.tmp.path().join("out");
            fs::create_dir_all(&out_dir).unwrap();
            let group = Group {
                node: "node0".into(),
                table: self.files[0].table,
                window_start: Nanos(CHUNK),
                window_end: Nanos(CHUNK + 600_000_000_000),
                inputs: self.files.clone(),
                rows: self.files.iter().map(|f| f.entry.row_count).sum(),
                bytes: 0,
                output_path: "dbs/1/0/merged.parquet".into(),
                outputs_estimate: 1,
            };
            let m = merge_group(engine, self.tmp.path(), &group, &out_dir, u64::MAX)?;
            assert_eq!(m.outputs.len(), 1);
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT concat_ws(' ', host, coalesce(region, '<null>'), coalesce(usage::VARCHAR, '-'), \
                     coalesce(count::VARCHAR, '-'), coalesce({}::VARCHAR, '-'), epoch_ns(time)) FROM {}",
                    sql_ident(&self.extra),
                    read_one(&m.outputs[0].tmp_path)
                ))
                .unwrap();
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .collect::<std::result::Result<Vec<_>, _>>()
                .unwrap();
            assert_eq!(m.rows_out, rows.len() as u64);
            Ok(rows)
        }
    }

    #[test]
    fn each_field_takes_the_last_non_null_value_and_the_smallest_min_time_is_latest() {
        let mut d = Dir::new("extra");
        // File 1 starts later than file 2, so file 2 is the latest: its values win.
        d.file(
            1,
            &[
                ("a", Some("x"), Some(1.0), None, Some(10), 20),
                ("a", Some("x"), Some(1.0), Some(5), None, 30),
            ],
        );
        d.file(
            2,
            &[
                ("a", Some("x"), Some(2.0), None, None, 10),
                ("a", Some("x"), None, Some(7), None, 20),
                ("a", Some("x"), Some(3.0), None, Some(11), 30),
            ],
        );
        assert_eq!(
            d.merge(),
            [
                "a x 2.0 - - 10",
                // usage only in file 1; count only in file 2; extra only in file 1.
                "a x 1.0 7 10 20",
                // Both have usage: file 2 wins; count only in file 1.
                "a x 3.0 5 11 30",
            ]
        );
    }

    #[test]
    fn equal_min_times_fall_back_to_the_higher_id() {
        let mut d = Dir::new("extra");
        d.file(4, &[("a", None, Some(4.0), Some(4), None, 10)]);
        d.file(3, &[("a", None, Some(3.0), None, Some(3), 10)]);
        assert_eq!(d.merge(), ["a <null> 4.0 4 3 10"]);
    }

    #[test]
    fn null_and_empty_tags_are_different_series_and_output_is_sorted() {
        let mut d = Dir::new("extra");
        d.file(
            1,
            &[
                ("b", Some(""), Some(1.0), None, None, 10),
                ("b", None, Some(2.0), None, None, 10),
            ],
        );
        d.file(
            2,
            &[
                ("a", Some("z"), Some(9.0), None, None, 10),
                ("b", None, Some(3.0), None, None, 10),
            ],
        );
        // Sorted by host, then region (NULL last), then time.
        assert_eq!(
            d.merge(),
            ["a z 9.0 - - 10", "b  1.0 - - 10", "b <null> 3.0 - - 10"]
        );
    }

    #[test]
    fn a_field_named_like_duckdbs_file_index_is_data() {
        let mut d = Dir::new("file_index");
        d.file(1, &[("a", Some("x"), Some(1.0), None, Some(100), 20)]);
        d.file(
            2,
            &[
                ("a", Some("x"), None, Some(2), Some(200), 10),
                ("a", Some("x"), None, None, None, 20),
            ],
        );
        assert_eq!(d.merge(), ["a x - 2 200 10", "a x 1.0 - 100 20"]);
    }

    #[test]
    fn a_file_that_overlaps_no_other_is_not_deduplicated() {
        // The server assumes a file holds no duplicate key and deduplicates only overlapping
        // files; a lone file's repeated key stays twice, as the server returns it.
        let mut d = Dir::new("extra");
        d.file(
            1,
            &[
                ("a", None, Some(1.0), None, None, 10),
                ("a", None, Some(2.0), None, None, 10),
            ],
        );
        d.file(
            2,
            &[
                ("a", None, Some(3.0), None, None, 50),
                ("a", None, None, Some(1), None, 60),
            ],
        );
        d.file(3, &[("a", None, None, Some(4), None, 60)]);
        let mut rows = d.merge();
        rows[..2].sort();
        assert_eq!(
            rows,
            [
                "a <null> 1.0 - - 10",
                "a <null> 2.0 - - 10",
                "a <null> 3.0 - - 50",
                "a <null> - 1 - 60"
            ]
        );
    }

    #[test]
    fn row_groups_are_even_whole_vectors_within_the_servers_limit() {
        assert_eq!(row_group_size(0), VECTOR);
        assert_eq!(row_group_size(1), VECTOR);
        assert_eq!(row_group_size(MAX_ROW_GROUP), MAX_ROW_GROUP);
        // 104,892 rows: two groups of 26 vectors (53,248 and 51,644), not 98,304 + 6,588.
        assert_eq!(row_group_size(104_892), 53_248);
        for rows in [98_305, 196_608, 196_609, 1_000_000, 20_250_000] {
            let size = row_group_size(rows);
            assert!(
                size <= MAX_ROW_GROUP && size.is_multiple_of(VECTOR),
                "{rows}: {size}"
            );
            assert_eq!(
                rows.div_ceil(size),
                rows.div_ceil(MAX_ROW_GROUP),
                "{rows}: {size}"
            );
        }
    }

    #[test]
    fn a_point_in_two_chunk_times_is_refused() {
        // After a wide-window compaction, an overwrite lands in a file of another chunk_time:
        // the server returns both rows, so merging them into one would change an answer.
        let mut d = Dir::new("extra");
        d.file_in(
            1,
            0,
            &[
                ("a", None, Some(1.0), None, None, 10),
                ("a", None, Some(1.0), None, None, 30),
            ],
        );
        d.file_in(2, 20, &[("a", None, Some(2.0), None, None, 20)]);
        assert_eq!(
            d.merge(),
            [
                "a <null> 1.0 - - 10",
                "a <null> 2.0 - - 20",
                "a <null> 1.0 - - 30"
            ],
            "overlapping files of two chunk_times without a common point merge"
        );
        d.file_in(3, 20, &[("a", None, Some(3.0), None, None, 30)]);
        let e = d.try_merge().unwrap_err().to_string();
        assert!(e.contains("different chunk_time"), "{e}");
    }
}
