//! Merging one group with DuckDB: union, deduplicate, write sorted ZSTD Parquet, verify.
//!
//! `merge_group` runs the steps in order: `schema` unions the inputs' columns, `dedup` reads
//! every row in chunk order and combines repeated keys by the server's rule, `split` cuts the
//! rows into outputs of at most `max_rows`, and `write` writes and verifies them, all in the
//! DuckDB session of `engine`.

mod dedup;
mod engine;
mod schema;
mod split;
mod write;

pub use dedup::precedence;
pub use engine::{Engine, EngineOptions};
pub use schema::TableSchema;
pub use write::{output_paths, ZSTD_LEVEL};

use crate::error::{Error, Result};
use crate::format::ids::{FileId, Nanos};
use crate::format::parquet::{read_footers, sql_ident, sql_str, Footer};
use crate::pipeline::checksum::{checksum, checksum_from, Checksum};
use crate::pipeline::discover::LiveFile;
use crate::pipeline::plan::Group;
use dedup::{
    cross_chunk_points, deduplicate, kept_duplicates, overlap_clusters, ranked_scan, Order,
    Replaced,
};
use engine::Laps;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use write::{write_and_verify, WriteJob};

// The temporary tables and columns the steps share: `MERGED` holds every row read (made by
// `merge_group` from `dedup::ranked_scan`), `DUP_KEYS` and `DEDUPED` the repeated keys and
// their combined rows (made by `dedup::deduplicate`).
const MERGED: &str = "__kompactor_merged";
const DUP_KEYS: &str = "__kompactor_dup_keys";
const DEDUPED: &str = "__kompactor_deduped";
const KEY_HASH: &str = "__kompactor_key_hash";
/// Each merged row's `checksum::row_hash`, taken once as it is read or made.
const ROW_HASH: &str = "__kompactor_row_hash";

/// One written, verified output file, still in the temporary directory.
#[derive(Clone, Debug)]
pub struct Output {
    pub tmp_path: PathBuf,
    /// Relative to the data dir.
    pub final_path: String,
    /// The start of its window: the `chunk_time` its entry gets.
    pub chunk_time: Nanos,
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
    /// Points the inputs held in files of different chunk_time, each now one row
    /// ([`precedence`]).
    pub cross_chunk_points: u64,
}

/// What a merge may do with the rows it reads.
#[derive(Clone, Copy, Debug)]
pub struct MergeRules {
    /// The most rows an output holds, but for the rows of a single timestamp.
    pub max_rows: u64,
    /// Refuse a group whose points repeat across chunk_times instead of combining them.
    pub keep_duplicates: bool,
    /// Leave out every point (series key and time) listed in [`DROP_KEYS`] (a delete).
    pub drop_keys: bool,
}

/// The temporary table of the points a delete removes (its series key columns and `time`),
/// made in the merging session before the merge ([`MergeRules::drop_keys`]).
pub const DROP_KEYS: &str = "__kompactor_drop_keys";

