//! Read-only looks at a data dir: `status` (what is there) and `verify` (is it consistent).

use crate::commands::InspectArgs;
use crate::pipeline::discover::{check_hosts, discover_node, Finding, Node, STATE_DIR};
use crate::error::Result;
use crate::durable::journal::{dir_size, run_ids, RunDirs, RunState};
use crate::format::parquet::read_footer;
use crate::pipeline::plan::QUERY_FILE_LIMIT;
use crate::commands::compact::{EXIT_INCONSISTENT, EXIT_OK};
use crate::format::ids::{FileId, Nanos, SnapshotSeq, TableKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

#[derive(Serialize)]
struct TableStatus {
    table: String,
    db_id: u64,
    table_id: u64,
    files: usize,
    rows_in_files: u64,
    bytes: u64,
    min_time: String,
    max_time: String,
    /// Files a query over the whole table scans, against the server's default limit.
    full_table_query_files: usize,
    over_query_file_limit: bool,
    /// Entries of files the server removed (retention, hard delete) that the metadata still
    /// lists; not counted in `files`. The next compaction drops them.
    purged_entries: usize,
    /// Time range of the purged entries' data (empty strings when there are none).
    purged_min_time: String,
    purged_max_time: String,
    /// Live files missing on disk that nothing marks as removed: damage.
    lost_files: usize,
    /// The oldest data time among the live files that are on disk.
    oldest_time_on_disk: String,
}

#[derive(Serialize)]
struct NodeStatus {
    node: String,
    generation: String,
    snapshots: usize,
    checkpoints: usize,
    /// Snapshots whose files the server does not load (outside its default load window).
    snapshots_outside_load_window: Vec<SnapshotSeq>,
    tables: Vec<TableStatus>,
    findings: Vec<Finding>,
}

/// Runs that have not finished, with their state.
fn unfinished_runs(data_dir: &Path) -> Result<Vec<(String, RunState)>> {
    let mut out = Vec::new();
    for id in run_ids(data_dir)? {
        let st = RunDirs::new(data_dir, &id).read_state()?.state;
        if !matches!(st, RunState::Done | RunState::RolledBack | RunState::Undone) {
            out.push((id, st));
        }
    }
    Ok(out)
}

fn node_status(n: &Node) -> NodeStatus {
    let lost: BTreeSet<FileId> = n
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::Missing { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let keys: BTreeSet<TableKey> = n.live.keys().chain(n.purged.keys()).copied().collect();
    let tables = keys
        .into_iter()
        .map(|k| {
            let files = n.live.get(&k).map_or(&[][..], Vec::as_slice);
            let min = files
                .iter()
                .map(|f| f.entry.min_time)
                .min()
                .unwrap_or(Nanos::MAX);
            let max = files
                .iter()
                .map(|f| f.entry.max_time)
                .max()
                .unwrap_or(Nanos::MIN);
            let on_disk_min = files
                .iter()
                .filter(|f| !lost.contains(&f.entry.id))
                .map(|f| f.entry.min_time)
                .min();
            let purged = n.purged.get(&k);
            let (pmin, pmax) = purged.map_or((Nanos::MAX, Nanos::MIN), |p| p.time_range());
            let time = |t: Nanos, none: bool| if none { String::new() } else { t.to_rfc3339() };
            TableStatus {
                table: n.table_label(k),
                db_id: k.db.0,
                table_id: k.table.0,
                files: files.len(),
                rows_in_files: files.iter().map(|f| f.entry.row_count).sum(),
                bytes: files.iter().map(|f| f.entry.size_bytes).sum(),
                min_time: time(min, files.is_empty()),
                max_time: time(max, files.is_empty()),
                full_table_query_files: files.len(),
                over_query_file_limit: files.len() > QUERY_FILE_LIMIT,
                purged_entries: purged.map_or(0, |p| p.entries.len()),
                purged_min_time: time(pmin, purged.is_none()),
                purged_max_time: time(pmax, purged.is_none()),
                lost_files: files.iter().filter(|f| lost.contains(&f.entry.id)).count(),
                oldest_time_on_disk: on_disk_min.map_or(String::new(), Nanos::to_rfc3339),
            }
        })
        .collect();
    NodeStatus {
        node: n.id.clone(),
        generation: n.generation.label().to_string(),
        snapshots: n.snapshots.len(),
        checkpoints: n.checkpoints.len(),
        snapshots_outside_load_window: n
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::OutsideLoadWindow { snapshot, .. } => Some(*snapshot),
                _ => None,
            })
            .collect(),
        tables,
        findings: n.findings.clone(),
    }
}

