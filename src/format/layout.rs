//! Where things are in a data dir: node directories, Parquet paths, kompactor's own state.

use crate::error::{Error, Result};
use crate::format::ids::{DbId, Nanos, TableId};
use std::fs;
use std::path::Path;

/// The directory kompactor keeps its own state in, inside the data dir.
pub const STATE_DIR: &str = ".kompactor";

/// The table index of a node (3.3+), relative to its directory: the server rebuilds it from
/// the snapshots when it is missing.
pub const TABLE_INDEX_PATHS: [&str; 3] = [
    "table-index-conversion-completed",
    "db-indices",
    "table-snapshots",
];

/// The parts of a gen1 Parquet path, `<node>/dbs/<db dir>/<table dir>/<date>/<time>/<file>`.
///
/// The db and table directories are `<name>-<id>` up to 3.5 and `<id>` from 3.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParquetPath<'a> {
    /// `<node>/dbs/<db dir>/<table dir>`: where a table's files live.
    pub table_dir: &'a str,
    pub db_dir: &'a str,
    pub table_seg: &'a str,
}

impl<'a> ParquetPath<'a> {
    /// Splits a path as the metadata records it; `None` when it is not under `<node>/dbs/`.
    pub fn parse(path: &'a str) -> Option<ParquetPath<'a>> {
        let mut it = path.match_indices('/').map(|(i, _)| i);
        let (a, b, c, d) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if &path[a + 1..b] != "dbs" {
            return None;
        }
        Some(ParquetPath {
            table_dir: &path[..d],
            db_dir: &path[b + 1..c],
            table_seg: &path[c + 1..d],
        })
    }

    /// Whether the directories are ids only (3.6+ naming).
    pub fn is_id_only(&self) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(self.db_dir) && digits(self.table_seg)
    }

    /// The database and table names, when the directories carry them (`<name>-<id>`).
    pub fn names(&self, db: DbId, table: TableId) -> Option<(String, String)> {
        let name = |seg: &str, id: u64| seg.strip_suffix(&format!("-{id}")).map(str::to_string);
        Some((name(self.db_dir, db.0)?, name(self.table_seg, table.0)?))
    }
}

/// The `YYYY-MM-DD/HH-MM` directories the server files a window's Parquet files under.
pub fn window_dirs(start: Nanos) -> String {
    start.format("%Y-%m-%d/%H-%M")
}

/// The UTC date `YYYY-MM-DD` of a time.
pub fn date_of(t: Nanos) -> String {
    t.format("%Y-%m-%d")
}

/// The path of the `n`-th file of a split output: `-<n>` before the final `.parquet` only.
pub fn numbered(path: &str, n: usize) -> String {
    match path.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}-{n}.parquet"),
        None => format!("{path}-{n}"),
    }
}

/// The name a file to be placed at `final_path` has while it waits in a temporary directory:
/// unique per destination, and not ending in `.parquet`.
pub fn tmp_name(final_path: &str) -> String {
    format!("{}.tmp", final_path.replace('/', "__"))
}

/// Refuses a data dir that does not exist, with the hint every command gives.
pub fn check_data_dir(data_dir: &Path) -> Result<()> {
    if data_dir.is_dir() {
        return Ok(());
    }
    Err(
        Error::at(data_dir, "data dir does not exist or is not a directory")
            .hint("pass the directory given to `influxdb3 serve --data-dir`"),
    )
}

/// Lists the node directories of a data dir (directories holding `snapshots/`).
pub fn list_nodes(data_dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(data_dir).map_err(|e| Error::io(data_dir, "read the data dir", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(data_dir, "list the data dir", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == STATE_DIR {
            continue;
        }
        if entry.path().join("snapshots").is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Checks the data dir and the requested hosts before anything is read.
pub fn check_hosts(data_dir: &Path, hosts: &[String]) -> Result<()> {
    check_data_dir(data_dir)?;
    let nodes = list_nodes(data_dir)?;
    for h in hosts {
        if !nodes.contains(h) {
            let known = if nodes.is_empty() {
                "none".to_string()
            } else {
                nodes.join(", ")
            };
            return Err(
                Error::at(data_dir, format!("no node `{h}` in this data dir")).hint(format!(
                    "nodes found: {known} (a node is a directory holding snapshots/)"
                )),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_paths() {
        let p = ParquetPath::parse("node0/dbs/metrics-1/cpu-0/2026-11-16/00-10/0000000003.parquet")
            .unwrap();
        assert_eq!(p.table_dir, "node0/dbs/metrics-1/cpu-0");
        assert!(!p.is_id_only());
        assert_eq!(
            p.names(DbId(1), TableId(0)),
            Some(("metrics".into(), "cpu".into()))
        );
        assert_eq!(p.names(DbId(2), TableId(0)), None);
        let p = ParquetPath::parse("node0/dbs/1/0/2026-11-16/00-10/0000000003.parquet").unwrap();
        assert!(p.is_id_only());
        assert_eq!(p.table_dir, "node0/dbs/1/0");
        assert_eq!(ParquetPath::parse("node0/other/1/0/x.parquet"), None);
        assert_eq!(ParquetPath::parse("node0/dbs/1"), None);
    }

    #[test]
    fn split_outputs_are_numbered_before_the_final_suffix_only() {
        assert_eq!(
            numbered("node0/dbs/a.parquet-1/b/kompactor-1d-x.parquet", 2),
            "node0/dbs/a.parquet-1/b/kompactor-1d-x-2.parquet"
        );
        assert_eq!(numbered("x", 1), "x-1");
    }

    #[test]
    fn dates() {
        let t = Nanos(1_794_787_800_000_000_000);
        assert_eq!(window_dirs(t), "2026-11-16/00-10");
        assert_eq!(date_of(t), "2026-11-16");
    }
}