/// A scan of one Parquet file, as SQL.
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
    rules: MergeRules,
) -> Result<Merged> {
    let conn = engine.conn();
    let mut laps = Laps::start();
    let footers = checked_footers(data_dir, group)?;
    let footer_of: HashMap<FileId, &Footer> = group
        .inputs
        .iter()
        .zip(&footers)
        .map(|(f, ft)| (f.entry.id, ft))
        .collect();
    let pairs: Vec<(FileId, &Footer)> = footer_of.iter().map(|(id, f)| (*id, *f)).collect();
    let schema = TableSchema::union(&pairs)?;
    let rows_in: u64 = footers.iter().map(|f| f.num_rows).sum();
    laps.lap("footers");

    let tables = TempTables(conn);
    let Ranked {
        clusters,
        ranked,
        overlaps,
    } = rank(&group.inputs);
    // Every row is read once into memory; the checks, the checksum and the write then
    // read the same rows.
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP TABLE {MERGED} AS {}",
        ranked_scan(data_dir, &schema, &ranked, &footer_of, &overlaps)
    ))?;
    laps.lap("read");
    let cross_chunk = cross_chunk_points(conn, &schema, &clusters, &ranked)?;
    if cross_chunk > 0 && rules.keep_duplicates {
        return Err(kept_duplicates(cross_chunk));
    }
    laps.lap("collisions");
    let read = checksum_from(conn, &schema.columns, ROW_HASH, MERGED)?;
    laps.lap("checksum");
    // Everything after this is checked against what was read: a row the reader missed
    // would vanish unnoticed, so the count is held against the footers.
    if read.rows != rows_in {
        return Err(misread(read.rows, rows_in, group.inputs.len()));
    }
    let replaced = if overlaps.contains(&true) {
        let order = if cross_chunk > 0 {
            Order::AcrossChunks(&ranked)
        } else {
            Order::Rank
        };
        deduplicate(conn, &schema, engine.aggregate_keys, order, &mut laps)?
    } else {
        None
    };
    let (rows, expected) = merged_rows(&schema, replaced, read);
    let (rows, expected) = if rules.drop_keys {
        without_dropped_points(conn, &schema, rows)?
    } else {
        (rows, expected)
    };
    let merged = |outputs, expected: Checksum| Merged {
        rows_out: expected.rows,
        outputs,
        rows_in,
        checksum: expected,
        cross_chunk_points: cross_chunk,
    };
    if expected.rows == 0 {
        // Nothing stays: the inputs go, and no file takes their place.
        drop(tables);
        return Ok(merged(Vec::new(), expected));
    }
    let (outputs, expected) = write_and_verify(
        WriteJob {
            conn,
            schema: &schema,
            group,
            tmp_dir,
            max_rows: rules.max_rows,
            source: &rows,
            expected,
        },
        &mut laps,
    )?;
    drop(tables);
    log::debug!(
        "table {} window {}: {} files, {} rows: {}",
        group.table,
        group.window_start.to_rfc3339(),
        group.inputs.len(),
        rows_in,
        laps.summary()
    );
    Ok(merged(outputs, expected))
}

/// DuckDB read a different number of rows than the inputs' footers hold.
fn misread(read: u64, in_footers: u64, inputs: usize) -> Error {
    Error::new(format!(
        "DuckDB read {read} rows from the {inputs} inputs, but their footers hold {in_footers}"
    ))
    .hint("the inputs were left in place; please report this")
}

/// A group's inputs in the server's order, and which of them overlap another in time.
struct Ranked<'g> {
    /// Runs of inputs whose time ranges overlap, in time order.
    clusters: Vec<Vec<&'g LiveFile>>,
    /// Every input, highest precedence first ([`precedence`]).
    ranked: Vec<&'g LiveFile>,
    /// Per input of `ranked`: whether its rows may repeat a key of another input.
    overlaps: Vec<bool>,
}

/// Ranks a group's inputs and finds those whose time ranges overlap.
fn rank(inputs: &[LiveFile]) -> Ranked<'_> {
    let clusters = overlap_clusters(inputs);
    let all: Vec<&LiveFile> = inputs.iter().collect();
    let ranked = precedence(&all);
    let in_multi: BTreeSet<FileId> = clusters
        .iter()
        .filter(|c| c.len() > 1)
        .flatten()
        .map(|f| f.entry.id)
        .collect();
    let overlaps = ranked
        .iter()
        .map(|f| in_multi.contains(&f.entry.id))
        .collect();
    Ranked {
        clusters,
        ranked,
        overlaps,
    }
}

/// The inputs' footers, each checked against the row count its entry records.
fn checked_footers(data_dir: &Path, group: &Group) -> Result<Vec<Footer>> {
    let abs: Vec<PathBuf> = group
        .inputs
        .iter()
        .map(|f| f.entry.path.under(data_dir))
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
    Ok(footers)
}

