//! kompactor: an offline compactor for InfluxDB 3 Core data dirs.
//!
//! The pipeline, one module a step: [`discover`] reads a node, [`plan`] groups its files by
//! table and window, [`merge`] writes each group as one sorted, deduplicated file,
//! [`verify`] checks it, [`commit`] makes the server see it, and [`report`] tells the operator.

pub mod cli;
pub mod commit;
pub mod discover;
pub mod error;
pub mod fsutil;
pub mod merge;
pub mod model;
pub mod parquet;
pub mod plan;
pub mod report;
pub mod run;
pub mod types;
pub mod verify;
