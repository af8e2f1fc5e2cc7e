//! The plan and the run report as text, one function a section.
//!
//! Every line is written with `writeln!` into a `String`, which cannot fail, so the results
//! are dropped.

use super::doc::{NodeReport, NodeRun, RunReport, TableRun};
use crate::pipeline::commit::Committed;
use crate::pipeline::discover::summarize;
use crate::pipeline::plan::{TablePlan, QUERY_FILE_LIMIT};
use crate::units::{human_bytes, human_duration};
use std::fmt::Write;

/// Where a table stands against the server's query file limit.
fn limit_label(files: usize) -> &'static str {
    if files > QUERY_FILE_LIMIT {
        "over"
    } else {
        "ok"
    }
}

/// The plan as text.
pub fn plan_text(nodes: &[NodeReport], header: &str, verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    for n in nodes {
        node_heading(&mut s, n);
        table_plans(&mut s, &n.tables);
        findings(&mut s, n, verbose);
        table_notes(&mut s, &n.tables);
        if verbose {
            windows(&mut s, &n.tables);
        }
    }
    s
}

/// The node's line: its generation and the metadata the server reads.
fn node_heading(s: &mut String, n: &NodeReport) {
    let _ = writeln!(
        s,
        "\nnode {}: generation {}, {} snapshot(s) ({}), {} checkpoint(s), table index {}, {} WAL file(s)",
        n.node,
        n.generation.label(),
        n.snapshots,
        if n.checkpoints_loaded > 0 {
            format!(
                "{} newer than the {} checkpoint(s) the server reads",
                n.loaded_snapshots, n.checkpoints_loaded
            )
        } else {
            format!("{} inside the server's load window", n.loaded_snapshots)
        },
        n.checkpoints,
        if n.table_index { "present" } else { "absent" },
        n.wal_files
    );
}

/// One row per table: its files now and after, and where it stands against the limit.
fn table_plans(s: &mut String, tables: &[TablePlan]) {
    let _ = writeln!(
        s,
        "  {:<24} {:>14} {:>10} {:>11} {:>8} {:>6} {:>8}  {QUERY_FILE_LIMIT}-file limit now→after",
        "table", "files now→after", "rows", "bytes", "windows", "merge", "skipped",
    );
    for t in tables {
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>10} {:>11} {:>8} {:>6} {:>8}  {}→{}",
            t.label,
            format!("{}→{}", t.files_now, t.files_after),
            t.rows,
            human_bytes(t.bytes),
            t.windows,
            t.groups.len(),
            t.skipped.len(),
            limit_label(t.files_now),
            limit_label(t.files_after)
        );
    }
}

/// The node's findings, summarized unless `verbose`.
fn findings(s: &mut String, n: &NodeReport, verbose: bool) {
    let lines = summarize(&n.findings, verbose);
    if !lines.is_empty() {
        let _ = writeln!(s, "  findings:");
        for l in lines {
            let _ = writeln!(s, "  - {l}");
        }
    }
}

/// Per table, its widths and writers, the hidden files it brings back, and why it stays over
/// the limit: each kind of note for every table before the next kind.
fn table_notes(s: &mut String, tables: &[TablePlan]) {
    for t in tables {
        if let Some(line) = tiers_line(t) {
            let _ = writeln!(s, "  {line}");
        }
    }
    for t in tables.iter().filter(|t| t.files_revived > 0) {
        let _ = writeln!(
            s,
            "  {}: {} hidden file(s), {} rows, {} .. {}, become visible again (--include-hidden)",
            t.label,
            t.files_revived,
            t.rows_revived,
            t.hidden_min_time.to_rfc3339(),
            t.hidden_max_time.to_rfc3339()
        );
    }
    for t in tables {
        if let Some(why) = &t.limit_after_reason {
            let _ = writeln!(
                s,
                "  {} stays over the {QUERY_FILE_LIMIT}-file limit: {why}",
                t.label
            );
        }
    }
}

/// Every window of every table: the merged ones with their input files, then the ones left
/// alone and why.
fn windows(s: &mut String, tables: &[TablePlan]) {
    for t in tables {
        for g in &t.groups {
            let _ = writeln!(
                s,
                "  {} window {} → {}: {} files, {} rows, {} → {}",
                t.label,
                g.window_start.to_rfc3339(),
                g.window_end.to_rfc3339(),
                g.inputs.len(),
                g.rows,
                human_bytes(g.bytes),
                g.output_path
            );
            for f in &g.inputs {
                let _ = writeln!(
                    s,
                    "      file {:>8} {:>8} rows {:>10}  {}",
                    f.entry.id,
                    f.entry.row_count,
                    human_bytes(f.entry.size_bytes),
                    f.entry.path
                );
            }
        }
        for k in &t.skipped {
            let _ = writeln!(
                s,
                "  {} window {}: {} files left alone: {}",
                t.label,
                k.window_start.to_rfc3339(),
                k.files,
                k.reason
            );
        }
    }
}

