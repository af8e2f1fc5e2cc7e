//! Merging many groups at once: a few workers, each on its own session of one DuckDB.

use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::IO_THREADS;
use crate::error::Result;
use crate::pipeline::merge::{merge_group, Engine, MergeRules, Merged};
use crate::pipeline::plan::Group;
use crate::progress;
use std::path::Path;
use std::time::Instant;

/// What merging one group gave, and how long it took (seconds).
pub type GroupResult = (Result<Merged>, f64);

/// Merges every group, several at a time (small groups are dominated by per-query overhead
/// that does not use DuckDB's threads), each worker on its own DuckDB session of one shared
/// database, so one memory budget bounds them all. Results come back in the order of `jobs`,
/// with the seconds each took.
pub fn merge_all(
    engine: &Engine,
    jobs: &[&Group],
    data_dir: &Path,
    out_dir: &Path,
    threads: Option<u32>,
    rules: MergeRules,
) -> Result<Vec<GroupResult>> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads.map_or(cpus, |t| t as usize).max(1);
    let workers = threads.clamp(1, 4).min(jobs.len().max(1));
    // The thread budget is split: each worker's queries get an equal share of DuckDB's pool
    // (the calling thread works too), so that workers do not fight over the cores.
    engine.set_threads((threads / workers).max(1))?;
    let engines: Vec<Engine> = (0..workers)
        .map(|_| engine.worker())
        .collect::<Result<_>>()?;
    let results: Vec<Mutex<Option<GroupResult>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let (rows_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    let bar = progress::bar(jobs.len() as u64, "merging");
    let started = Instant::now();
    std::thread::scope(|s| {
        for eng in engines {
            let (next, results, bar) = (&next, &results, &bar);
            let (rows_done, bytes_done) = (&rows_done, &bytes_done);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(g) = jobs.get(i) else { break };
                let t0 = Instant::now();
                let r = merge_group(&eng, data_dir, g, out_dir, rules);
                *results[i].lock().expect("no worker panics") =
                    Some((r, t0.elapsed().as_secs_f64()));
                let rows = rows_done.fetch_add(g.rows, Ordering::SeqCst) + g.rows;
                let bytes = bytes_done.fetch_add(g.bytes, Ordering::SeqCst) + g.bytes;
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{} {} | {rows} rows, {:.1} MiB, {:.0} rows/s",
                    g.node,
                    g.window_start.to_rfc3339(),
                    bytes as f64 / 1048576.0,
                    rows as f64 / secs
                ));
                bar.inc(1);
                // A crash here leaves merged outputs only in the temporary directory.
                let _ = failpoint("after-merge-group");
            });
        }
    });
    bar.finish_and_clear();
    Ok(results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no worker panics")
                .expect("every job ran")
        })
        .collect())
}

/// Applies `f` to every item on a few threads (one per CPU, at most 8), results in order:
/// for per-file checks of whole nodes (millions of small reads), where one thread would wait
/// on one system call at a time.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    map_on(cpus.clamp(1, 8), items, f)
}

/// Like [`parallel_map`], for work that mostly waits on the disk, on [`IO_THREADS`] threads.
pub fn parallel_map_io<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_on(IO_THREADS, items, f)
}

/// Lowers the CPU priority of the calling thread, and of the threads it starts from now on, by
/// `steps` nice levels (Linux, where the nice value is a thread's); a no-op elsewhere.
///
/// For work that keeps every core busy alone, run beside steps that cannot: those then go
/// first. Other processes get more of the machine from it too, which is no loss while the
/// server is stopped and is kinder to it while it runs (`prepare`).
pub fn lower_priority(steps: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority only read and set the calling thread's nice value.
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (now + steps).min(19));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = steps;
}

/// Applies `f` to every item on `threads` threads, each taking a run of them; results in order.
fn map_on<T: Sync, R: Send>(threads: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if threads == 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let parts: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a worker does not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::{parallel_map, parallel_map_io};

    #[test]
    fn parallel_map_keeps_the_order_of_its_items() {
        let items: Vec<u64> = (0..1000).collect();
        let squares = parallel_map(&items, |i| i * i);
        assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
        assert!(parallel_map(&[] as &[u64], |i| *i).is_empty());
        let cubes = parallel_map_io(&items, |i| i * i * i);
        assert_eq!(cubes, items.iter().map(|i| i * i * i).collect::<Vec<_>>());
    }
}
