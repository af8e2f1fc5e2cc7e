//! The table a delete applies to, found on every node by name or id, and the WAL files that
//! would keep rows out of its sight.

use crate::error::{Error, Result};
use crate::format::ids::TableKey;
use crate::pipeline::archive::Names;
use crate::pipeline::discover::{discover_all, Finding, Node};
use std::path::Path;

/// The nodes a delete reads, and the table it deletes from on each.
pub(crate) struct Targets {
    /// Database and table names, for finding the table and labelling it.
    pub names: Names,
    pub nodes: Vec<Node>,
    /// The table on each node, in the order of `nodes`.
    pub keys: Vec<TableKey>,
}

impl Targets {
    /// Reads `hosts` and finds `database`.`table` on each; refuses a node with WAL files newer
    /// than its newest snapshot unless `ignore_wal`.
    pub(crate) fn find(
        data_dir: &Path,
        hosts: &[String],
        load_window: Option<usize>,
        database: &str,
        table: &str,
        ignore_wal: bool,
    ) -> Result<Targets> {
        let names = Names::load(data_dir, None)?;
        let nodes = discover_all(data_dir, hosts, load_window)?;
        let keys: Vec<TableKey> = nodes
            .iter()
            .map(|n| resolve(n, &names, database, table))
            .collect::<Result<_>>()?;
        for n in &nodes {
            let wal = wal_files_newer(n);
            if wal > 0 && !ignore_wal {
                return Err(Error::at(
                    &n.dir,
                    format!("{wal} WAL file(s) are newer than the newest snapshot: their rows are in no Parquet file, so the delete cannot see them, and the server would replay them"),
                )
                .hint("start the server, wait until its log says it persisted a snapshot, stop it, and run the delete again; or pass --ignore-wal"));
            }
        }
        Ok(Targets { names, nodes, keys })
    }
}

/// The table `db`.`table` of `node`, by name or id; the error lists what the node has.
fn resolve(node: &Node, names: &Names, db: &str, table: &str) -> Result<TableKey> {
    let keys: Vec<TableKey> = node
        .live
        .keys()
        .chain(node.hidden.keys())
        .copied()
        .collect();
    let found = keys.iter().copied().find(|k| {
        let (dn, tn) = names.of(node, *k);
        (dn == db || k.db.to_string() == db) && (tn == table || k.table.to_string() == table)
    });
    found.ok_or_else(|| {
        let mut have: Vec<String> = keys
            .iter()
            .map(|k| {
                let (d, t) = names.of(node, *k);
                format!("{d}.{t} ({}/{})", k.db, k.table)
            })
            .collect();
        have.dedup();
        Error::usage(format!(
            "node {} has no table `{table}` in database `{db}`",
            node.id
        ))
        .hint(format!("its tables: {}", have.join(", ")))
    })
}

/// `db.table` by name, or `db_id/table_id` when the node does not name them.
pub(super) fn label(n: &Node, names: &Names, key: TableKey) -> String {
    let (db, table) = names.of(n, key);
    if (db.as_str(), table.as_str())
        == (key.db.to_string().as_str(), key.table.to_string().as_str())
    {
        format!("{}/{}", key.db, key.table)
    } else {
        format!("{db}.{table}")
    }
}

/// How many WAL files are newer than the node's newest snapshot.
pub(super) fn wal_files_newer(n: &Node) -> usize {
    n.findings
        .iter()
        .map(|f| match f {
            Finding::WalTail { files, .. } => files.len(),
            _ => 0,
        })
        .sum()
}
