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
//!
//! `target` finds the table on every node, `plan` what a delete does to it (`files` ranks
//! and clusters its files, `points` finds the points in DuckDB, `predicate` checks
//! `--where`), `run` merges and commits, and `report` is what the operator reads.

mod files;
mod plan;
mod points;
mod predicate;
mod report;
mod run;
mod target;

pub(crate) use report::report_text;
pub use report::{DeleteReport, NodeDelete};
pub(crate) use run::{delete, DeleteRun};
pub(crate) use target::Targets;

use crate::format::ids::{Nanos, TableKey};
use crate::pipeline::plan::Group;
use serde::Serialize;

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
