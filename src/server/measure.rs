//! Measuring every table through the running server: per table its rows, its time range, and
//! per field the number of values and (numeric fields) their sum.
//!
//! A table over the server's query file limit is measured in time slices: its files' time
//! ranges (`system.parquet_files`) are cut so that no slice touches more files than the limit,
//! and the slices' figures are added up.

use crate::server::file_limit::FileLimit;
use crate::server::http::{Client, HttpError, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

/// The layout version of a [`Measurement`] document.
pub const MEASUREMENT_FORMAT_VERSION: u32 = 1;

/// Every table of every database a server shows (but `_internal`), measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub format_version: u32,
    /// The server measured.
    pub url: String,
    /// When the measuring started, RFC 3339 UTC.
    pub started_at: String,
    pub seconds: f64,
    /// HTTP requests sent.
    pub requests: u64,
    /// The databases measured, by name.
    pub databases: Vec<String>,
    /// Sorted by database, then table.
    pub tables: Vec<TableMeasure>,
}

/// One table, measured or not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableMeasure {
    pub db: String,
    pub table: String,
    /// The database and table ids, from the paths of the table's files, when it has any.
    pub ids: Option<(u64, u64)>,
    /// The table's Parquet files as `system.parquet_files` lists them.
    pub files: Option<u64>,
    /// The server's query file limit, when the table was over it.
    pub file_limit: Option<u64>,
    /// Queries the table took: 1, or the number of time slices.
    pub slices: Option<u64>,
    /// Why the table could not be measured; then `figures` is null.
    pub error: Option<String>,
    pub figures: Option<Figures>,
}

/// What a table holds, as the server answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// `count(*)`.
    pub rows: u64,
    /// `min(time)` and `max(time)` in nanoseconds since the epoch; null for an empty table.
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    /// Per field (tags left out), by name.
    pub fields: BTreeMap<String, FieldFigures>,
}

/// One field's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldFigures {
    /// The server's Arrow type name (`Int64`, `UInt64`, `Float64`, `Utf8`, `Boolean`).
    pub data_type: String,
    /// `count(field)`: the values that are not null.
    pub count: u64,
    /// The sum of the values, for numeric fields.
    pub sum: Option<Sum>,
}

/// A numeric field's sum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sum {
    /// Int64: sums wrap modulo 2^64 on the server; so does adding the slices here, so the sum
    /// is exact and the same in any order.
    Int { value: i64 },
    /// UInt64, wrapping likewise.
    UInt { value: u64 },
    /// Float64: `value` is null when the sum is not finite (the server writes inf and NaN as
    /// null). `abs` is the sum of the absolute values, which bounds the rounding error.
    Float {
        value: Option<f64>,
        abs: Option<f64>,
    },
}

fn is_numeric(t: &str) -> bool {
    matches!(t, "Int64" | "UInt64" | "Float64")
}

/// A table that could not be measured.
#[derive(Debug)]
pub enum MeasureError {
    Http(HttpError),
    /// More of the table's files overlap one moment than the limit allows in one query.
    Unsliceable(String),
    /// An answer of an unexpected shape.
    Shape(String),
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::Http(e) => write!(f, "{e}"),
            MeasureError::Unsliceable(s) | MeasureError::Shape(s) => f.write_str(s),
        }
    }
}

impl From<HttpError> for MeasureError {
    fn from(e: HttpError) -> Self {
        MeasureError::Http(e)
    }
}

/// A half-open time slice `[lo, hi)` in nanoseconds; `None` is unbounded.
pub type Slice = (Option<i64>, Option<i64>);

