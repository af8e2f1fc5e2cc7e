//! The maintenance report: `report.json` in the record directory, and the `--json` document.

use crate::server::compare::{TableComparison, TableResult};
use serde::Serialize;

/// The layout version of [`MaintainReport`].
pub const MAINTAIN_FORMAT_VERSION: u32 = 1;

/// The outcome of a maintenance, and its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Compacted (or nothing to compact), and every table answers as before. Exit 0.
    Proven,
    /// Stopped before anything changed; the server runs again unless `server_running` says
    /// otherwise. Exit 1.
    NotCompacted,
    /// The compaction was undone because a table differed or the server failed after it;
    /// every table answers as before it. Exit 3.
    Undone,
    /// The operator must look: the server did not come back, or the undo did not bring every
    /// answer back. The message says the node's state. Exit 4.
    Attention,
}

impl Verdict {
    /// The exit status that goes with it.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Proven => 0,
            Verdict::NotCompacted => 1,
            Verdict::Undone => 3,
            Verdict::Attention => 4,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Proven => "PROVEN",
            Verdict::NotCompacted => "NOT COMPACTED",
            Verdict::Undone => "UNDONE",
            Verdict::Attention => "ATTENTION",
        }
    }
}

/// One step of the routine.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// `preflight`, `measure`, `prepare`, `stop`, `verify`, `compact`, `start`, `measure_after`,
    /// `undo`, `start_after_undo`, `measure_after_undo`.
    pub name: &'static str,
    pub ok: bool,
    /// What happened, in one line.
    pub detail: String,
    pub seconds: f64,
}

/// Everything a maintenance did: `DATA_DIR/.kompactor/maintenance/<time>/report.json` and the
/// `kompactor maintain --json` document.
#[derive(Clone, Debug, Serialize)]
pub struct MaintainReport {
    pub format_version: u32,
    pub data_dir: String,
    pub hosts: Vec<String>,
    pub url: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub seconds: f64,
    pub verdict: Verdict,
    /// The verdict in one line, naming what differed or failed.
    pub message: String,
    /// The compaction's run, when it committed one.
    pub run_id: Option<String>,
    /// Whether that run was undone.
    pub undone: bool,
    /// Whether the server answered `/health` when the routine ended.
    pub server_running: bool,
    /// From the stop to `/health` answering again (the first start after the compaction).
    pub downtime_seconds: Option<f64>,
    pub steps: Vec<Step>,
    /// Each table, before against after the compaction.
    pub tables: Vec<TableComparison>,
    /// Each table, before the compaction against after its undo (when undone).
    pub tables_after_undo: Vec<TableComparison>,
    /// Where the measurements, the children's output and this report are kept.
    pub record_dir: String,
}

impl MaintainReport {
    /// The last line of the text output.
    pub fn verdict_line(&self) -> String {
        format!("VERDICT: {} ({})", self.verdict.word(), self.message)
    }
}

/// What was compared, in a few words: "3 tables equal: 1,234 rows, row count, min and max
/// time, 12 field counts and 9 sums".
pub fn compared_summary(tables: &[TableComparison]) -> String {
    let equal = tables
        .iter()
        .filter(|t| t.result == TableResult::Equal)
        .count();
    let rows: u64 = tables.iter().filter_map(|t| t.rows).sum();
    let fields: usize = tables.iter().map(|t| t.fields).sum();
    let sums: usize = tables.iter().map(|t| t.sums).sum();
    format!(
        "{equal} of {} table(s) equal: {rows} rows; row count, min and max time, {fields} field counts and {sums} sums",
        tables.len()
    )
}

/// The tables that differ or could not be compared, each with its first differences.
pub fn differing_summary(tables: &[TableComparison]) -> String {
    tables
        .iter()
        .filter(|t| t.result != TableResult::Equal)
        .map(|t| {
            let d: Vec<&str> = t.differences.iter().take(3).map(String::as_str).collect();
            format!("{}: {}", t.table, d.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
