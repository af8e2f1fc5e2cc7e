//! Deleting rows: which points a delete matches, which stored versions it removes, and the
//! merges that remove them.
//!
//! A point matches when the row the server answers for it (its versions combined by the
//! server's rule, per `chunk_time`) lies in the time scope and satisfies the predicate. Every
//! stored version of a matching (series key, time) goes, in every file of the table: else an
//! older version would surface once the newer one is gone.
//!
//! The files holding a version are rewritten without them, each together with every file of
//! its `chunk_time` whose time range overlaps it (and so on): a file that loses rows can
//! begin later than before, and the server would then order it otherwise among the files it
//! overlaps, changing which version of the points that stay it returns. Merged together by the
//! server's rule, minus the deleted points, they answer as before. The outputs keep their
//! `chunk_time`, so the server's deduplication partitions do not change.

use crate::error::{Error, Result};
use crate::format::ids::{FileId, FileIdMap, LoadPos, Nanos, TableKey};
use crate::format::layout::{window_dirs, ParquetPath};
use crate::format::model::EntryRc;
use crate::format::parquet::{read_footers, sql_ident, sql_str, Footer};
use crate::pipeline::discover::{LiveFile, Node};
use crate::pipeline::merge::{precedence, TableSchema, DROP_KEYS};
use crate::pipeline::plan::{Group, GEN1};
use duckdb::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The rows a delete applies to: a time range (`[min, max)`, either end open) and a SQL
/// predicate over the table's columns.
#[derive(Clone, Debug, Serialize)]
pub struct Selection {
    /// Inclusive; `null` for no lower bound.
    pub min_time: Option<Nanos>,
    /// Exclusive; `null` for no upper bound.
    pub max_time: Option<Nanos>,
    /// A boolean SQL expression over tags, fields and `time`, as DuckDB evaluates it; `null`
    /// for every row of the time range.
    pub predicate: Option<String>,
}

impl Selection {
    /// Whether a file with data in `[min, max]` can hold a selected row.
    fn touches(&self, min: Nanos, max: Nanos) -> bool {
        self.min_time.is_none_or(|lo| max >= lo) && self.max_time.is_none_or(|hi| min < hi)
    }

    /// The condition on a row, as SQL.
    fn condition(&self) -> String {
        let mut c = Vec::new();
        if let Some(lo) = self.min_time {
            c.push(format!("epoch_ns(\"time\") >= {}", lo.0));
        }
        if let Some(hi) = self.max_time {
            c.push(format!("epoch_ns(\"time\") < {}", hi.0));
        }
        if let Some(p) = &self.predicate {
            c.push(format!("({p})"));
        }
        if c.is_empty() {
            "TRUE".into()
        } else {
            c.join(" AND ")
        }
    }
}

/// What a delete does in one `chunk_time` of a table: the files it rewrites, and the rows.
#[derive(Clone, Debug, Serialize)]
pub struct DeleteWindow {
    /// The `chunk_time` of the files (their window's start).
    pub window_start: Nanos,
    /// Files rewritten (those holding a deleted version, and those they overlap).
    pub files: usize,
    /// Rows the server answers that go (a point stored under two chunk_times counts twice).
    pub rows_deleted: u64,
    /// Stored versions of the deleted points that go.
    pub versions_removed: u64,
    /// Rows the server answers from these files that stay.
    pub rows_kept: u64,
    /// Bytes of the files rewritten.
    pub bytes: u64,
    /// Time range of the deleted rows.
    pub min_time: Nanos,
    pub max_time: Nanos,
}

/// A delete's work on one table of one node.
pub struct TableDelete {
    pub table: TableKey,
    /// One merge per set of overlapping files that holds a deleted version.
    pub groups: Vec<Group>,
    /// Per `chunk_time`, what goes.
    pub windows: Vec<DeleteWindow>,
    /// The table's columns, as the merge will write them.
    pub columns: Vec<String>,
}

/// Validates `predicate` against the table's columns: DuckDB must accept it as a boolean
/// expression over them. The error lists the columns.
pub fn check_predicate(conn: &Connection, schema: &TableSchema, predicate: &str) -> Result<()> {
    if predicate.trim().is_empty() {
        return Err(Error::usage("--where is empty"));
    }
    if has_statement_break(predicate) {
        return Err(Error::usage(
            "--where must be one expression (no `;` outside quotes)",
        ));
    }
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "CAST(NULL AS {}) AS {}",
                c.ty.duckdb_type(),
                sql_ident(&c.name)
            )
        })
        .collect();
    let listed = || {
        let cols: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("{} ({})", c.name, c.ty.describe()))
            .collect();
        format!("the table's columns: {}", cols.join(", "))
    };
    let sql = format!(
        "SELECT column_type FROM (DESCRIBE SELECT ({predicate}) AS c FROM (SELECT {}))",
        cols.join(", ")
    );
    let ty: String = conn.query_row(&sql, [], |r| r.get(0)).map_err(|e| {
        Error::usage(format!(
            "--where `{predicate}` is not a condition on this table: {e}"
        ))
        .hint(listed())
    })?;
    if ty != "BOOLEAN" {
        return Err(Error::usage(format!(
            "--where `{predicate}` is not a condition on this table: it is of type {ty}, not BOOLEAN"
        ))
        .hint(listed()));
    }
    Ok(())
}

