//! Writing the Parquet files: batches of consecutive snapshots, one DuckDB statement each,
//! several at a time, each file checked (sorted) and measured (rows, time range, bytes) for
//! the metadata, then moved to its place in the node.

use crate::shape::{Cfg, FileJob, Written};
use crate::sql::copy_sql;
use duckdb::Connection;
use kompactor::format::parquet::sql_str;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// About how many files one `COPY` writes: enough that a statement's own cost vanishes
/// (a node of one small file per snapshot is written 9 times as fast as with a statement per
/// snapshot), few enough to keep the partitions' writers in memory.
const BATCH_FILES: usize = 256;

/// The files of a batch, by snapshot: each slice holds one snapshot's jobs.
type Batch<'a> = Vec<&'a [FileJob]>;

/// Rows, first and last time of each file a batch wrote, by (snapshot in the batch, db, table).
type Stats = BTreeMap<(usize, u64, u64), (u64, i64, i64)>;

/// Writes every file, a batch of snapshots per statement and `threads` statements at a time;
/// `None` for a file that came out empty (not kept).
pub fn write_files(
    cfg: &Cfg,
    jobs: &[FileJob],
    threads: usize,
) -> Result<Vec<Option<Written>>, String> {
    let events = batches(cfg, jobs);
    let results: Mutex<Vec<Option<Vec<Option<Written>>>>> = Mutex::new(vec![None; events.len()]);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (results, next, failed, events) = (&results, &next, &failed, &events);
            scope.spawn(move || {
                let scratch = cfg.args.out.join(format!(".kompactor-gen-{worker}"));
                let take = || {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    (i < events.len() && failed.lock().unwrap().is_none()).then_some(i)
                };
                let outcome = work(cfg, events, &scratch, take, |i, w| {
                    results.lock().unwrap()[i] = Some(w);
                });
                if let Err(e) = outcome {
                    failed.lock().unwrap().get_or_insert(e);
                }
                let _ = fs::remove_dir_all(&scratch);
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .flat_map(|w| w.expect("every batch was written"))
        .collect())
}

/// One worker: writes the batches `take` hands out until it hands out none, giving each
/// batch's files to `done`.
fn work(
    cfg: &Cfg,
    events: &[Batch],
    scratch: &Path,
    take: impl Fn() -> Option<usize>,
    done: impl Fn(usize, Vec<Option<Written>>),
) -> Result<(), String> {
    // One single-threaded DuckDB per worker: the files are small, so parallelism comes from
    // writing several at once, and separate databases share no locks.
    let conn = Connection::open_in_memory()
        .and_then(|c| {
            c.execute_batch("SET threads = 1; SET preserve_insertion_order = true;")?;
            Ok(c)
        })
        .map_err(|e| format!("DuckDB: {e}"))?;
    while let Some(i) = take() {
        done(i, write_batch(cfg, &conn, &events[i], scratch)?);
    }
    Ok(())
}

/// The jobs grouped into batches. The jobs of one snapshot are adjacent; a batch takes
/// consecutive snapshots of one kind and one set of columns.
fn batches<'a>(cfg: &Cfg, jobs: &'a [FileJob]) -> Vec<Batch<'a>> {
    let events: Vec<&[FileJob]> = jobs.chunk_by(|a, b| a.event == b.event).collect();
    let mut batches: Vec<Batch> = Vec::new();
    for ev in events {
        let fits = batches.last().is_some_and(|b: &Batch| {
            let (first, job) = (&b[0][0], &ev[0]);
            b.iter().map(|e| e.len()).sum::<usize>() + ev.len() <= BATCH_FILES
                && first.kind == job.kind
                && cfg.after_change(first.window) == cfg.after_change(job.window)
        });
        match batches.last_mut() {
            Some(b) if fits => b.push(ev),
            _ => batches.push(vec![ev]),
        }
    }
    batches
}