/// `kompactor status`.
pub fn status(a: &InspectArgs) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut nodes = Vec::new();
    for h in &a.hosts.hosts {
        nodes.push(node_status(&discover_node(data_dir, h)?));
    }
    let unfinished = unfinished_runs(data_dir)?;
    let trash = data_dir.join(STATE_DIR).join("trash");
    let trash_bytes = if trash.is_dir() { dir_size(&trash) } else { 0 };
    if a.json {
        let doc = serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "query_file_limit": QUERY_FILE_LIMIT,
            "nodes": nodes,
            "unfinished_runs": unfinished.iter().map(|(id, st)| serde_json::json!({"run_id": id, "state": st})).collect::<Vec<_>>(),
            "trash_bytes": trash_bytes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("status serialises")
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    let mut s = String::new();
    let _ = writeln!(s, "kompactor status of {}", data_dir.display());
    for n in &nodes {
        let _ = writeln!(
            s,
            "\nnode {}: generation {}, {} snapshot(s), {} checkpoint(s)",
            n.node, n.generation, n.snapshots, n.checkpoints
        );
        let _ = writeln!(
            s,
            "  {:<20} {:>7} {:>12} {:>12}  {:<30}  full-table query",
            "table", "files", "rows", "bytes", "time range"
        );
        for t in &n.tables {
            let _ = writeln!(
                s,
                "  {:<20} {:>7} {:>12} {:>12}  {} .. {}  {} files: {}",
                t.table,
                t.files,
                t.rows_in_files,
                t.bytes,
                t.min_time,
                t.max_time,
                t.full_table_query_files,
                if t.over_query_file_limit {
                    format!("FAILS (limit {QUERY_FILE_LIMIT})")
                } else {
                    "ok".into()
                }
            );
            if t.purged_entries > 0 || t.lost_files > 0 {
                let _ = writeln!(
                    s,
                    "  {:<20} purged entries still listed: {} ({} .. {}); lost files: {}; oldest data on disk: {}",
                    "",
                    t.purged_entries,
                    t.purged_min_time,
                    t.purged_max_time,
                    t.lost_files,
                    if t.oldest_time_on_disk.is_empty() { "none" } else { &t.oldest_time_on_disk }
                );
            }
        }
        if !n.snapshots_outside_load_window.is_empty() {
            let _ = writeln!(
                s,
                "  {} snapshot(s) are outside the server's default load window: their files are invisible to queries",
                n.snapshots_outside_load_window.len()
            );
        }
        for f in &n.findings {
            if !matches!(
                f,
                Finding::Unreferenced { .. }
                    | Finding::OutsideLoadWindow { .. }
                    | Finding::Purged { .. }
            ) {
                let _ = writeln!(s, "  - {}", f.describe());
            }
        }
    }
    for (id, st) in &unfinished {
        let _ = writeln!(s, "\nunfinished run {id} ({st:?}): the next kompactor run on this data dir finishes or rolls it back");
    }
    let _ = writeln!(s, "\ntrash: {trash_bytes} bytes in {}", trash.display());
    print!("{s}");
    Ok(ExitCode::from(EXIT_OK))
}