/// Whether `sql` has a `;` outside its quoted strings and identifiers: a second statement.
/// A doubled quote inside a quoted text toggles twice, so it needs no case of its own.
fn has_statement_break(sql: &str) -> bool {
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => return true,
            _ => {}
        }
    }
    false
}

/// Finds what a delete of `sel` does to `table` of `node`: creates [`DROP_KEYS`] in `conn`
/// with the points to delete, and returns the merges that remove them (named after
/// `run_id`). Fails, changing nothing, on a predicate DuckDB does not accept.
pub fn plan_table(
    conn: &Connection,
    data_dir: &Path,
    node: &Node,
    table: TableKey,
    sel: &Selection,
    run_id: &str,
) -> Result<TableDelete> {
    let files = TableFiles::of(node, table);
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {DROP_KEYS}"))?;
    let schema = files.schema(data_dir)?;
    if let Some(p) = &sel.predicate {
        check_predicate(conn, &schema, p)?;
    }
    let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    let (ranked, split) = files.ranked(sel);
    if ranked.is_empty() {
        return Ok(TableDelete {
            table,
            groups: Vec::new(),
            windows: Vec::new(),
            columns,
        });
    }
    let points = Points::select(
        conn,
        &schema,
        &rows_by_point(&schema, data_dir, &ranked, split),
        sel,
    )?;
    let touched: BTreeSet<FileId> = points.hit.keys().map(|&i| ranked[i].entry.id).collect();
    let mut groups = Vec::new();
    let mut windows: BTreeMap<Nanos, DeleteWindow> = BTreeMap::new();
    for cluster in clusters(&files.all, |f| touched.contains(&f.id)) {
        let inputs: Vec<LiveFile> = cluster.iter().map(|(f, h)| files.file(f, *h)).collect();
        let chunk = inputs[0].entry.chunk_time;
        let ids: BTreeSet<_> = inputs.iter().map(|f| f.entry.id).collect();
        let w = match windows.entry(chunk) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(points.window(chunk)?),
        };
        w.files += inputs.len();
        w.versions_removed += points
            .hit
            .iter()
            .filter(|(i, _)| ids.contains(&ranked[**i].entry.id))
            .map(|(_, n)| n)
            .sum::<u64>();
        w.bytes += inputs.iter().map(|f| f.entry.size_bytes).sum::<u64>();
        groups.push(group(node, table, chunk, inputs, run_id));
    }
    Ok(TableDelete {
        table,
        groups,
        windows: windows.into_values().collect(),
        columns,
    })
}

/// A table's files, live and hidden, with the rank the server gives each.
struct TableFiles<'a> {
    node: &'a Node,
    table: TableKey,
    /// Every file, and whether it is hidden.
    all: Vec<(&'a EntryRc, bool)>,
    /// Where the server would load each file if it read every snapshot; only when some are
    /// hidden.
    unbounded: Option<FileIdMap<LoadPos>>,
}

impl<'a> TableFiles<'a> {
    fn of(node: &'a Node, table: TableKey) -> Self {
        let all: Vec<(&EntryRc, bool)> = node
            .live
            .get(&table)
            .into_iter()
            .flatten()
            .map(|f| (f, false))
            .chain(
                node.hidden
                    .get(&table)
                    .into_iter()
                    .flatten()
                    .map(|f| (f, true)),
            )
            .collect();
        // Hidden files (included, or they would come back later) rank as the server would
        // rank them if it read everything; live ones as it does.
        let unbounded = all
            .iter()
            .any(|(_, h)| *h)
            .then(|| node.unbounded_load_positions());
        TableFiles {
            node,
            table,
            all,
            unbounded,
        }
    }

    fn file(&self, f: &EntryRc, hidden: bool) -> LiveFile {
        let pos = match (&self.unbounded, hidden) {
            (Some(all), true) => all.get(f.id).copied(),
            _ => self.node.load_pos.get(f.id).copied(),
        };
        LiveFile {
            table: self.table,
            entry: EntryRc::clone(f),
            load_pos: pos.unwrap_or(LoadPos(u32::MAX)),
        }
    }

    /// The columns of every file together.
    fn schema(&self, data_dir: &Path) -> Result<TableSchema> {
        let paths: Vec<_> = self
            .all
            .iter()
            .map(|(f, _)| f.path.under(data_dir))
            .collect();
        let footers = read_footers(&paths)?;
        let pairs: Vec<(FileId, &Footer)> = self
            .all
            .iter()
            .map(|(f, _)| f.id)
            .zip(footers.iter())
            .collect();
        TableSchema::union(&pairs)
    }

