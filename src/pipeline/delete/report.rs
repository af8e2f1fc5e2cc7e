//! What a delete did, as the `kompactor delete --json` document and the run's `report.json`
//! (fields in `docs/json.md`), and as text.

use super::{DeleteWindow, Selection};
use crate::format::ids::{Nanos, TableKey};
use crate::pipeline::commit::Committed;
use crate::units::human_bytes;
use serde::Serialize;
use std::fmt::Write;

/// What a delete did (or, dry, would do) on one node.
#[derive(Debug, Serialize)]
pub struct NodeDelete {
    pub node: String,
    pub table: TableKey,
    /// `db.table` as the node names them.
    pub label: String,
    /// WAL files newer than the newest snapshot: rows the delete could not see.
    pub wal_files_newer: usize,
    pub windows: Vec<DeleteWindow>,
    pub rows_deleted: u64,
    pub versions_removed: u64,
    pub files_rewritten: usize,
    /// The files written in place of the rewritten ones (none where nothing stayed).
    pub files_written: usize,
    pub committed: Option<Committed>,
}

/// The `kompactor delete --json` document, and the run's `report.json`.
#[derive(Debug, Serialize)]
pub struct DeleteReport {
    pub format_version: u32,
    /// `null` for a dry run.
    pub run_id: Option<String>,
    pub dry_run: bool,
    pub data_dir: String,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    pub database: String,
    pub table: String,
    pub selection: Selection,
    pub nodes: Vec<NodeDelete>,
}

/// Windows listed per node without `verbose`.
const WINDOWS_SHOWN: usize = 10;

/// The report as text: per node the totals and the windows (a few, or all with `verbose`).
pub(crate) fn report_text(r: &DeleteReport, verbose: bool) -> String {
    // Writing to a String cannot fail.
    let mut s = String::new();
    let _ = writeln!(s, "{}", heading(r));
    for n in &r.nodes {
        let _ = writeln!(
            s,
            "\nnode {}: {}: {} row(s) {} ({} stored version(s)), {} file(s) in {} window(s) {}",
            n.node,
            n.label,
            n.rows_deleted,
            if r.dry_run { "match" } else { "deleted" },
            n.versions_removed,
            n.files_rewritten,
            n.windows.len(),
            if r.dry_run {
                "would be rewritten"
            } else {
                "rewritten"
            }
        );
        windows(&mut s, &n.windows, verbose);
        node_notes(&mut s, r, n);
    }
    s
}

/// The first line: what is deleted from which table, and whether only as a dry run.
fn heading(r: &DeleteReport) -> String {
    let scope = match (r.selection.min_time, r.selection.max_time) {
        (None, None) => "at any time".to_string(),
        (lo, hi) => format!(
            "from {} to {}",
            lo.map_or("the beginning".into(), Nanos::to_rfc3339),
            hi.map_or("the end".into(), Nanos::to_rfc3339)
        ),
    };
    let what = r
        .selection
        .predicate
        .as_deref()
        .map_or(String::new(), |p| format!(" where {p}"));
    format!(
        "kompactor delete{} of {}.{} {scope}{what}",
        if r.dry_run {
            " dry run (nothing is changed)"
        } else {
            ""
        },
        r.database,
        r.table
    )
}

/// A line per window, the first few unless `verbose`, and how many more there are.
fn windows(s: &mut String, windows: &[DeleteWindow], verbose: bool) {
    let shown = if verbose {
        windows.len()
    } else {
        WINDOWS_SHOWN
    };
    for w in windows.iter().take(shown) {
        let _ = writeln!(
            s,
            "  window {}: {} file(s), {} row(s) deleted, {} kept, {}, {} .. {}",
            w.window_start.to_rfc3339(),
            w.files,
            w.rows_deleted,
            w.rows_kept,
            human_bytes(w.bytes),
            w.min_time.to_rfc3339(),
            w.max_time.to_rfc3339()
        );
    }
    if windows.len() > shown {
        let _ = writeln!(
            s,
            "  ... {} more window(s) (--verbose lists each)",
            windows.len() - shown
        );
    }
}

/// The WAL files the delete could not see, and where the commit left the replaced files.
fn node_notes(s: &mut String, r: &DeleteReport, n: &NodeDelete) {
    if n.wal_files_newer > 0 {
        let _ = writeln!(
            s,
            "  {} WAL file(s) newer than the newest snapshot were not seen (--ignore-wal): the server replays them",
            n.wal_files_newer
        );
    }
    if let Some(c) = &n.committed {
        let _ = writeln!(
            s,
            "  committed snapshot {}; the files replaced are in {}/.kompactor/trash/{}/ (kompactor undo brings them back)",
            c.snapshot,
            r.data_dir,
            r.run_id.as_deref().unwrap_or("")
        );
    }
}
