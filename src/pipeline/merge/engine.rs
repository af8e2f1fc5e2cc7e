//! The DuckDB session a merge runs in (memory, threads, spill directory) and its step timing.

use crate::error::{Error, Result};
use crate::format::parquet::sql_str;
use duckdb::Connection;
use std::path::PathBuf;

/// Where a group's time goes, step by step, for `RUST_LOG=kompactor=debug`.
pub(super) struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Laps {
    pub(super) fn start() -> Laps {
        Laps {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Records the time since the previous lap under `step`.
    pub(super) fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        log::trace!("{step}: {ms:.1}ms");
        self.laps.push((step, ms));
        self.last = now;
    }

    pub(super) fn summary(&self) -> String {
        let parts: Vec<String> = self
            .laps
            .iter()
            .map(|(s, ms)| format!("{s} {ms:.1}ms"))
            .collect();
        parts.join(", ")
    }
}

/// How much of the machine the merge may use.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where DuckDB spills what does not fit in `memory_limit`.
    pub spill_dir: PathBuf,
    /// Worker threads; DuckDB's default (all CPUs) when `None`.
    pub threads: Option<u32>,
    /// The process's memory budget.
    pub memory_limit: crate::units::MemoryBudget,
}

/// A DuckDB session for merging.
pub struct Engine {
    pub(super) conn: Connection,
    /// Up to this many repeated keys a window are combined by a hash aggregate, which is
    /// quick but holds a row per key in memory; more go through a window, which spills.
    pub(super) aggregate_keys: u64,
}

/// The memory a repeated key may take in the hash aggregate, in the worst case: a row of
/// long strings, with the aggregate's own overhead.
const AGGREGATE_KEY_BYTES: u64 = 64 << 10;

impl Engine {
    /// Opens an in-memory DuckDB bounded by `opts`.
    pub fn new(opts: &EngineOptions) -> Result<Engine> {
        crate::heap::tune(opts.memory_limit);
        let conn = Connection::open_in_memory()?;
        let mut setup = format!(
            "SET temp_directory = {}; SET preserve_insertion_order = true; SET memory_limit = {};",
            sql_str(&opts.spill_dir.to_string_lossy()),
            sql_str(&opts.memory_limit.duckdb_limit())
        );
        if let Some(t) = opts.threads {
            setup.push_str(&format!(" SET threads = {t};"));
        }
        conn.execute_batch(&setup)
            .map_err(|e| Error::new(format!("could not configure DuckDB ({setup}): {e}")))?;
        Ok(Engine {
            conn,
            aggregate_keys: opts.memory_limit.0 / AGGREGATE_KEY_BYTES,
        })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Sets the size of DuckDB's thread pool (shared by every session of the database).
    pub fn set_threads(&self, n: usize) -> Result<()> {
        Ok(self.conn.execute_batch(&format!("SET threads = {n};"))?)
    }

    /// Another session on the same database (same memory budget), for a parallel worker.
    pub fn worker(&self) -> Result<Engine> {
        Ok(Engine {
            conn: self.conn.try_clone()?,
            aggregate_keys: self.aggregate_keys,
        })
    }
}
