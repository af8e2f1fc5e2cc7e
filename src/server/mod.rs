//! Talking to a running InfluxDB 3 Core server over its HTTP API: the client, the query file
//! limit's error, and measuring every table so that two measurements can be compared.
//!
//! Used by `kompactor maintain` around a compaction, and by the real-server tests: one
//! implementation of what "the server answers the same" means.

pub mod compare;
pub mod figures;
pub mod file_limit;
pub mod http;
pub mod measure;
pub mod slices;
