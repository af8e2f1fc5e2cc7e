//! kompactor: an offline compactor for InfluxDB 3 Core data dirs.
//!
//! The pipeline, one module a step: [`discover`] reads a node, [`plan`] groups its files by
//! table and window, [`merge`] writes each group as one sorted, deduplicated file,
//! [`verify`] checks it, [`commit`] prepares the new metadata, [`journal`] puts it in place
//! crash-safely (and recovers, undoes), and [`report`] tells the operator. [`run`] drives one
//! invocation; [`inspect`] and [`runs`] are the read-only and housekeeping subcommands.

pub mod archive;
pub mod cli;
pub mod commit;
pub mod discover;
pub mod error;
pub mod fsutil;
pub mod heap;
pub mod inspect;
pub mod interlock;
pub mod journal;
pub mod merge;
pub mod model;
pub mod parquet;
pub mod plan;
pub mod purged;
pub mod progress;
pub mod report;
pub mod run;
pub mod runs;
pub mod types;
pub mod verify;