/// One line of how a table's files end up by width, and how far back its writers write.
fn tiers_line(t: &TablePlan) -> Option<String> {
    if t.tiers.is_empty() {
        return None;
    }
    let widths: Vec<String> = t
        .tiers
        .iter()
        .map(|u| format!("{} {}", u.files_after, u.width))
        .collect();
    let mut line = format!(
        "{}: files after by window width: {}",
        t.label,
        widths.join(", ")
    );
    let w = &t.writers;
    if w.late_files > 0 {
        let _ = write!(
            line,
            "; writers reached {} back in the last {} ({} late file(s){}), so the newest {} stay in 10m windows",
            human_duration(w.reach),
            human_duration(crate::pipeline::plan::reach::HORIZON),
            w.late_files,
            if w.across_chunks > 0 {
                format!(", {} beside a wider merge", w.across_chunks)
            } else {
                String::new()
            },
            human_duration(t.ten_minute_zone)
        );
    }
    Some(line)
}

/// The summary of a run as text.
pub fn run_text(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kompactor run {} on {} ({:.1} s: read and plan {:.1} s, merge {:.1} s, commit {:.1} s)",
        r.run_id, r.data_dir, r.seconds, r.phases.read_and_plan, r.phases.merge, r.phases.commit
    );
    for n in &r.nodes {
        match &n.committed {
            Some(c) => committed(&mut s, r, n, c),
            None => {
                let _ = writeln!(s, "\nnode {}: nothing to do", n.node);
            }
        }
        prepared(&mut s, n);
        table_runs(&mut s, &n.tables);
    }
    s
}

/// What the commit on a node replaced, and where the replaced files went.
fn committed(s: &mut String, r: &RunReport, n: &NodeRun, c: &Committed) {
    let _ = writeln!(
        s,
        "\nnode {}: committed snapshot {}: {} file(s) replaced by {}; {} snapshot(s) and {} checkpoint(s) rewritten{}",
        n.node,
        c.snapshot,
        c.files_replaced,
        c.files_added,
        c.snapshots_rewritten,
        c.checkpoints_written,
        if c.table_index_set_aside { "; table index set aside for the server to rebuild" } else { "" }
    );
    if c.files_replaced > 0 {
        let _ = writeln!(
            s,
            "  replaced files ({}) are in {}/.kompactor/trash/{}/",
            human_bytes(c.trash_bytes),
            r.data_dir,
            r.run_id
        );
    }
    if c.purged_entries_dropped > 0 {
        let _ = writeln!(
            s,
            "  dropped {} entr{} of files the server had purged; the rewritten metadata went from {} to {}",
            c.purged_entries_dropped,
            if c.purged_entries_dropped == 1 { "y" } else { "ies" },
            human_bytes(c.metadata_bytes_before),
            human_bytes(c.metadata_bytes_after)
        );
    }
}

/// How many of a node's windows came prepared, when any did.
fn prepared(s: &mut String, n: &NodeRun) {
    let prepared: usize = n.tables.iter().map(|t| t.outcome.windows_prepared).sum();
    if prepared > 0 {
        let merged: usize = n.tables.iter().map(|t| t.outcome.groups_merged).sum();
        let _ = writeln!(
            s,
            "  {prepared} window(s) came prepared, {} merged during this run",
            merged - prepared
        );
    }
}

/// One row per table the run merged in, failed in, or was blocked in, with its notes.
fn table_runs(s: &mut String, tables: &[TableRun]) {
    if tables
        .iter()
        .any(|t| t.outcome.groups_merged > 0 || !t.outcome.groups_failed.is_empty())
    {
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>20} {:>10} {:>22}",
            "table", "files", "rows in files", "dups", "bytes"
        );
    }
    for TableRun {
        table: label,
        outcome: o,
        ..
    } in tables
    {
        if o.groups_merged == 0
            && o.groups_failed.is_empty()
            && !o.windows_skipped.iter().any(|k| k.blocked)
        {
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>20} {:>10} {:>22}",
            label,
            format!("{}→{}", o.files_before, o.files_after),
            format!("{}→{}", o.rows_in_files_before, o.rows_in_files_after),
            o.duplicates_removed,
            format!(
                "{}→{}",
                human_bytes(o.bytes_before),
                human_bytes(o.bytes_after)
            )
        );
        if o.cross_chunk_points > 0 {
            let _ = writeln!(
                s,
                "    {} point(s) stored under two chunk_times (overwrites after an earlier wide merge) in {} window(s): now one row each, the later write first",
                o.cross_chunk_points,
                o.cross_chunk_windows.len()
            );
        }
        for f in &o.groups_failed {
            let _ = writeln!(
                s,
                "    skipped window {} ({} files): {}",
                f.window_start, f.inputs, f.reason
            );
        }
    }
}