/// An error about path `p`.
fn err(p: &Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", p.display())
}

/// Writes the files of a batch of snapshots through `scratch`, then moves each to its place.
fn write_batch(
    cfg: &Cfg,
    conn: &Connection,
    events: &[&[FileJob]],
    scratch: &Path,
) -> Result<Vec<Option<Written>>, String> {
    conn.execute_batch(&copy_sql(cfg, events, scratch))
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    // Overwrites that selected no point at all wrote nothing, and a glob that matches
    // nothing is an error to DuckDB.
    let wrote = walkdir::WalkDir::new(scratch)
        .into_iter()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "parquet"));
    if !wrote {
        return Ok(vec![None; events.iter().map(|e| e.len()).sum()]);
    }
    let stats = file_stats(conn, scratch)?;
    let jobs = events
        .iter()
        .enumerate()
        .flat_map(|(e, jobs)| jobs.iter().map(move |j| (e, j)));
    jobs.map(|(e, job)| {
        // An overwrite that selected no point of a table (tiny tables) wrote no file, as
        // the server writes no empty one.
        let Some(&(rows, min, max)) = stats.get(&(e, job.db, job.table)) else {
            return Ok(None);
        };
        let size = place(cfg, scratch, e, job)?;
        Ok(Some(Written {
            size,
            rows,
            min,
            max,
        }))
    })
    .collect()
}

/// What the metadata records of each file a batch wrote under `scratch`, and a check that
/// each is sorted as the server sorts (host names are unique per series).
fn file_stats(conn: &Connection, scratch: &Path) -> Result<Stats, String> {
    let mut stats = Stats::new();
    let glob = scratch.join("*").join("*").join("*").join("*.parquet");
    let mut q = conn
        .prepare(&format!(
            "SELECT e::UBIGINT, db::UBIGINT, t::UBIGINT, count(*)::UBIGINT, epoch_ns(min(\"time\")), \
               epoch_ns(max(\"time\")), bool_and(in_order) \
             FROM (SELECT e, db, t, \"time\", coalesce((host, \"time\") >= lag((host, \"time\")) \
                     OVER (PARTITION BY e, db, t ORDER BY file_row_number), true) AS in_order \
                   FROM read_parquet({}, hive_partitioning = true, file_row_number = true)) \
             GROUP BY ALL",
            sql_str(&glob.to_string_lossy())
        ))
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    let rows = q
        .query_map([], |r| {
            Ok((
                (r.get::<_, u64>(0)? as usize, r.get(1)?, r.get(2)?),
                (r.get(3)?, r.get(4)?, r.get(5)?),
                r.get::<_, bool>(6)?,
            ))
        })
        .map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
    for row in rows {
        let (k, v, in_order) = row.map_err(|e| err(scratch, &format!("DuckDB: {e}")))?;
        if !in_order {
            return Err(err(
                scratch,
                &format!("db {} table {}: the file came out unsorted", k.1, k.2),
            ));
        }
        stats.insert(k, v);
    }
    Ok(stats)
}

/// Moves the file of `job` (snapshot `e` of the batch) from `scratch` to its place in the
/// node; its size.
fn place(cfg: &Cfg, scratch: &Path, e: usize, job: &FileJob) -> Result<u64, String> {
    let part = scratch
        .join(format!("e={e}"))
        .join(format!("db={}", job.db))
        .join(format!("t={}", job.table));
    let written: Vec<PathBuf> = fs::read_dir(&part)
        .map_err(|e| err(&part, &e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let [from] = written.as_slice() else {
        return Err(err(
            &part,
            &format!("expected one file, found {}", written.len()),
        ));
    };
    let path = cfg.args.out.join(&job.rel);
    let dir = path.parent().expect("file has a directory");
    fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
    fs::rename(from, &path).map_err(|e| err(&path, &e))?;
    Ok(fs::metadata(&path).map_err(|e| err(&path, &e))?.len())
}
