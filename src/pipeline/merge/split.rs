//! Row caps: the time ranges an output is split into, and the row-group size of each file.

use crate::error::Result;
use crate::format::ids::Nanos;
use duckdb::Connection;

/// The largest row group written: at most the server's largest (100,000 rows; DuckDB's
/// writer never exceeds the size it is given), and a multiple of DuckDB's 2,048-row vectors.
const MAX_ROW_GROUP: u64 = 98_304;
const VECTOR: u64 = 2_048;

/// Row groups of equal size for a file of `rows` rows (each a whole number of vectors, at
/// most `MAX_ROW_GROUP`): DuckDB's sorted writer spends about 7% more on a file split into
/// a full row group and a short remainder than on the same rows in even halves.
pub(super) fn row_group_size(rows: u64) -> u64 {
    let groups = rows.div_ceil(MAX_ROW_GROUP).max(1);
    rows.div_ceil(groups)
        .next_multiple_of(VECTOR)
        .clamp(VECTOR, MAX_ROW_GROUP)
}

/// The rows of one output file: `lo <= time < hi` (unbounded where `None`).
#[derive(Debug, PartialEq)]
pub(super) struct Range {
    pub(super) lo: Option<Nanos>,
    pub(super) hi: Option<Nanos>,
    pub(super) rows: u64,
}

/// Time ranges that hold at most `max_rows` rows each; a single timestamp is never split,
/// so only a range of one timestamp can hold more.
///
/// Cuts come from histograms of `time` (4,096 buckets, refined where one bucket alone holds
/// more than `max_rows`): streaming aggregates that need little memory, unlike a sort of
/// the whole window.
pub(super) fn split_ranges(
    conn: &Connection,
    rows: u64,
    max_rows: u64,
    source: &str,
) -> Result<Vec<Range>> {
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
    use super::*;

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
}