/// The merged rows, as SQL, and their checksum: those of unrepeated keys, and one row per
/// repeated key.
///
/// Deleting the repeated rows from MERGED instead would pin DuckDB's delete markers in
/// memory. The checksum is worked out from the parts rather than taken from this query, so
/// that the write is checked against rows counted apart from it.
fn merged_rows(
    schema: &TableSchema,
    replaced: Option<Replaced>,
    read: Checksum,
) -> (String, Checksum) {
    let columns: Vec<String> = schema.columns.iter().map(|c| sql_ident(&c.name)).collect();
    let columns = columns.join(", ");
    match replaced {
        Some(r) => (
            format!(
                "(SELECT {columns} FROM {MERGED} ANTI JOIN {DUP_KEYS} USING ({KEY_HASH}) \
                 UNION ALL SELECT {columns} FROM {DEDUPED})"
            ),
            read.without(r.rows, r.hash_sum) + r.combined,
        ),
        None => (format!("(SELECT {columns} FROM {MERGED})"), read),
    }
}

/// `rows` without the points listed in [`DROP_KEYS`] (a delete), and the checksum of what
/// stays, counted apart from the write that follows.
fn without_dropped_points(
    conn: &duckdb::Connection,
    schema: &TableSchema,
    rows: String,
) -> Result<(String, Checksum)> {
    // The points to drop carry the table's whole series key; a tag these files lack is
    // null in each of their rows.
    let ours = schema.key_columns();
    let mut stmt = conn.prepare(&format!(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = '{DROP_KEYS}' ORDER BY column_index"
    ))?;
    let theirs: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<std::result::Result<_, _>>()?;
    let on: Vec<String> = theirs
        .iter()
        .map(|c| {
            let id = sql_ident(c);
            if ours.contains(&id) {
                format!("r.{id} IS NOT DISTINCT FROM d.{id}")
            } else {
                format!("d.{id} IS NULL")
            }
        })
        .collect();
    let kept = format!(
        "(SELECT r.* FROM {rows} r ANTI JOIN {DROP_KEYS} d ON {})",
        on.join(" AND ")
    );
    let expected = checksum(conn, &schema.columns, &kept)?;
    Ok((kept, expected))
}

/// The window's temporary tables, dropped whatever happens: a failed window must not hold
/// its rows in DuckDB's memory (or spill files) while the next ones are merged.
struct TempTables<'a>(&'a duckdb::Connection);

impl Drop for TempTables<'_> {
    fn drop(&mut self) {
        let sql = format!(
            "DROP TABLE IF EXISTS {MERGED}; DROP TABLE IF EXISTS {DUP_KEYS}; DROP TABLE IF EXISTS {DEDUPED}"
        );
        if let Err(e) = self.0.execute_batch(&sql) {
            log::warn!("could not drop the merge's temporary tables: {e}");
        }
    }
}

/// Removes written outputs after a failure.
pub fn remove_outputs(outputs: &[Output]) {
    for o in outputs {
        let _ = fs::remove_file(&o.tmp_path);
    }
}

#[cfg(test)]
mod tests {
    //! The server's deduplication rules, on small hand-written files.

