//! `kompactor delete`: removes rows from a table, offline, exactly, verified and undoable.

use crate::commands::args::{DataDir, EngineArgs, Hosts, ServerArgs, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::durable::fsutil::{create_dir_all, Batch};
use crate::durable::interlock::refuse_if_in_use;
use crate::durable::journal::{Manifest, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::{Nanos, TableKey};
use crate::format::layout::check_hosts;
use crate::json;
use crate::pipeline::archive::Names;
use crate::pipeline::commit::{commit_nodes, Change, Committed};
use crate::pipeline::delete::{plan_table, DeleteWindow, Selection};
use crate::pipeline::discover::{discover_all, leave_to_exit, Finding, Node};
use crate::pipeline::merge::{merge_group, Engine, MergeRules, Merged};
use crate::units::{human_bytes, parse_instant};
use clap::Args;
use serde::Serialize;
use std::fmt::Write;
use std::process::ExitCode;

/// `kompactor delete`.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub data_dir: DataDir,

    #[command(flatten)]
    pub hosts: Hosts,

    /// The database, by name or id.
    #[arg(long, value_name = "DB")]
    pub database: String,

    /// The table, by name or id.
    #[arg(long, value_name = "TABLE")]
    pub table: String,

    /// Delete rows from this time on (inclusive): RFC 3339 or integer nanoseconds.
    #[arg(long, value_name = "TIME", value_parser = parse_instant, conflicts_with = "all_time")]
    pub min_time: Option<Nanos>,

    /// Delete rows before this time (exclusive): RFC 3339 or integer nanoseconds.
    #[arg(long, value_name = "TIME", value_parser = parse_instant, conflicts_with = "all_time")]
    pub max_time: Option<Nanos>,

    /// Delete at any time (a delete without a time bound must say so).
    #[arg(long)]
    pub all_time: bool,

    /// Only rows for which this SQL condition over the table's tags, fields and `time` holds
    /// (as DuckDB evaluates it): `host = 'a' AND region = 'eu'`, `region IS NULL`,
    /// `usage > 1e300`. A tag a row lacks is NULL.
    #[arg(long = "where", value_name = "PREDICATE")]
    pub predicate: Option<String>,

    /// Delete although WAL files newer than the newest snapshot exist: their rows are not in
    /// any Parquet file yet, so the delete cannot see them, and the server replays them.
    #[arg(long)]
    pub ignore_wal: bool,

    /// Print what would be deleted and change nothing under DATA_DIR.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the plan or the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub server_check: ServerCheck,
}

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

/// The time scope and predicate, or why they are refused.
fn selection(a: &DeleteArgs) -> Result<Selection> {
    if !a.all_time && a.min_time.is_none() && a.max_time.is_none() {
        return Err(Error::usage(
            "a delete needs a time scope: --min-time, --max-time, or --all-time",
        )
        .hint(
            "--all-time deletes at any time; it is required so that no table is wiped by mistake",
        ));
    }
    if let (Some(lo), Some(hi)) = (a.min_time, a.max_time) {
        if lo >= hi {
            return Err(Error::usage(format!(
                "--min-time {} is not before --max-time {}",
                lo.to_rfc3339(),
                hi.to_rfc3339()
            )));
        }
    }
    Ok(Selection {
        min_time: a.min_time,
        max_time: a.max_time,
        predicate: a.predicate.clone(),
    })
}

/// The table `db`.`table` of `node`, by name or id; the error lists what the node has.
fn resolve(node: &Node, names: &Names, db: &str, table: &str) -> Result<TableKey> {
    let keys: Vec<TableKey> = node
        .live
        .keys()
        .chain(node.hidden.keys())
        .copied()
        .collect();
    let found = keys.iter().copied().find(|k| {
        let (dn, tn) = names.of(node, *k);
        (dn == db || k.db.to_string() == db) && (tn == table || k.table.to_string() == table)
    });
    found.ok_or_else(|| {
        let mut have: Vec<String> = keys
            .iter()
            .map(|k| {
                let (d, t) = names.of(node, *k);
                format!("{d}.{t} ({}/{})", k.db, k.table)
            })
            .collect();
        have.dedup();
        Error::usage(format!(
            "node {} has no table `{table}` in database `{db}`",
            node.id
        ))
        .hint(format!("its tables: {}", have.join(", ")))
    })
}

/// `kompactor delete`.
pub fn run(a: &DeleteArgs, quiet: bool, verbose: bool) -> Result<ExitCode> {
    let sel = selection(a)?;
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    let names = Names::load(data_dir, None)?;
    let nodes = discover_all(data_dir, &a.hosts.hosts, a.server.load_window())?;
    let targets: Vec<TableKey> = nodes
        .iter()
        .map(|n| resolve(n, &names, &a.database, &a.table))
        .collect::<Result<_>>()?;
    for n in &nodes {
        let wal = wal_files_newer(n);
        if wal > 0 && !a.ignore_wal {
            return Err(Error::at(
                &n.dir,
                format!("{wal} WAL file(s) are newer than the newest snapshot: their rows are in no Parquet file, so the delete cannot see them, and the server would replay them"),
            )
            .hint("start the server, wait until its log says it persisted a snapshot, stop it, and run the delete again; or pass --ignore-wal"));
        }
    }
    let started = chrono::Utc::now();
    let run_id = new_run_id();
    // A dry run must not create a file under DATA_DIR: its DuckDB spills elsewhere.
    let scratch =
        tempfile::tempdir().map_err(|e| Error::new(format!("a scratch directory: {e}")))?;
    let dirs = RunDirs::new(data_dir, &run_id);
    let (spill, out_dir) = if a.dry_run {
        (scratch.path().join("spill"), scratch.path().join("out"))
    } else {
        (dirs.tmp().join("spill"), dirs.tmp().join("out"))
    };
    let engine = Engine::new(&a.engine.engine_options(spill.clone()))?;
    let mut report = DeleteReport {
        format_version: json::FORMAT_VERSION,
        run_id: (!a.dry_run).then(|| run_id.clone()),
        dry_run: a.dry_run,
        data_dir: data_dir.display().to_string(),
        started: started.to_rfc3339(),
        finished: String::new(),
        database: a.database.clone(),
        table: a.table.clone(),
        selection: sel.clone(),
        nodes: Vec::new(),
    };
    let mut merged_all: Vec<(usize, Vec<(crate::pipeline::plan::Group, Merged)>)> = Vec::new();
    if !a.dry_run {
        create_dir_all(&spill)?;
        create_dir_all(&out_dir)?;
    }
    let mut merging = false;
    for (i, (n, key)) in nodes.iter().zip(&targets).enumerate() {
        let plan = plan_table(engine.conn(), data_dir, n, *key, &sel, &run_id)?;
        let mut merged = Vec::new();
        if !a.dry_run && !plan.groups.is_empty() {
            // Before the first merge of any node, so that recovery clears its scratch after a
            // crash.
            if !merging {
                dirs.set_state(RunState::Merging)?;
                merging = true;
            }
            let rules = MergeRules {
                max_rows: u64::MAX,
                keep_duplicates: false,
                drop_keys: true,
            };
            for g in plan.groups {
                let m = merge_group(&engine, data_dir, &g, &out_dir, rules).map_err(|e| {
                    if let Err(r) = crate::durable::apply::recover(data_dir, false) {
                        log::error!("rolling the failed delete back failed too: {r}");
                    }
                    Error::new(format!(
                        "node {} table {} window {}: {e}",
                        n.id,
                        n.table_label(*key),
                        g.window_start.to_rfc3339()
                    ))
                    .hint("nothing was changed")
                })?;
                merged.push((g, m));
            }
        }
        report.nodes.push(NodeDelete {
            node: n.id.clone(),
            table: *key,
            label: label(n, &names, *key),
            wal_files_newer: wal_files_newer(n),
            rows_deleted: plan.windows.iter().map(|w| w.rows_deleted).sum(),
            versions_removed: plan.windows.iter().map(|w| w.versions_removed).sum(),
            files_rewritten: plan.windows.iter().map(|w| w.files).sum(),
            files_written: merged.iter().map(|(_, m)| m.outputs.len()).sum(),
            windows: plan.windows,
            committed: None,
        });
        merged_all.push((i, merged));
    }
    drop(engine);
    let any = merged_all.iter().any(|(_, m)| !m.is_empty());
    if !a.dry_run && any {
        if let Err(e) = commit(a, &dirs, &nodes, &merged_all, &mut report) {
            // Rolled back now (or finished, past its commit point) rather than at the next run.
            if let Err(r) = crate::durable::apply::recover(data_dir, false) {
                log::error!("rolling the failed delete back failed too: {r}");
            }
            return Err(e);
        }
    }
    report.finished = chrono::Utc::now().to_rfc3339();
    if !a.dry_run && any {
        dirs.write_run_file("report.json", json::to_string(&report).as_bytes(), None)?;
    }
    if a.json {
        json::print(&report);
    } else if !quiet {
        print!("{}", text(&report, verbose));
    }
    leave_to_exit(nodes);
    Ok(ExitCode::from(EXIT_OK))
}

/// Makes the outputs durable, stages each node's new metadata and commits.
fn commit(
    a: &DeleteArgs,
    dirs: &RunDirs,
    nodes: &[Node],
    merged: &[(usize, Vec<(crate::pipeline::plan::Group, Merged)>)],
    report: &mut DeleteReport,
) -> Result<()> {
    let data_dir = a.data_dir.path();
    let mut outputs = Batch::default();
    for (_, m) in merged {
        for o in m.iter().flat_map(|(_, m)| &m.outputs) {
            outputs.adopt(&o.tmp_path);
        }
    }
    outputs.finish()?;
    refuse_if_in_use(data_dir, a.server_check.allow_running_server)?;
    let changes: Vec<(usize, Vec<Change>)> = merged
        .iter()
        .map(|(i, m)| {
            let changes = m.iter().map(|(g, m)| Change {
                table: g.table,
                removes: &g.inputs,
                adds: &m.outputs,
                in_place: true,
            });
            (*i, changes.collect())
        })
        .collect();
    for (i, c) in commit_nodes(nodes, &changes, dirs, Manifest::default())? {
        report.nodes[i].committed = Some(c);
    }
    Ok(())
}

/// `db.table` by name, or `db_id/table_id` when the node does not name them.
fn label(n: &Node, names: &Names, key: TableKey) -> String {
    let (db, table) = names.of(n, key);
    if (db.as_str(), table.as_str())
        == (key.db.to_string().as_str(), key.table.to_string().as_str())
    {
        format!("{}/{}", key.db, key.table)
    } else {
        format!("{db}.{table}")
    }
}

/// How many WAL files are newer than the node's newest snapshot.
fn wal_files_newer(n: &Node) -> usize {
    n.findings
        .iter()
        .map(|f| match f {
            Finding::WalTail { files, .. } => files.len(),
            _ => 0,
        })
        .sum()
}

/// The report as text: per node the totals and the windows (a few, or all with `verbose`).
fn text(r: &DeleteReport, verbose: bool) -> String {
    let mut s = String::new();
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
    let _ = writeln!(
        s,
        "kompactor delete{} of {}.{} {scope}{what}",
        if r.dry_run {
            " dry run (nothing is changed)"
        } else {
            ""
        },
        r.database,
        r.table
    );
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
        let shown = if verbose { n.windows.len() } else { 10 };
        for w in n.windows.iter().take(shown) {
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
        if n.windows.len() > shown {
            let _ = writeln!(
                s,
                "  ... {} more window(s) (--verbose lists each)",
                n.windows.len() - shown
            );
        }
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
    s
}
