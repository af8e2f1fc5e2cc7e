//! kompactor: an offline compactor for InfluxDB 3 Core data dirs.
//!
//! - [`commands`]: the command line, one module per subcommand.
//! - [`maintenance`]: the maintenance window around a compaction (`kompactor maintain`).
//! - [`pipeline`]: discover, plan, merge, verify, commit, report.
//! - [`server`]: a running server's HTTP API: measuring every table, comparing.
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
pub mod maintenance;
pub mod pipeline;
pub mod progress;
pub mod server;
pub mod units;
