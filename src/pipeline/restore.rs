//! Restoring archived windows: which come back, checking them against their manifests, and
//! staging them as new files of their nodes.

use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{fsync_dir, fsync_file};
use crate::durable::journal::{ArchiveSide, Manifest, Move, RunDirs};
use crate::error::{Error, Result};
use crate::format::ids::{Nanos, TableKey};
use crate::format::layout::{tmp_name, ParquetPath};
use crate::format::parquet::{read_footer, sql_str};
use crate::pipeline::archive::{manifests, Window, META};
use crate::pipeline::checksum::{checksum, Checksum};
use crate::pipeline::commit::{commit_nodes, Change};
use crate::pipeline::discover::Node;
use crate::pipeline::merge::Output;
use crate::pipeline::row_digest;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// How an archived window was found to be what its manifest records.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verified {
    /// kompactor's own row digest ([`row_digest::ALGORITHM`]) matched.
    RowDigest,
    /// An archive from before the row digest: the DuckDB checksum it was made with matched
    /// (the same DuckDB is linked).
    DuckdbChecksum,
    /// An archive from before the row digest, whose DuckDB checksum this build's DuckDB
    /// computes otherwise: every row was read, and the row count and time range matched.
    RowsAndFullRead,
}

/// The windows of `hosts` still in the archive (not restored since) within `[from, to]`. A
/// restored window's files have all left its partition; one with only some gone is damaged.
pub fn select_windows(
    archive_dir: &Path,
    hosts: &[String],
    from: Nanos,
    to: Nanos,
) -> Result<Vec<Window>> {
    let mut selected: Vec<Window> = Vec::new();
    for m in manifests(archive_dir)? {
        for w in m.windows {
            if !hosts.contains(&w.node) || w.window_start < from || w.window_end > to {
                continue;
            }
            let present = w
                .files
                .iter()
                .filter(|f| archive_dir.join(&f.path).is_file())
                .count();
            if present == w.files.len() {
                selected.push(w);
            } else if present > 0 {
                let gone = w
                    .files
                    .iter()
                    .find(|f| !archive_dir.join(&f.path).is_file());
                return Err(Error::at(
                    archive_dir,
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
            archive_dir,
            "no archived window of these nodes lies in the requested range",
        ));
    }
    Ok(selected)
}

/// Refuses a window that is live in its node again, and checks each window's archived files
/// against its manifest: how each was verified.
pub fn verify_windows(
    nodes: &[Node],
    selected: &[Window],
    archive_dir: &Path,
) -> Result<Vec<Verified>> {
    let conn = duckdb::Connection::open_in_memory()?;
    let mut verified: Vec<Verified> = Vec::new();
    for w in selected {
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
        let paths: Vec<PathBuf> = w.files.iter().map(|f| archive_dir.join(&f.path)).collect();
        verified.push(verify_window(&conn, w, &paths, archive_dir)?);
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
    Ok(verified)
}

/// One window's copies, staged as new files of its node.
struct Staged {
    node: String,
    table: TableKey,
    outputs: Vec<Output>,
}

/// Copies each window's files into the run's scratch, named as the node names its files, and
/// commits them into the nodes; the archive's copies then leave its partitions.
pub fn restore_windows(
    nodes: &[Node],
    selected: &[Window],
    archive_dir: &Path,
    dirs: &RunDirs,
    run_id: &str,
) -> Result<()> {
    let out_dir = dirs.tmp().join("out");
    crate::durable::fsutil::create_dir_all(&out_dir)?;
    let mut staged: Vec<Staged> = Vec::new();
    let mut restore_moves = Vec::new();
    for w in selected {
        let (outputs, moves) = stage_window(w, archive_dir, &out_dir, run_id)?;
        restore_moves.extend(moves);
        staged.push(Staged {
            node: w.node.clone(),
            table: TableKey {
                db: w.db_id,
                table: w.table_id,
            },
            outputs,
        });
        failpoint("after-restore-window")?;
    }
    fsync_dir(&out_dir)?;
    let manifest = Manifest {
        format_version: crate::json::FORMAT_VERSION,
        nodes: Vec::new(),
        archive: Some(ArchiveSide {
            dir: archive_dir.display().to_string(),
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
            let of_node = staged.iter().filter(|s| s.node == node.id);
            let changes = of_node.map(|s| Change {
                table: s.table,
                removes: &[],
                adds: &s.outputs,
                in_place: false,
            });
            (ni, changes.collect())
        })
        .collect();
    commit_nodes(nodes, &changes, dirs, manifest)?;
    Ok(())
}

/// One window's files copied to `out_dir` (durable, sizes checked), back beside the files it
/// came from; and the moves that take the archive's copies out of its partitions.
fn stage_window(
    w: &Window,
    archive_dir: &Path,
    out_dir: &Path,
    run_id: &str,
) -> Result<(Vec<Output>, Vec<Move>)> {
    let table_dir = w
        .sources
        .first()
        .and_then(|s| ParquetPath::parse(&s.path))
        .map_or_else(
            || format!("{}/dbs/{}/{}", w.node, w.db_id, w.table_id),
            |p| p.table_dir.to_string(),
        );
    let mut outs = Vec::new();
    let mut moves = Vec::new();
    for (i, f) in w.files.iter().enumerate() {
        let src = archive_dir.join(&f.path);
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
        moves.push(Move {
            from: f.path.clone(),
            to: format!("{META}/restored/{run_id}/{}.restored", f.path),
        });
    }
    Ok((outs, moves))
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
