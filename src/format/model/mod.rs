//! The JSON documents the server keeps for a node: snapshots, checkpoints, table-index files.
//!
//! The model is lossless: every integer stays a 64-bit integer, the `[key, value]` pair maps
//! keep their order, unknown keys are kept in `extra` and written back, and a document is
//! written back with its keys in the order it was read.

mod de;
mod doc;
mod documents;
mod entry;
mod files;
mod mapped;
mod path;

pub use doc::Doc;
pub use documents::{
    Checkpoint, IndexedFile, Snapshot, TableIndex, TableIndexFiles, TableIndexMarker,
    KNOWN_SNAPSHOT_VERSIONS,
};
pub use entry::{EntryPool, EntryRc, Extra, FileEntry, FileList};
pub use files::{DbFiles, DbTables, Totals};
pub use mapped::MappedText;
pub use path::EntryPath;
