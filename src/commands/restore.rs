//! `kompactor restore`: bring archived windows back into the nodes as new files.

use crate::commands::args::{Hosts, ServerCheck};
use crate::commands::{new_run_id, start, EXIT_OK};
use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{create_dir_all, fsync_dir, fsync_file};
use crate::durable::journal::{ArchiveSide, Manifest, Move, RunDirs, RunState};
use crate::error::{Error, Result};
use crate::format::ids::{Nanos, TableKey};
use crate::format::layout::{check_hosts, tmp_name, ParquetPath};
use crate::format::parquet::{read_footer, sql_str};
use crate::json;
use crate::pipeline::archive::{manifests, open_archive, Window, META};
use crate::pipeline::checksum::{checksum, Checksum};
use crate::pipeline::commit::{commit_nodes, Change};
use crate::pipeline::discover::discover_all;
use crate::pipeline::merge::Output;
use crate::pipeline::row_digest;
use crate::units::parse_time_or_age;
use clap::Args;
use serde::Serialize;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kompactor restore` arguments.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The archive directory written by `kompactor archive`.
    #[arg(value_name = "ARCHIVE_DIR")]
    pub archive_dir: PathBuf,
    /// The InfluxDB 3 data dir to restore into.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub hosts: Hosts,
    /// Restore only windows starting at or after this (RFC 3339 time, or a duration back from now).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub from: Option<Nanos>,
    /// Restore only windows ending at or before this.
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_time_or_age)]
    pub to: Option<Nanos>,
    /// Verify and list the windows that would come back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub server_check: ServerCheck,
    /// Print the windows restored (or that would be) as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One window in the `restore --json` document.
#[derive(Serialize)]
struct RestoredWindow {
    node: String,
    db: String,
    table: String,
    /// The UTC day, `YYYY-MM-DD`.
    date: String,
    rows: u64,
    /// How its archived files were checked against the manifest.
    verified_by: Verified,
}

/// How an archived window was found to be what its manifest records.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Verified {
    /// kompactor's own row digest ([`row_digest::ALGORITHM`]) matched.
    RowDigest,
    /// An archive from before the row digest: the DuckDB checksum it was made with matched
    /// (the same DuckDB is linked).
    DuckdbChecksum,
    /// An archive from before the row digest, whose DuckDB checksum this build's DuckDB
    /// computes otherwise: every row was read, and the row count and time range matched.
    RowsAndFullRead,
}

/// The `restore --json` document.
#[derive(Serialize)]
struct RestoreDoc {
    format_version: u32,
    dry_run: bool,
    /// The run, when one was made.
    run_id: Option<String>,
    archive_dir: String,
    windows: Vec<RestoredWindow>,
}

/// `kompactor restore`.
pub fn run(a: &RestoreArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.as_path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    open_archive(&a.archive_dir, false)?;
    let from = a.from.unwrap_or(Nanos::MIN);
    let to = a.to.unwrap_or(Nanos::MAX);
    let _lock = start(data_dir, a.dry_run, a.server_check.allow_running_server)?;
    let nodes = discover_all(data_dir, &a.hosts.hosts, None)?;

    // Windows still in the archive (not restored since), in the requested range. A restored
    // window's files have all left its partition; one with only some gone is damaged.
    let mut selected: Vec<Window> = Vec::new();
    for m in manifests(&a.archive_dir)? {
        for w in m.windows {
            if !a.hosts.hosts.contains(&w.node) || w.window_start < from || w.window_end > to {
                continue;
            }
            let present = w
                .files
                .iter()
                .filter(|f| a.archive_dir.join(&f.path).is_file())
                .count();
            if present == w.files.len() {
                selected.push(w);
            } else if present > 0 {
                let gone = w
                    .files
                    .iter()
                    .find(|f| !a.archive_dir.join(&f.path).is_file());
                return Err(Error::at(
                    &a.archive_dir,
                    format!(
                        "node {} {}.{} {}: {} of its {} archived file(s) are missing (e.g. {})",
                        w.node,
                        w.db,
                        w.table,
                        w.date,
                        w.files.len() - present,
                        w.files.len(),
                        gone.map_or("", |f| f.path.as_str())
                    ),
                )
                .hint("the archive was changed or damaged; restore the missing files from a backup, or restore other windows with --from/--to"));
            }
        }
    }
    if selected.is_empty() {
        return Err(Error::at(
            &a.archive_dir,
            "no archived window of these nodes lies in the requested range",
        ));
    }
    let conn = duckdb::Connection::open_in_memory()?;
    let mut verified: Vec<Verified> = Vec::new();
    for w in &selected {
        let node = nodes
            .iter()
            .find(|n| n.id == w.node)
            .expect("selected by host");
        let key = TableKey {
            db: w.db_id,
            table: w.table_id,
        };
        if let Some(live) = node.live.get(&key).and_then(|fs| {
            fs.iter()
                .find(|f| f.max_time >= w.window_start && f.min_time < w.window_end)
        }) {
            return Err(Error::new(format!(
                "node {} table {}.{} {}: the window is live in the node (file {}); restoring it would duplicate its rows",
                w.node, w.db, w.table, w.date, live.path
            ))
            .hint("restore only windows that were archived and not written again (--from/--to)"));
        }
        let paths: Vec<PathBuf> = w
            .files
            .iter()
            .map(|f| a.archive_dir.join(&f.path))
            .collect();
        verified.push(verify_window(&conn, w, &paths, &a.archive_dir)?);
    }
    let weak = verified
        .iter()
        .filter(|v| **v == Verified::RowsAndFullRead)
        .count();
    if weak > 0 {
        log::warn!(
            "{weak} window(s) archived before kompactor's own row digest were checked by row count, time range and a full read only: the DuckDB linked now hashes their rows otherwise than the one that archived them"
        );
    }
    let doc = |run_id: Option<String>| RestoreDoc {
        format_version: json::FORMAT_VERSION,
        dry_run: a.dry_run,
        run_id,
        archive_dir: a.archive_dir.display().to_string(),
        windows: selected
            .iter()
            .zip(&verified)
            .map(|(w, v)| RestoredWindow {
                node: w.node.clone(),
                db: w.db.clone(),
                table: w.table.clone(),
                date: w.date.clone(),
                rows: w.checksum.rows,
                verified_by: *v,
            })
            .collect(),
    };
    if a.dry_run {
        if a.json {
            json::print(&doc(None));
        } else if !quiet {
            println!(
                "kompactor restore dry run: {} window(s) would come back:",
                selected.len()
            );
            for w in &selected {
                println!(
                    "  node {} {}.{} {} ({} rows)",
                    w.node, w.db, w.table, w.date, w.checksum.rows
                );
            }
        }
        return Ok(ExitCode::from(EXIT_OK));
    }

    let run_id = new_run_id();
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    let out_dir = dirs.tmp().join("out");
    create_dir_all(&out_dir)?;
    let mut adds: Vec<(String, TableKey, Nanos, Vec<Output>)> = Vec::new();
    let mut restore_moves = Vec::new();
    for w in &selected {
        // Back beside the files it came from, in the naming the node uses.
        let table_dir = w
            .sources
            .first()
            .and_then(|s| ParquetPath::parse(&s.path))
            .map_or_else(
                || format!("{}/dbs/{}/{}", w.node, w.db_id, w.table_id),
                |p| p.table_dir.to_string(),
            );
        let mut outs = Vec::new();
        for (i, f) in w.files.iter().enumerate() {
            let src = a.archive_dir.join(&f.path);
            let suffix = if w.files.len() > 1 {
                format!("-{}", i + 1)
            } else {
                String::new()
            };
            let final_path = format!(
                "{table_dir}/{}/00-00/kompactor-restored-{run_id}{suffix}.parquet",
                w.date
            );
            let tmp_path = out_dir.join(tmp_name(&final_path));
            fs::copy(&src, &tmp_path)
                .map_err(|e| Error::io(&src, &format!("copy to {}", tmp_path.display()), e))?;
            fsync_file(&tmp_path)?;
            let size = fs::metadata(&tmp_path)
                .map_err(|e| Error::io(&tmp_path, "stat", e))?
                .len();
            if size != f.size_bytes {
                return Err(Error::at(&src, "the copy's size differs from the manifest"));
            }
            outs.push(Output {
                tmp_path,
                final_path,
                chunk_time: w.window_start,
                size_bytes: size,
                row_count: f.row_count,
                min_time: f.min_time,
                max_time: f.max_time,
            });
            // Renamed off *.parquet, so that a query over the archive no longer reads them.
            restore_moves.push(Move {
                from: f.path.clone(),
                to: format!("{META}/restored/{run_id}/{}.restored", f.path),
            });
        }
        adds.push((
            w.node.clone(),
            TableKey {
                db: w.db_id,
                table: w.table_id,
            },
            w.window_start,
            outs,
        ));
        failpoint("after-restore-window")?;
    }
    fsync_dir(&out_dir)?;
    let manifest = Manifest {
        format_version: crate::json::FORMAT_VERSION,
        nodes: Vec::new(),
        archive: Some(ArchiveSide {
            dir: a.archive_dir.display().to_string(),
            files: Vec::new(),
            manifest: String::new(),
            tmp: String::new(),
            undone: String::new(),
            restore_moves,
        }),
    };
    let changes: Vec<(usize, Vec<Change>)> = nodes
        .iter()
        .enumerate()
        .map(|(ni, node)| {
            let of_node = adds.iter().filter(|(n, ..)| *n == node.id);
            let changes = of_node.map(|(_, k, _, outs)| Change {
                table: *k,
                removes: &[],
                adds: outs,
                in_place: false,
            });
            (ni, changes.collect())
        })
        .collect();
    commit_nodes(&nodes, &changes, &dirs, manifest)?;
    if a.json {
        json::print(&doc(Some(run_id)));
    } else if !quiet {
        println!(
            "kompactor restore run {run_id}: {} window(s), {} rows back in the node(s); the archive's copies are in {}/{META}/restored/{run_id}/",
            selected.len(),
            selected.iter().map(|w| w.checksum.rows).sum::<u64>(),
            a.archive_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// Checks an archived window's files (`paths`) against its manifest entry before anything is
/// restored: by kompactor's own row digest where the manifest has one; else (archives written
/// before it) by the DuckDB checksum they were made with, which only the same DuckDB
/// reproduces, and failing that by row count and a full read of every row.
fn verify_window(
    conn: &duckdb::Connection,
    w: &Window,
    paths: &[PathBuf],
    archive_dir: &std::path::Path,
) -> Result<Verified> {
    let name = format!("node {} {}.{} {}", w.node, w.db, w.table, w.date);
    let damaged = |what: String| {
        Error::at(
            archive_dir,
            format!("the archived files of {name} do not match their manifest ({what})"),
        )
        .hint("the archive was changed or damaged; nothing was restored")
    };
    if let Some(want) = &w.digest {
        if want.algorithm != row_digest::ALGORITHM {
            return Err(Error::at(
                archive_dir,
                format!(
                    "{name}: the manifest's row digest is {}, which this build does not know",
                    want.algorithm
                ),
            )
            .hint("restore it with the kompactor release that wrote the archive, or a newer one"));
        }
        let got = row_digest::digest_files(conn, paths)?;
        if &got != want {
            return Err(damaged(format!(
                "rows {} vs {}, digest {} vs {}",
                got.rows, want.rows, got.sum, want.sum
            )));
        }
        return Ok(Verified::RowDigest);
    }
    let mut sum = Checksum::empty();
    for p in paths {
        let footer = read_footer(p)?;
        let source = format!("read_parquet({})", sql_str(&p.to_string_lossy()));
        sum = sum + checksum(conn, &footer.columns, &source)?;
    }
    if sum.rows != w.checksum.rows
        || sum.min_time != w.checksum.min_time
        || sum.max_time != w.checksum.max_time
    {
        return Err(damaged(format!(
            "rows {} vs {}, time {}..{} vs {}..{}",
            sum.rows,
            w.checksum.rows,
            sum.min_time,
            sum.max_time,
            w.checksum.min_time,
            w.checksum.max_time
        )));
    }
    // Every row was read to sum it: the files are whole, but only the checksum of the
    // DuckDB that made them says the values are the same.
    Ok(if sum.hash_sum == w.checksum.hash_sum {
        Verified::DuckdbChecksum
    } else {
        Verified::RowsAndFullRead
    })
}
