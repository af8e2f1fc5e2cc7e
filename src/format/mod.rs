//! The on-disk format: ids and times, the metadata's JSON model, paths, Parquet footers, the
//! catalog's names, and the server's own rules for reading them.

pub mod catalog;
pub mod ids;
pub mod layout;
pub mod model;
pub mod parquet;