/// Cuts time into slices so that no slice touches more than `budget` of `files` (their
/// `(min_time, max_time)`); the first and last are open-ended, so that rows outside every
/// file (the server's write buffer) are counted too. A file touches `[lo, hi)` if
/// `min_time < hi` and `max_time >= lo` (checked on 3.0.3 and 3.10); each cut is one
/// nanosecond earlier than needed, so a server that also counted a file starting exactly at
/// `hi` would still be within the budget.
pub fn plan_slices(files: &[(i64, i64)], budget: usize) -> Result<Vec<Slice>, MeasureError> {
    let budget = budget.max(1);
    let mut slices = Vec::new();
    let mut lo: Option<i64> = None;
    loop {
        let mut live: Vec<i64> = files
            .iter()
            .filter(|(_, max)| lo.is_none_or(|lo| *max >= lo))
            .map(|(min, _)| *min)
            .collect();
        if live.len() <= budget {
            slices.push((lo, None));
            return Ok(slices);
        }
        live.sort_unstable();
        let hi = live[budget] - 1;
        if let Some(lo) = lo.filter(|lo| hi <= *lo) {
            let n = files
                .iter()
                .filter(|(mn, mx)| *mn <= lo + 1 && *mx >= lo)
                .count();
            return Err(MeasureError::Unsliceable(format!(
                "{n} files overlap the time {}, more than the query file limit allows in one query",
                fmt_ns(Some(lo))
            )));
        }
        slices.push((lo, Some(hi)));
        lo = Some(hi);
    }
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Nanoseconds as an exact RFC 3339 literal the server compares `time` with.
fn time_literal(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    literal(&t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
}

/// Nanoseconds for people: RFC 3339, no trailing zeros; `-` for none.
pub fn fmt_ns(ns: Option<i64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) => chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }
}

fn aggregate_sql(table: &str, fields: &[(String, String)], (lo, hi): Slice) -> String {
    let mut cols = vec![
        "count(*) AS n".to_string(),
        "CAST(min(time) AS BIGINT) AS t0".into(),
        "CAST(max(time) AS BIGINT) AS t1".into(),
    ];
    for (i, (name, ty)) in fields.iter().enumerate() {
        let f = ident(name);
        cols.push(format!("count({f}) AS c{i}"));
        if is_numeric(ty) {
            cols.push(format!("sum({f}) AS s{i}"));
        }
        if ty == "Float64" {
            cols.push(format!("sum(abs({f})) AS a{i}"));
        }
    }
    let mut wh = Vec::new();
    if let Some(lo) = lo {
        wh.push(format!("time >= {}", time_literal(lo)));
    }
    if let Some(hi) = hi {
        wh.push(format!("time < {}", time_literal(hi)));
    }
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), ident(table));
    if !wh.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&wh.join(" AND "));
    }
    sql
}

fn int_of(v: Option<&Value>) -> Result<Option<i128>, MeasureError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .map(Some)
            .ok_or_else(|| MeasureError::Shape(format!("{n} is not an integer"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| MeasureError::Shape(format!("{s:?} is not an integer"))),
        Some(other) => Err(MeasureError::Shape(format!("{other} is not an integer"))),
    }
}

fn float_of(v: Option<&Value>) -> Result<Option<f64>, MeasureError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| MeasureError::Shape(format!("{s:?} is not a number"))),
        Some(other) => Err(MeasureError::Shape(format!("{other} is not a number"))),
    }
}

fn str_of<'a>(r: &'a Row, k: &str) -> Result<&'a str, MeasureError> {
    r.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| MeasureError::Shape(format!("no {k} in {}", Value::Object(r.clone()))))
}

/// A float sum's running total with Neumaier's compensation: adding the slices' sums in order
/// loses no more than one rounding.
#[derive(Default)]
struct FloatTotal {
    sum: f64,
    carry: f64,
}

impl FloatTotal {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.carry += (self.sum - t) + x;
        } else {
            self.carry += (x - t) + self.sum;
        }
        self.sum = t;
    }
    fn value(&self) -> f64 {
        self.sum + self.carry
    }
}

