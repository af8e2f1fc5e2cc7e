//! The on-disk format: ids and times, the metadata's JSON model, paths, Parquet footers, and
//! the server's own rules for reading them.

pub mod ids;
pub mod layout;
pub mod model;
pub mod parquet;