/// The problems `verify` finds on one node.
pub fn problems(data_dir: &Path, n: &Node) -> Result<Vec<String>> {
    let mut out: Vec<String> = n
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f,
                Finding::Missing { .. }
                    | Finding::SizeMismatch { .. }
                    | Finding::DuplicateId { .. }
                    | Finding::StraySnapshotEntry { .. }
            )
        })
        .map(|f| f.describe())
        .collect();
    // Row counts, from the footers of the files that exist with the right size.
    let bad: BTreeSet<FileId> = n.findings.iter().filter_map(|f| f.blocks_file()).collect();
    let files: Vec<_> = n
        .live
        .values()
        .flatten()
        .filter(|f| !bad.contains(&f.entry.id))
        .collect();
    for f in files {
        match read_footer(&data_dir.join(&f.entry.path)) {
            Ok(ft) if ft.num_rows != f.entry.row_count => out.push(format!(
                "file {} holds {} rows but the metadata records {}: {}",
                f.entry.id, ft.num_rows, f.entry.row_count, f.entry.path
            )),
            Ok(_) => {}
            Err(e) => out.push(e.to_string()),
        }
    }
    let mut ids = BTreeMap::new();
    for f in n.live.values().flatten() {
        if let Some(other) = ids.insert(f.entry.id, &f.entry.path) {
            out.push(format!(
                "file id {} is live twice: {other} and {}",
                f.entry.id, f.entry.path
            ));
        }
    }
    if let Some(newest) = n.newest_snapshot() {
        let next = newest.doc.value.next_file_id;
        if let Some(max) = n.next_free_file_id().0.checked_sub(1) {
            if next.0 <= max {
                out.push(format!(
                    "the newest snapshot's next_file_id {next} is not above every file id (highest {max}): the server would reuse ids"
                ));
            }
        }
    }
    // Checkpoints must describe the same files as the snapshots they stand for.
    if !n.checkpoints.is_empty() {
        let mut from_snapshots: BTreeSet<FileId> = BTreeSet::new();
        for s in &n.snapshots {
            for (_, _, f) in s.doc.value.databases.iter() {
                from_snapshots.insert(f.id);
            }
        }
        for s in &n.snapshots {
            for (_, _, f) in s.doc.value.removed_files.iter().flat_map(|r| r.iter()) {
                from_snapshots.remove(&f.id);
            }
        }
        for f in n.purged.values().flat_map(|t| &t.entries) {
            from_snapshots.remove(&f.id);
        }
        let live: BTreeSet<FileId> = n.live.values().flatten().map(|f| f.entry.id).collect();
        let only_cp: Vec<_> = live.difference(&from_snapshots).collect();
        let only_snap: Vec<_> = from_snapshots.difference(&live).collect();
        if !only_cp.is_empty() || !only_snap.is_empty() {
            out.push(format!(
                "checkpoints and snapshots disagree: {} live file(s) are listed by no snapshot (e.g. {:?}), {} file(s) of the snapshots are not live through the checkpoints (e.g. {:?})",
                only_cp.len(),
                only_cp.first(),
                only_snap.len(),
                only_snap.first()
            ));
        }
    }
    // The table index may only name files that exist.
    for p in &n.table_index_files {
        if p.to_string_lossy().ends_with("index.info.json") {
            if let Ok(doc) = crate::format::model::Doc::<crate::format::model::TableIndex>::parse(
                &std::fs::read(p).unwrap_or_default(),
            ) {
                for f in &doc.value.files {
                    if !data_dir.join(&f.path).exists() {
                        out.push(format!(
                            "table index {} lists file {} which does not exist: {}",
                            p.display(),
                            f.id,
                            f.path
                        ));
                    }
                }
            } else {
                out.push(format!(
                    "table index file {} is not valid JSON of the expected shape",
                    p.display()
                ));
            }
        }
    }
    Ok(out)
}

/// `kompactor verify`: exit 0 when consistent, 4 when not.
pub fn verify(a: &InspectArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let mut all: Vec<(String, Vec<String>)> = Vec::new();
    // Normal state worth knowing, that does not make the data dir inconsistent.
    let mut info: Vec<(String, Vec<String>)> = Vec::new();
    for h in &a.hosts.hosts {
        let n = discover_node(data_dir, h)?;
        all.push((h.clone(), problems(data_dir, &n)?));
        let purged = n.findings.iter().filter(|f| matches!(f, Finding::Purged { .. }));
        info.push((h.clone(), purged.map(Finding::describe).collect()));
    }
    let unfinished = unfinished_runs(data_dir)?;
    let total: usize = all.iter().map(|(_, p)| p.len()).sum::<usize>() + unfinished.len();
    if a.json {
        let doc = serde_json::json!({
            "consistent": total == 0,
            "nodes": all.iter().zip(&info).map(|((n, p), (_, i))| serde_json::json!({"node": n, "problems": p, "information": i})).collect::<Vec<_>>(),
            "unfinished_runs": unfinished.iter().map(|(id, st)| serde_json::json!({"run_id": id, "state": st})).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("verify serialises")
        );
    } else {
        for (node, ps) in &all {
            for p in ps {
                println!("node {node}: {p}");
            }
        }
        if !quiet {
            for (node, is) in &info {
                for i in is {
                    println!("node {node}: (information) {i}");
                }
            }
        }
        for (id, st) in &unfinished {
            println!("unfinished kompactor run {id} ({st:?}): run kompactor on this data dir to finish or roll it back");
        }
        if !quiet {
            if total == 0 {
                println!("consistent: {} node(s) checked", all.len());
            } else {
                println!("{total} problem(s) found");
            }
        }
    }
    Ok(ExitCode::from(if total == 0 {
        EXIT_OK
    } else {
        EXIT_INCONSISTENT
    }))
}