/// The figures of the slices' answers, added up.
fn add_up(fields: &[(String, String)], parts: &[Option<Row>]) -> Result<Figures, MeasureError> {
    const MOD: i128 = 1 << 64;
    let mut rows = 0u64;
    let (mut t0, mut t1): (Option<i64>, Option<i64>) = (None, None);
    let mut counts = vec![0u64; fields.len()];
    let mut ints = vec![Some(0i128); fields.len()];
    let mut floats: Vec<(Option<FloatTotal>, Option<FloatTotal>)> = fields
        .iter()
        .map(|_| (Some(FloatTotal::default()), Some(FloatTotal::default())))
        .collect();
    for r in parts.iter().flatten() {
        let n = int_of(r.get("n"))?.unwrap_or(0) as u64;
        rows += n;
        if n == 0 {
            continue;
        }
        if let Some(v) = int_of(r.get("t0"))? {
            t0 = Some(t0.map_or(v as i64, |t| t.min(v as i64)));
        }
        if let Some(v) = int_of(r.get("t1"))? {
            t1 = Some(t1.map_or(v as i64, |t| t.max(v as i64)));
        }
        for (i, (_, ty)) in fields.iter().enumerate() {
            let c = int_of(r.get(&format!("c{i}")))?.unwrap_or(0) as u64;
            counts[i] += c;
            if c == 0 {
                continue;
            }
            match ty.as_str() {
                "Int64" | "UInt64" => {
                    let s = int_of(r.get(&format!("s{i}")))?;
                    ints[i] = match (ints[i], s) {
                        (Some(acc), Some(s)) => Some((acc + s).rem_euclid(MOD)),
                        _ => None,
                    };
                }
                "Float64" => {
                    let (s, a) = &mut floats[i];
                    for (total, key) in [(s, "s"), (a, "a")] {
                        match float_of(r.get(&format!("{key}{i}")))? {
                            Some(x) if total.is_some() => total.as_mut().unwrap().add(x),
                            _ => *total = None,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let fields = fields
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let sum = match ty.as_str() {
                // The 64-bit pattern, read as the column's type.
                "Int64" => ints[i].map(|v| Sum::Int {
                    value: v as u64 as i64,
                }),
                "UInt64" => ints[i].map(|v| Sum::UInt { value: v as u64 }),
                "Float64" => Some(Sum::Float {
                    value: floats[i].0.as_ref().map(FloatTotal::value),
                    abs: floats[i].1.as_ref().map(FloatTotal::value),
                }),
                _ => None,
            };
            (
                name.clone(),
                FieldFigures {
                    data_type: ty.clone(),
                    count: counts[i],
                    sum,
                },
            )
        })
        .collect();
    Ok(Figures {
        rows,
        min_time: t0,
        max_time: t1,
        fields,
    })
}

/// Measures one table of `db`.
pub fn measure_table(client: &Client, db: &str, table: &str) -> TableMeasure {
    let mut m = TableMeasure {
        db: db.to_string(),
        table: table.to_string(),
        ids: None,
        files: None,
        file_limit: None,
        slices: None,
        error: None,
        figures: None,
    };
    match figures_of(client, &mut m) {
        Ok(f) => m.figures = Some(f),
        Err(e) => m.error = Some(e.to_string()),
    }
    m
}

fn figures_of(client: &Client, m: &mut TableMeasure) -> Result<Figures, MeasureError> {
    let (db, table) = (m.db.as_str(), m.table.as_str());
    let cols = client.query(
        db,
        &format!(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'iox' AND table_name = {}",
            literal(table)
        ),
    )?;
    let mut fields = Vec::new();
    for c in &cols {
        let (name, ty) = (str_of(c, "column_name")?, str_of(c, "data_type")?);
        // Tags are dictionaries; their values are in the row count and the series.
        if name != "time" && !ty.starts_with("Dictionary") {
            fields.push((name.to_string(), ty.to_string()));
        }
    }
    fields.sort();
    // Always filtered by table name: unfiltered, 3.10 labels other databases' files with this
    // database's table names.
    let files = client.query(
        db,
        &format!(
            "SELECT min_time, max_time, path FROM system.parquet_files WHERE table_name = {}",
            literal(table)
        ),
    )?;
    m.files = Some(files.len() as u64);
    m.ids = files
        .first()
        .and_then(|f| ids_of_path(f.get("path")?.as_str()?));
    let mut spans = Vec::with_capacity(files.len());
    for f in &files {
        let (a, b) = (int_of(f.get("min_time"))?, int_of(f.get("max_time"))?);
        if let (Some(a), Some(b)) = (a, b) {
            spans.push((a as i64, b as i64));
        }
    }
    let mut slices: Vec<Slice> = vec![(None, None)];
    let mut budget: Option<usize> = None;
    let parts = loop {
        let answers: Result<Vec<Option<Row>>, HttpError> = slices
            .iter()
            .map(|s| {
                client
                    .query(db, &aggregate_sql(table, &fields, *s))
                    .map(|rows| rows.into_iter().next())
            })
            .collect();
        let e = match answers {
            Ok(parts) => break parts,
            Err(e) => e,
        };
        let Some(FileLimit { limit, .. }) = e.file_limit() else {
            return Err(e.into());
        };
        budget = Some(match budget {
            // The whole table is over the limit: slice it.
            None => {
                m.file_limit = limit;
                limit.map_or((spans.len() / 2).max(1), |l| l as usize)
            }
            // Files came since the listing: narrower.
            Some(b) if b > 1 && slices.len() > 1 => b / 2,
            Some(b) => {
                return Err(MeasureError::Unsliceable(format!(
                    "a slice of at most {b} file(s) still exceeds the query file limit: {e}"
                )))
            }
        });
        slices = plan_slices(&spans, budget.unwrap())?;
    };
    m.slices = Some(slices.len() as u64);
    add_up(&fields, &parts)
}

/// The database and table ids in a file's path (`.../dbs/<db>/<table>/...`, where up to 3.5 a
/// segment is `name-id`).
fn ids_of_path(path: &str) -> Option<(u64, u64)> {
    let segs: Vec<&str> = path.split('/').collect();
    let i = segs.iter().position(|s| *s == "dbs")?;
    let id = |s: &str| s.rsplit('-').next()?.parse::<u64>().ok();
    Some((id(segs.get(i + 1)?)?, id(segs.get(i + 2)?)?))
}

/// The databases the server shows, but `_internal` and deleted ones, sorted.
pub fn databases(client: &Client) -> Result<Vec<String>, MeasureError> {
    let mut out = Vec::new();
    for r in client.rows("/api/v3/configure/database", &[("format", "json")])? {
        let name = str_of(&r, "iox::database")?;
        let deleted = match r.get("deleted") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        if name != "_internal" && !deleted {
            out.push(name.to_string());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The tables of database `db`, sorted.
pub fn tables(client: &Client, db: &str) -> Result<Vec<String>, MeasureError> {
    let rows = client.query(
        db,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'iox'",
    )?;
    let mut out = rows
        .iter()
        .map(|r| str_of(r, "table_name").map(str::to_string))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Measures every table of every database; `each` sees each table as it is measured. Fails
/// only when the databases or tables cannot be listed; a table that cannot be measured
/// carries its error.
pub fn measure_all(
    client: &Client,
    mut each: impl FnMut(&TableMeasure),
) -> Result<Measurement, MeasureError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let requests = client.requests();
    let databases = databases(client)?;
    let mut out = Vec::new();
    for db in &databases {
        for t in tables(client, db)? {
            let m = measure_table(client, db, &t);
            each(&m);
            out.push(m);
        }
    }
    Ok(Measurement {
        format_version: MEASUREMENT_FORMAT_VERSION,
        url: client.url().to_string(),
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        requests: client.requests() - requests,
        databases,
        tables: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches((lo, hi): Slice, (mn, mx): (i64, i64)) -> bool {
        hi.is_none_or(|hi| mn < hi) && lo.is_none_or(|lo| mx >= lo)
    }

    #[test]
    fn slices_cover_all_time_and_touch_at_most_the_budget() {
        // 1,000 files of 10 minutes each, some overlapping their neighbours (late writes).
        let ten_min = 600_000_000_000i64;
        let files: Vec<(i64, i64)> = (0..1000)
            .map(|i| {
                let lo = i * ten_min;
                let hi = lo + ten_min - 1 + if i % 7 == 0 { ten_min } else { 0 };
                (lo, hi)
            })
            .collect();
        // Two files overlap every seventh file's second ten minutes, and a cut one nanosecond
        // before a file's start also counts that file: one file per query is impossible there,
        // three always suffice.
        assert!(matches!(plan_slices(&files, 1), Err(MeasureError::Unsliceable(_))));
        for budget in [3usize, 4, 10, 432, 999, 1000] {
            let slices = plan_slices(&files, budget).unwrap();
            assert_eq!(slices.first().unwrap().0, None);
            assert_eq!(slices.last().unwrap().1, None);
            for w in slices.windows(2) {
                assert_eq!(w[0].1, w[1].0, "slices are contiguous");
            }
            for s in &slices {
                let n = files.iter().filter(|f| touches(*s, **f)).count();
                assert!(n <= budget, "budget {budget}: {s:?} touches {n}");
            }
            if budget >= 1000 {
                assert_eq!(slices.len(), 1);
            }
        }
    }

    #[test]
    fn files_overlapping_one_moment_beyond_the_budget_cannot_be_sliced() {
        let files = vec![(0, 100), (0, 100), (50, 150)];
        assert!(matches!(
            plan_slices(&files, 1),
            Err(MeasureError::Unsliceable(_))
        ));
        assert_eq!(plan_slices(&files, 3).unwrap().len(), 1);
    }

    #[test]
    fn slices_add_up_exactly_and_integers_wrap_like_the_server() {
        let fields = vec![
            ("f".to_string(), "Float64".to_string()),
            ("i".to_string(), "Int64".to_string()),
            ("s".to_string(), "Utf8".to_string()),
        ];
        let row = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => unreachable!(),
        };
        let parts = vec![
            row(
                serde_json::json!({"n": 2, "t0": 10, "t1": 20, "c0": 2, "s0": 0.1, "a0": 0.1,
                                    "c1": 2, "s1": i64::MAX, "c2": 1}),
            ),
            row(serde_json::json!({"n": 0})),
            None,
            row(
                serde_json::json!({"n": 1, "t0": 5, "t1": 7, "c0": 1, "s0": 0.2, "a0": 0.2,
                                    "c1": 1, "s1": 2, "c2": 1}),
            ),
        ];
        let f = add_up(&fields, &parts).unwrap();
        assert_eq!((f.rows, f.min_time, f.max_time), (3, Some(5), Some(20)));
        assert_eq!(
            f.fields["i"].sum,
            Some(Sum::Int {
                value: i64::MIN + 1
            })
        );
        assert_eq!(
            f.fields["s"],
            FieldFigures {
                data_type: "Utf8".into(),
                count: 2,
                sum: None
            }
        );
        let Some(Sum::Float { value: Some(v), .. }) = f.fields["f"].sum else {
            panic!()
        };
        assert!((v - 0.3).abs() < 1e-15);
        // A slice whose float sum is not finite (null) makes the total not finite.
        let parts = vec![row(serde_json::json!({"n": 1, "c0": 1, "a0": 1.0}))];
        let f = add_up(&fields, &parts).unwrap();
        assert_eq!(
            f.fields["f"].sum,
            Some(Sum::Float {
                value: None,
                abs: Some(1.0)
            })
        );
    }

    #[test]
    fn sql_quotes_names_and_times_exactly() {
        let sql = aggregate_sql(
            "we\"ird",
            &[("it's".into(), "Float64".into())],
            (Some(1), Some(1_700_000_000_123_456_789)),
        );
        assert!(sql.contains("FROM \"we\"\"ird\""), "{sql}");
        assert!(sql.contains("count(\"it's\")"), "{sql}");
        assert!(
            sql.contains("time >= '1970-01-01T00:00:00.000000001Z'"),
            "{sql}"
        );
        assert!(
            sql.contains("time < '2023-11-14T22:13:20.123456789Z'"),
            "{sql}"
        );
        assert_eq!(
            ids_of_path("node0/dbs/metrics-1/cpu-2/2024-01-01/00-00/x.parquet"),
            Some((1, 2))
        );
        assert_eq!(
            ids_of_path("node0/dbs/1/2/2024-01-01/00-00/x.parquet"),
            Some((1, 2))
        );
        assert_eq!(ids_of_path("elsewhere"), None);
    }
}