    use super::*;
    use crate::format::ids::{DbId, LoadPos, TableId, TableKey};
    use crate::format::model::EntryRc;
    use crate::format::model::FileEntry;
    use crate::format::parquet::{encode_arrow_schema, Column, ColumnType};
    use crate::units::MemoryBudget;
    use duckdb::Connection;

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
        keep_duplicates: bool,
    }

    impl Dir {
        fn new(extra: &str) -> Dir {
            Dir {
                tmp: tempfile::tempdir().unwrap(),
                conn: Connection::open_in_memory().unwrap(),
                extra: extra.into(),
                files: Vec::new(),
                keep_duplicates: false,
            }
        }

        /// Writes file `id` of the test chunk with `rows`.
        fn file(&mut self, id: u64, rows: &[Row]) {
            self.file_in(id, CHUNK, rows)
        }

        /// Writes file `id` of chunk `chunk` with `rows`, after the others in the server's
        /// list.
        fn file_in(&mut self, id: u64, chunk: i64, rows: &[Row]) {
            let pos = self.files.len() as u32;
            self.file_at(id, chunk, pos, rows)
        }

        /// Writes file `id` of chunk `chunk` with `rows`, at `pos` in the server's list.
        fn file_at(&mut self, id: u64, chunk: i64, pos: u32, rows: &[Row]) {
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
                entry: EntryRc::new(FileEntry {
                    id: FileId(id),
                    path: rel.into(),
                    size_bytes: fs::metadata(&path).unwrap().len(),
                    row_count: rows.len() as u64,
                    chunk_time: Nanos(chunk),
                    min_time: Nanos(times.clone().min().unwrap()),
                    max_time: Nanos(times.max().unwrap()),
                    extra: Default::default(),
                }),
                load_pos: LoadPos(pos),
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
                width: crate::pipeline::plan::GEN1,
                joined: false,
                inputs: self.files.clone(),
                rows: self.files.iter().map(|f| f.entry.row_count).sum(),
                bytes: 0,
                output_path: "dbs/1/0/merged.parquet".into(),
                outputs_estimate: 1,
                revived: 0,
                rows_revived: 0,
                bytes_revived: 0,
            };
            let rules = MergeRules {
                max_rows: u64::MAX,
                keep_duplicates: self.keep_duplicates,
                drop_keys: false,
            };
            let m = merge_group(engine, self.tmp.path(), &group, &out_dir, rules)?;
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
    fn equal_min_times_keep_the_servers_list_order_not_the_ids() {
        // The server's list holds file 4 after file 3: file 4 is the latest, whatever the ids.
        let mut d = Dir::new("extra");
        d.file_at(3, CHUNK, 0, &[("a", None, Some(3.0), None, Some(3), 10)]);
        d.file_at(4, CHUNK, 1, &[("a", None, Some(4.0), Some(4), None, 10)]);
        assert_eq!(d.merge(), ["a <null> 4.0 4 3 10"]);
        let mut d = Dir::new("extra");
        d.file_at(3, CHUNK, 1, &[("a", None, Some(3.0), None, Some(3), 10)]);
        d.file_at(4, CHUNK, 0, &[("a", None, Some(4.0), Some(4), None, 10)]);
        assert_eq!(d.merge(), ["a <null> 3.0 4 3 10"]);
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
    fn a_point_in_two_chunk_times_takes_the_later_write() {
        // After a wide-window compaction, an overwrite lands in a file of another chunk_time:
        // the server returns both rows; the merge keeps one, the later write's fields first.
        let mut d = Dir::new("extra");
        d.file_in(
            1,
            0,
            &[
                ("a", None, Some(1.0), Some(1), None, 10),
                ("a", None, Some(1.0), Some(1), None, 30),
            ],
        );
        d.file_in(2, 20, &[("a", None, Some(2.0), None, None, 20)]);
        assert_eq!(
            d.merge(),
            [
                "a <null> 1.0 1 - 10",
                "a <null> 2.0 - - 20",
                "a <null> 1.0 1 - 30"
            ],
            "overlapping files of two chunk_times without a common point merge"
        );
        // Written later (a higher id) into chunk 20: its usage wins, count comes from file 1,
        // even though file 1 stands later in the server's list.
        d.file_at(3, 20, 0, &[("a", None, Some(3.0), None, None, 30)]);
        assert_eq!(
            d.merge(),
            [
                "a <null> 1.0 1 - 10",
                "a <null> 2.0 - - 20",
                "a <null> 3.0 1 - 30"
            ]
        );
        d.keep_duplicates = true;
        let e = d.try_merge().unwrap_err().to_string();
        assert!(e.contains("different chunk_time"), "{e}");
    }

    #[test]
    fn across_chunk_times_each_point_takes_its_own_latest_version() {
        // Chunk 0 holds a wide merge (file 1) and a newer file without point 30 (file 3);
        // chunk 20 an overwrite of point 30 (file 2), written after file 1 but before file 3.
        // Point 30's newest version is file 2's, however new chunk 0's other files are.
        let mut d = Dir::new("extra");
        d.file_in(
            1,
            0,
            &[
                ("a", None, Some(1.0), Some(1), None, 10),
                ("a", None, Some(1.0), Some(1), None, 30),
            ],
        );
        d.file_in(3, 0, &[("b", None, Some(7.0), None, None, 12)]);
        d.file_in(2, 20, &[("a", None, Some(2.0), None, None, 30)]);
        assert_eq!(
            d.merge(),
            [
                "a <null> 1.0 1 - 10",
                "a <null> 2.0 1 - 30",
                "b <null> 7.0 - - 12"
            ]
        );
    }
}
