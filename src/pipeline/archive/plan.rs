//! Which windows an archive run takes: every live file's UTC day that ends at or before the
//! cutoff day, one group per table and day.

use super::{partition_dir, Names, DAY};
use crate::error::{Error, Result};
use crate::format::ids::{LoadPos, Nanos, TableKey};
use crate::format::layout::date_of;
use crate::format::model::EntryRc;
use crate::pipeline::discover::{LiveFile, Node};
use crate::pipeline::plan::{blocked_files, by_window, Group, Width};

/// One day of one table to archive.
pub struct DayGroup {
    /// Index of its node in the discovered nodes.
    pub node_index: usize,
    pub group: Group,
    /// The database and table names its partition is named by.
    pub db: String,
    pub table: String,
}

impl DayGroup {
    /// Its partition directory, relative to the archive dir.
    pub fn partition(&self) -> String {
        self.group
            .output_path
            .rsplit_once('/')
            .map_or("", |x| x.0)
            .to_string()
    }
}

/// The days before `cutoff` of every node's live files; refuses a day with a file reaching past
/// the cutoff, or a file that is unsafe to merge, and a cutoff that selects nothing.
pub fn plan_days(
    nodes: &[Node],
    names: &Names,
    cutoff: Nanos,
    run_id: &str,
) -> Result<Vec<DayGroup>> {
    let mut groups = Vec::new();
    for (ni, node) in nodes.iter().enumerate() {
        let blocked = blocked_files(node);
        for (key, files) in &node.live {
            let days = by_window(files.iter().filter(|f| f.chunk_time < cutoff), DAY);
            for (start, inputs) in days {
                if let Some(f) = inputs.iter().find(|f| f.max_time >= cutoff) {
                    return Err(Error::new(format!(
                        "node {} table {}: file {} holds data after the cutoff day ({}); pick a cutoff after {}",
                        node.id, node.table_label(*key), f.path, cutoff.to_rfc3339(), f.max_time.to_rfc3339()
                    )));
                }
                if let Some(why) = inputs.iter().find_map(|f| blocked.get(&f.id)) {
                    return Err(Error::new(format!(
                        "node {} table {}: cannot archive {}: {why}",
                        node.id,
                        node.table_label(*key),
                        date_of(start)
                    )));
                }
                let (db, table) = names.of(node, *key);
                let dir = partition_dir(&node.id, &db, &table, start);
                let group = day_group(
                    node,
                    *key,
                    start,
                    &inputs,
                    format!("{dir}/kompactor-{run_id}.parquet"),
                );
                groups.push(DayGroup {
                    node_index: ni,
                    group,
                    db,
                    table,
                });
            }
        }
    }
    if groups.is_empty() {
        let hosts: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        return Err(Error::new(format!(
            "the cutoff {} selects nothing: no live file of {} lies entirely before that day",
            cutoff.to_rfc3339(),
            hosts.join(", ")
        ))
        .hint("give an earlier --older-than, or check the nodes with `kompactor status`"));
    }
    Ok(groups)
}

/// The merge group of one day of one table.
fn day_group(
    node: &Node,
    key: TableKey,
    start: Nanos,
    inputs: &[&EntryRc],
    output_path: String,
) -> Group {
    Group {
        node: node.id.clone(),
        table: key,
        window_start: start,
        window_end: Nanos(start.0 + DAY.0),
        width: Width::Fixed(DAY),
        joined: false,
        inputs: inputs
            .iter()
            .map(|f| LiveFile {
                table: key,
                entry: EntryRc::clone(f),
                load_pos: node
                    .load_pos
                    .get(f.id)
                    .copied()
                    .unwrap_or(LoadPos(u32::MAX)),
            })
            .collect(),
        rows: inputs.iter().map(|f| f.row_count).sum(),
        bytes: inputs.iter().map(|f| f.size_bytes).sum(),
        output_path,
        outputs_estimate: 1,
        revived: 0,
        rows_revived: 0,
        bytes_revived: 0,
    }
}
