//! Durability: the run journal, crash-safe file operations, the lock, and crash points.

pub mod apply;
pub mod failpoint;
pub mod fsutil;
pub mod interlock;
pub mod journal;
pub mod space;
pub mod undo;
