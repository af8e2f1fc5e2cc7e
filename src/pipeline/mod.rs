//! The compaction pipeline, one module a step: discover a node, plan its windows, merge each
//! (with its checksum), prepare the commit, report; plus deleting rows (`delete`), the
//! archive directory's format and bringing archived windows back (`restore`).

pub mod archive;
pub mod checksum;
pub mod commit;
pub mod compaction;
pub mod delete;
pub mod discover;
pub mod merge;
pub mod plan;
pub mod prepare;
pub mod prepared;
pub mod report;
pub mod restore;
pub mod row_digest;
pub mod space;
pub mod workers;