    /// The files that can hold a row of `sel`: the live ones ranked as the server ranks them,
    /// then (from the index returned) the hidden ones, apart, each set combined on its own as
    /// the server would see it.
    fn ranked(&self, sel: &Selection) -> (Vec<LiveFile>, usize) {
        let (mut shown, mut unseen) = (Vec::new(), Vec::new());
        for (f, h) in &self.all {
            if sel.touches(f.min_time, f.max_time) {
                let set = if *h { &mut unseen } else { &mut shown };
                set.push(self.file(f, *h));
            }
        }
        let mut ranked: Vec<LiveFile> = precedence(&shown.iter().collect::<Vec<_>>())
            .into_iter()
            .cloned()
            .collect();
        let split = ranked.len();
        ranked.extend(
            precedence(&unseen.iter().collect::<Vec<_>>())
                .into_iter()
                .cloned(),
        );
        (ranked, split)
    }
}

/// The points a delete removes, in `conn`: [`DROP_KEYS`] holds their keys and
/// `__kompactor_answers` the server's row of every point of the candidate files.
struct Points<'c> {
    conn: &'c Connection,
    /// `a` (an answer) and `d` (a deleted key) are the same point.
    on: String,
    /// Per candidate file (by rank), how many stored versions of deleted points it holds.
    hit: BTreeMap<usize, u64>,
}

impl<'c> Points<'c> {
    /// Combines the versions in `rows` (a [`rows_by_point`] query) by the server's rule and
    /// keeps the keys of the answers `sel` matches.
    fn select(
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
    fn window(&self, chunk: Nanos) -> Result<DeleteWindow> {
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
fn rows_by_point(
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

/// The sets of files of one `chunk_time` (live or hidden) whose time ranges overlap, one
/// after another, that hold a file `touched` accepts.
fn clusters<'a>(
    files: &[(&'a EntryRc, bool)],
    touched: impl Fn(&EntryRc) -> bool,
) -> Vec<Vec<(&'a EntryRc, bool)>> {
    // Live and hidden files apart: the server never combines them, and an output takes the
    // place of one of its inputs (visible or hidden as it was).
    let mut by_chunk: BTreeMap<(Nanos, bool), Vec<(&EntryRc, bool)>> = BTreeMap::new();
    for (f, h) in files {
        by_chunk
            .entry((f.chunk_time, *h))
            .or_default()
            .push((*f, *h));
    }
    let mut out = Vec::new();
    for (_, mut fs) in by_chunk {
        fs.sort_by_key(|(f, _)| (f.min_time, f.id));
        let mut current: Vec<(&EntryRc, bool)> = Vec::new();
        let mut end = Nanos::MIN;
        for (f, h) in fs {
            if !current.is_empty() && f.min_time > end {
                if current.iter().any(|(f, _)| touched(f)) {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
            end = if current.is_empty() {
                f.max_time
            } else {
                end.max(f.max_time)
            };
            current.push((f, h));
        }
        if current.iter().any(|(f, _)| touched(f)) {
            out.push(current);
        }
    }
    out
}

/// The merge that rewrites one set of files without the deleted points.
fn group(node: &Node, table: TableKey, chunk: Nanos, inputs: Vec<LiveFile>, run_id: &str) -> Group {
    let first = inputs.iter().map(|f| f.entry.id).min().expect("inputs");
    let output_path = inputs[0].entry.path.with_str(|p| {
        let table_dir = ParquetPath::parse(p).map_or(p, |p| p.table_dir);
        format!(
            "{table_dir}/{}/kompactor-delete-{run_id}-{first}.parquet",
            window_dirs(chunk)
        )
    });
    Group {
        node: node.id.clone(),
        table,
        window_start: chunk,
        window_end: GEN1.end(chunk),
        width: GEN1,
        joined: false,
        rows: inputs.iter().map(|f| f.entry.row_count).sum(),
        bytes: inputs.iter().map(|f| f.entry.size_bytes).sum(),
        outputs_estimate: 1,
        revived: 0,
        rows_revived: 0,
        bytes_revived: 0,
        output_path,
        inputs,
    }
}

#[cfg(test)]
mod tests {
    use super::has_statement_break;

    #[test]
    fn a_semicolon_breaks_a_statement_only_outside_quotes() {
        assert!(has_statement_break("host = 'a'; DROP TABLE x"));
        assert!(has_statement_break("x = 1;"));
        assert!(!has_statement_break("host = 'a;b'"));
        assert!(!has_statement_break("\"odd;col\" = 1"));
        assert!(!has_statement_break("host = 'it''s;here'"));
        assert!(has_statement_break("host = 'it''s' ; x"));
    }
}
