//! Writing a merge's rows as sorted ZSTD Parquet, and verifying the files written.

use super::engine::Laps;
use super::schema::TableSchema;
use super::split::{row_group_size, split_ranges, Range};
use super::{read_one, Output};
use crate::durable::failpoint::{failpoint, fault_injected};
use crate::error::{Error, Result};
use crate::format::ids::Nanos;
use crate::format::layout::{numbered, tmp_name};
use crate::format::parquet::{encode_arrow_schema, sql_str};
use crate::pipeline::checksum::{checksum, Checksum};
use crate::pipeline::plan::{Group, Width};
use duckdb::Connection;
use std::fs;
use std::path::{Path, PathBuf};

/// The server's own ZSTD level (`docs/on-disk-format.md`, section 5): fast to write, and what
/// its readers expect.
pub const ZSTD_LEVEL: u32 = 1;

/// What `write_and_verify` writes, where, and what the files written must hold.
pub(super) struct WriteJob<'a> {
    pub(super) conn: &'a Connection,
    pub(super) schema: &'a TableSchema,
    /// Its `output_path` names the outputs (numbered when the rows are split).
    pub(super) group: &'a Group,
    pub(super) tmp_dir: &'a Path,
    /// The most rows an output holds, but for the rows of a single timestamp.
    pub(super) max_rows: u64,
    /// A query of the rows to write.
    pub(super) source: &'a str,
    /// The rows of `source`, as counted apart from the write.
    pub(super) expected: Checksum,
}

/// Writes `source` sorted by series key and time (split by `max_rows`) into `tmp_dir`, and
/// checks that the files read back hold exactly the rows `expected` describes.
pub(super) fn write_and_verify(
    job: WriteJob<'_>,
    laps: &mut Laps,
) -> Result<(Vec<Output>, Checksum)> {
    let WriteJob {
        conn,
        schema,
        group,
        tmp_dir,
        max_rows,
        source,
        expected,
    } = job;
    let parts = parts(conn, group, expected.rows, max_rows, source)?;
    laps.lap("split");
    let kv = encode_arrow_schema(&schema.columns, &schema.series_key);
    let order: Vec<String> = schema.key_columns();
    let mut outputs = Vec::new();
    let mut pending = Pending(Vec::new());
    let mut written = Checksum::empty();
    let chunk_times: Vec<Nanos> = parts.iter().map(|p| p.chunk_time).collect();
    let paths = output_paths(group, &chunk_times);
    for (Part { range, chunk_time }, final_path) in parts.into_iter().zip(paths) {
        let Range { lo, hi, rows } = range;
        // Outputs of all groups share the temporary directory: named by their full path, and
        // not *.parquet, so a crash leaves no file an archive glob would read.
        let tmp_path = tmp_dir.join(tmp_name(&final_path));
        pending.0.push(tmp_path.clone());
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
        failpoint("write-output")?;
        conn.execute_batch(&copy)?;
        laps.lap("write");
        if fault_injected("corrupt-output") {
            drop_first_row(conn, &tmp_path)?;
        }
        // Row count, time range and checksum are measured from the file as written.
        let back = checksum(conn, &schema.columns, &read_one(&tmp_path))?;
        written = written + back;
        laps.lap("read back");
        let size_bytes = fs::metadata(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, "stat", e))?
            .len();
        outputs.push(Output {
            tmp_path,
            final_path,
            chunk_time,
            size_bytes,
            row_count: back.rows,
            min_time: back.min_time,
            max_time: back.max_time,
        });
    }
    if written != expected {
        return Err(Error::new(format!(
            "verification failed: merged rows {} [{}, {}] checksum {} but the written files hold {} [{}, {}] checksum {}",
            expected.rows, expected.min_time, expected.max_time, expected.hash_sum,
            written.rows, written.min_time, written.max_time, written.hash_sum
        ))
        .hint("the inputs were left in place; please report this"));
    }
    pending.keep();
    Ok((outputs, expected))
}

/// The rows of one output file, and the `chunk_time` it gets.
struct Part {
    range: Range,
    chunk_time: Nanos,
}

/// The outputs of a group: the window's rows cut by `max_rows`, or, for windows joined
/// together, each window of the group's width on its own first (its start the output's
/// `chunk_time`), then cut by `max_rows`.
fn parts(
    conn: &Connection,
    group: &Group,
    rows: u64,
    max_rows: u64,
    source: &str,
) -> Result<Vec<Part>> {
    if !group.joined {
        return Ok(split_ranges(conn, rows, max_rows, source)?
            .into_iter()
            .map(|range| Part {
                range,
                chunk_time: group.window_start,
            })
            .collect());
    }
    let mut parts = Vec::new();
    for (start, rows) in windows_of(conn, group.width, source)? {
        let end = group.width.end(start);
        let within = format!(
            "(SELECT * FROM {source} WHERE epoch_ns(\"time\") >= {} AND epoch_ns(\"time\") < {})",
            start.0, end.0
        );
        for r in split_ranges(conn, rows, max_rows, &within)? {
            parts.push(Part {
                range: Range {
                    lo: Some(r.lo.unwrap_or(start)),
                    hi: Some(r.hi.unwrap_or(end)),
                    rows: r.rows,
                },
                chunk_time: start,
            });
        }
    }
    Ok(parts)
}

/// The windows of `width` that the rows of `source` fall in, with how many rows each holds.
fn windows_of(conn: &Connection, width: Width, source: &str) -> Result<Vec<(Nanos, u64)>> {
    let sql = match width {
        Width::Fixed(w) => format!(
            "SELECT epoch_ns(\"time\") - ((epoch_ns(\"time\") % {w}) + {w}) % {w} AS b, count(*) \
             FROM {source} GROUP BY b ORDER BY b",
            w = w.0
        ),
        // Calendar windows: whole months first, folded into the width below.
        Width::Months(_) => format!(
            "SELECT epoch_ns(date_trunc('month', \"time\")) AS b, count(*) FROM {source} GROUP BY b ORDER BY b"
        ),
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out: Vec<(Nanos, u64)> = Vec::new();
    for (b, n) in rows {
        let start = width.floor(Nanos(b));
        match out.last_mut() {
            Some((s, m)) if *s == start => *m += n,
            _ => out.push((start, n)),
        }
    }
    Ok(out)
}

/// The final path of each output, given their `chunk_time`s in order: each in its window's
/// directory, numbered when its window has several.
pub fn output_paths(group: &Group, chunk_times: &[Nanos]) -> Vec<String> {
    let mut count: std::collections::BTreeMap<Nanos, usize> = Default::default();
    for c in chunk_times {
        *count.entry(*c).or_default() += 1;
    }
    let mut seen: std::collections::BTreeMap<Nanos, usize> = Default::default();
    chunk_times
        .iter()
        .map(|c| {
            let path = group.output_path_at(*c);
            let k = seen.entry(*c).or_default();
            *k += 1;
            if count[c] == 1 {
                path
            } else {
                numbered(&path, *k)
            }
        })
        .collect()
}

/// Files written so far, removed when dropped unless kept: a failed write leaves nothing.
struct Pending(Vec<PathBuf>);

impl Pending {
    /// The files are verified: they stay.
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
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
