//! `kompactor archive`: move cold windows out of the nodes into a Parquet archive.
//!
//! Windows leave a node only after their archived files are verified and the archive's
//! manifest is durable, through the same journaled commit as compaction.

use crate::commands::args::{DataDir, EngineArgs, Hosts, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::durable::apply::recover;
use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{atomic_write, create_dir_all, Batch};
use crate::durable::journal::{ArchiveSide, Manifest, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::{LoadPos, Nanos};
use crate::format::layout::{check_hosts, date_of};
use crate::format::model::EntryRc;
use crate::json;
use crate::pipeline::archive::{
    marker, open_archive, partition_dir, tmp_rel, undone_rel, ArchiveManifest, ArchivedFile, Names,
    Source, Window, DAY, META,
};
use crate::pipeline::commit::{commit_nodes, Change};
use crate::pipeline::discover::{discover_all, LiveFile};
use crate::pipeline::merge::{merge_group, Engine, MergeRules};
use crate::pipeline::row_digest::digest_files;

/// An archived day is one file, whatever its rows; points repeated across chunk_times are
/// combined, as a compaction does.
const ARCHIVE_RULES: MergeRules = MergeRules {
    max_rows: u64::MAX,
    keep_duplicates: false,
    drop_keys: false,
};
use crate::pipeline::plan::{blocked_files, by_window, Group, Width};
use crate::units::parse_time_or_age;
use clap::Args;
use serde::Serialize;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kompactor archive` arguments.
#[derive(Args, Debug, Clone)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Archive the UTC days that end at or before this: an RFC 3339 time
    /// (`2026-01-01T00:00:00Z`) or a duration back from now (`90d`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub older_than: Nanos,
    /// The archive directory: new, empty, or an earlier kompactor archive.
    #[arg(long, value_name = "ARCHIVE_DIR")]
    pub to: PathBuf,
    /// Database and table names for the archive's paths, as `kompactor maintain` records
    /// them (default: DATA_DIR/.kompactor/names.json if present; else names from the Parquet
    /// paths of releases up to 3.5, else ids).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// List the windows that would move; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the windows moved (or that would move) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub server_check: ServerCheck,
}

/// One window in the `archive --json` document.
#[derive(Serialize)]
struct ArchiveWindow {
    /// The archive partition, `node=/db=/table=/date=`.
    partition: String,
    /// The node files it is made from.
    node_files: usize,
    /// Rows in those files, duplicates included.
    rows: u64,
}

/// The `archive --json` document.
#[derive(Serialize)]
struct ArchiveDoc {
    format_version: u32,
    dry_run: bool,
    /// The run, when one was made.
    run_id: Option<String>,
    archive_dir: String,
    /// The start of the first UTC day left in the nodes.
    cutoff: String,
    windows: Vec<ArchiveWindow>,
}

/// `kompactor archive`.
pub fn run(a: &ArchiveArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let cutoff = a.older_than.floor_to(DAY);
    let names = Names::load(data_dir, a.names.as_deref())?;
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    if !marker(&a.to).is_file() {
        let empty = !a.to.exists()
            || fs::read_dir(&a.to)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::at(&a.to, "this directory is not empty and is not a kompactor archive (no _kompactor/ARCHIVE.json)")
                .hint("give an empty or new directory, or one kompactor archived to before"));
        }
    }
    let run_id = new_run_id();
    let nodes = discover_all(data_dir, &a.hosts.hosts, None)?;

    // The windows to archive: every live file whose UTC day ends at or before the cutoff day.
    let mut groups: Vec<(usize, Group, (String, String))> = Vec::new();
    for (ni, node) in nodes.iter().enumerate() {
        let blocked = blocked_files(node);
        for (key, files) in &node.live {
            let days = by_window(files.iter().filter(|f| f.chunk_time < cutoff), DAY);
            for (start, inputs) in days {
                if let Some(f) = inputs.iter().find(|f| f.max_time >= cutoff) {
                    return Err(Error::new(format!(
                        "node {} table {}: file {} holds data after the cutoff day ({}); pick a cutoff after {}",
                        node.id, node.table_label(*key), f.path, cutoff.to_rfc3339(), f.max_time.to_rfc3339()
                    )));
                }
                if let Some(why) = inputs.iter().find_map(|f| blocked.get(&f.id)) {
                    return Err(Error::new(format!(
                        "node {} table {}: cannot archive {}: {why}",
                        node.id,
                        node.table_label(*key),
                        date_of(start)
                    )));
                }
                let (db, table) = names.of(node, *key);
                let dir = partition_dir(&node.id, &db, &table, start);
                let rows = inputs.iter().map(|f| f.row_count).sum();
                let bytes = inputs.iter().map(|f| f.size_bytes).sum();
                groups.push((
                    ni,
                    Group {
                        node: node.id.clone(),
                        table: *key,
                        window_start: start,
                        window_end: Nanos(start.0 + DAY.0),
                        width: Width::Fixed(DAY),
                        joined: false,
                        inputs: inputs
                            .into_iter()
                            .map(|f| LiveFile {
                                table: *key,
                                entry: EntryRc::clone(f),
                                load_pos: node
                                    .load_pos
                                    .get(f.id)
                                    .copied()
                                    .unwrap_or(LoadPos(u32::MAX)),
                            })
                            .collect(),
                        rows,
                        bytes,
                        output_path: format!("{dir}/kompactor-{run_id}.parquet"),
                        outputs_estimate: 1,
                        revived: 0,
                        rows_revived: 0,
                        bytes_revived: 0,
                    },
                    (db, table),
                ));
            }
        }
    }
    if groups.is_empty() {
        return Err(Error::new(format!(
            "the cutoff {} selects nothing: no live file of {} lies entirely before that day",
            cutoff.to_rfc3339(),
            a.hosts.hosts.join(", ")
        ))
        .hint("give an earlier --older-than, or check the nodes with `kompactor status`"));
    }
    let partition = |g: &Group| {
        g.output_path
            .rsplit_once('/')
            .map_or("", |x| x.0)
            .to_string()
    };
    let summary = |run_id: Option<String>| ArchiveDoc {
        format_version: json::FORMAT_VERSION,
        dry_run: a.dry_run,
        run_id,
        archive_dir: a.to.display().to_string(),
        cutoff: cutoff.to_rfc3339(),
        windows: groups
            .iter()
            .map(|(_, g, _)| ArchiveWindow {
                partition: partition(g),
                node_files: g.inputs.len(),
                rows: g.rows,
            })
            .collect(),
    };
    if a.dry_run {
        if a.json {
            json::print(&summary(None));
        } else if !quiet {
            println!(
                "kompactor archive dry run: {} window(s) before {} would move to {}",
                groups.len(),
                cutoff.to_rfc3339(),
                a.to.display()
            );
            for (_, g, _) in &groups {
                println!(
                    "  {} ({} files, {} rows)",
                    partition(g),
                    g.inputs.len(),
                    g.rows
                );
            }
        }
        return Ok(ExitCode::from(EXIT_OK));
    }

    open_archive(&a.to, true)?;
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    let archive_tmp = a.to.join(tmp_rel(&run_id));
    create_dir_all(&archive_tmp)?;
    let spill = dirs.tmp().join("spill");
    create_dir_all(&spill)?;
    let engine = Engine::new(&a.engine.engine_options(spill))?;
    // For the archive's own digest of what it holds, apart from the merges' engine.
    let conn = duckdb::Connection::open_in_memory()?;
    let manifest_rel = format!("{META}/manifests/{run_id}.json");
    // Recorded before the first archived file is written, so that recovery knows every file
    // this run may leave in the archive (a rolled-back run removes them).
    let planned: Vec<String> = groups
        .iter()
        .map(|(_, g, _)| g.output_path.clone())
        .collect();
    let side = ArchiveSide {
        dir: a.to.display().to_string(),
        tmp: tmp_rel(&run_id),
        undone: undone_rel(&run_id),
        files: planned,
        manifest: manifest_rel.clone(),
        restore_moves: Vec::new(),
    };
    let manifest = Manifest {
        format_version: crate::json::FORMAT_VERSION,
        nodes: Vec::new(),
        archive: Some(side),
    };
    dirs.write_manifest(&manifest)?;
    let mut windows = Vec::new();
    let mut merged = Vec::new();
    // The archived files are durable (contents and directories) before the manifest names
    // them; merge_group leaves its outputs unsynced.
    let mut placed = Batch::default();
    for (ni, g, (db, table)) in &groups {
        let m = match merge_group(&engine, data_dir, g, &archive_tmp, ARCHIVE_RULES) {
            Ok(m) => m,
            Err(e) => {
                recover(data_dir, false)?;
                return Err(e);
            }
        };
        let digest = digest_files(
            &conn,
            &m.outputs
                .iter()
                .map(|o| o.tmp_path.clone())
                .collect::<Vec<_>>(),
        );
        let digest = match digest {
            Ok(d) => d,
            Err(e) => {
                recover(data_dir, false)?;
                return Err(e);
            }
        };
        let mut files = Vec::new();
        for o in &m.outputs {
            let dest = a.to.join(&o.final_path);
            placed.rename(&o.tmp_path, &dest)?;
            placed.adopt(&dest);
            files.push(ArchivedFile {
                path: o.final_path.clone(),
                size_bytes: o.size_bytes,
                row_count: o.row_count,
                min_time: o.min_time,
                max_time: o.max_time,
            });
        }
        windows.push(Window {
            node: g.node.clone(),
            db_id: g.table.db,
            table_id: g.table.table,
            db: db.clone(),
            table: table.clone(),
            date: date_of(g.window_start),
            window_start: g.window_start,
            window_end: g.window_end,
            files,
            checksum: m.checksum,
            digest: Some(digest),
            sources: g
                .inputs
                .iter()
                .map(|f| Source {
                    id: f.entry.id,
                    path: f.entry.path.to_string(),
                    size_bytes: f.entry.size_bytes,
                    row_count: f.entry.row_count,
                })
                .collect(),
        });
        merged.push((*ni, g));
        failpoint("after-archive-window")?;
    }
    placed.finish()?;
    drop(engine);
    // The archive's manifest is durable before any node changes.
    let doc = ArchiveManifest {
        format_version: json::FORMAT_VERSION,
        run_id: run_id.clone(),
        created: chrono::Utc::now().to_rfc3339(),
        data_dir: data_dir.display().to_string(),
        windows,
    };
    atomic_write(
        &a.to.join(&manifest_rel),
        json::to_string(&doc).as_bytes(),
        &archive_tmp,
        None,
    )?;
    failpoint("after-archive-manifest")?;
    let changes: Vec<(usize, Vec<Change>)> = (0..nodes.len())
        .map(|ni| {
            let of_node = merged.iter().filter(|(i, _)| *i == ni);
            let changes = of_node.map(|(_, g)| Change {
                table: g.table,
                removes: &g.inputs,
                adds: &[],
                in_place: false,
            });
            (ni, changes.collect())
        })
        .collect();
    commit_nodes(&nodes, &changes, &dirs, manifest)?;
    let _ = fs::remove_dir_all(&archive_tmp);
    let rows: u64 = doc.windows.iter().map(|w| w.checksum.rows).sum();
    if a.json {
        json::print(&summary(Some(run_id.clone())));
    } else if !quiet {
        println!(
            "kompactor archive run {run_id}: {} window(s), {rows} rows, moved to {}; their {} node file(s) are in {}/.kompactor/trash/{run_id}/",
            doc.windows.len(),
            a.to.display(),
            doc.windows.iter().map(|w| w.sources.len()).sum::<usize>(),
            data_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}
