//! kompactor: an offline compactor for InfluxDB 3 Core data dirs.
//!
//! - [`commands`]: the command line, one module per subcommand.
//! - [`pipeline`]: discover, plan, merge, verify, commit, report.
//! - [`format`]: the on-disk format (ids and times, the metadata's JSON, paths, Parquet).
//! - [`durable`]: the run journal, crash-safe file operations, the lock, crash points.
//! - [`json`], [`units`], [`error`], [`progress`], [`heap`]: what they all share.
//!
//! Dependencies point down that list: nothing below `commands` knows the command line.

pub mod commands;
pub mod durable;
pub mod error;
pub mod format;
pub mod heap;
pub mod json;
pub mod pipeline;
pub mod progress;
pub mod units;
