//! Measuring every table through the running server: per table its rows, its time range, and
//! per field the number of values and (numeric fields) their sum.
//!
//! A table over the server's query file limit is measured in time slices: its files' time
//! ranges (`system.parquet_files`) are cut so that no slice touches more files than the limit
//! ([`crate::server::slices`]), and the slices' figures are added up
//! ([`crate::server::figures`]).

use crate::server::figures::{add_up, int_of, is_numeric, Figures};
use crate::server::file_limit::FileLimit;
use crate::server::http::{Client, HttpError, Row};
use crate::server::slices::{plan_slices, Slice};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

fn str_of<'a>(r: &'a Row, k: &str) -> Result<&'a str, MeasureError> {
    r.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| MeasureError::Shape(format!("no {k} in {}", Value::Object(r.clone()))))
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
        let (a, b) = (
            int_of(f.get("min_time")).map_err(MeasureError::Shape)?,
            int_of(f.get("max_time")).map_err(MeasureError::Shape)?,
        );
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
        slices = plan_slices(&spans, budget.unwrap()).map_err(MeasureError::Unsliceable)?;
    };
    m.slices = Some(slices.len() as u64);
    add_up(&fields, &parts).map_err(MeasureError::Shape)
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
