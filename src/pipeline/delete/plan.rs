//! What a delete does to one table of one node: the merges that rewrite the files holding a
//! deleted version, and per window what goes.

use super::files::{clusters, TableFiles};
use super::points::{rows_by_point, Points};
use super::predicate::check_predicate;
use super::{DeleteWindow, Selection, TableDelete};
use crate::error::Result;
use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::layout::{window_dirs, ParquetPath};
use crate::pipeline::discover::{LiveFile, Node};
use crate::pipeline::merge::DROP_KEYS;
use crate::pipeline::plan::{Group, GEN1};
use duckdb::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Finds what a delete of `sel` does to `table` of `node`: creates [`DROP_KEYS`] in `conn`
/// with the points to delete, and returns the merges that remove them (named after
/// `run_id`). Fails, changing nothing, on a predicate DuckDB does not accept.
pub(super) fn plan_table(
    conn: &Connection,
    data_dir: &Path,
    node: &Node,
    table: TableKey,
    sel: &Selection,
    run_id: &str,
) -> Result<TableDelete> {
    let files = TableFiles::of(node, table);
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {DROP_KEYS}"))?;
    let schema = files.schema(data_dir)?;
    if let Some(p) = &sel.predicate {
        check_predicate(conn, &schema, p)?;
    }
    let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    let (ranked, split) = files.ranked(sel);
    if ranked.is_empty() {
        return Ok(TableDelete {
            table,
            groups: Vec::new(),
            windows: Vec::new(),
            columns,
        });
    }
    let points = Points::select(
        conn,
        &schema,
        &rows_by_point(&schema, data_dir, &ranked, split),
        sel,
    )?;
    let touched: BTreeSet<FileId> = points.hit.keys().map(|&i| ranked[i].entry.id).collect();
    let mut groups = Vec::new();
    let mut windows: BTreeMap<Nanos, DeleteWindow> = BTreeMap::new();
    for cluster in clusters(&files.all, |f| touched.contains(&f.id)) {
        let inputs: Vec<LiveFile> = cluster.iter().map(|(f, h)| files.file(f, *h)).collect();
        let chunk = inputs[0].entry.chunk_time;
        let ids: BTreeSet<_> = inputs.iter().map(|f| f.entry.id).collect();
        let w = match windows.entry(chunk) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(points.window(chunk)?),
        };
        w.files += inputs.len();
        w.versions_removed += points
            .hit
            .iter()
            .filter(|(i, _)| ids.contains(&ranked[**i].entry.id))
            .map(|(_, n)| n)
            .sum::<u64>();
        w.bytes += inputs.iter().map(|f| f.entry.size_bytes).sum::<u64>();
        groups.push(group(node, table, chunk, inputs, run_id));
    }
    Ok(TableDelete {
        table,
        groups,
        windows: windows.into_values().collect(),
        columns,
    })
}

/// The merge that rewrites one set of files without the deleted points.
fn group(node: &Node, table: TableKey, chunk: Nanos, inputs: Vec<LiveFile>, run_id: &str) -> Group {
    let first = inputs.iter().map(|f| f.entry.id).min().expect("inputs");
    let output_path = inputs[0].entry.path.with_str(|p| {
        let table_dir = ParquetPath::parse(p).map_or(p, |p| p.table_dir);
        format!(
            "{table_dir}/{}/kompactor-delete-{run_id}-{first}.parquet",
            window_dirs(chunk)
        )
    });
    Group {
        node: node.id.clone(),
        table,
        window_start: chunk,
        window_end: GEN1.end(chunk),
        width: GEN1,
        joined: false,
        rows: inputs.iter().map(|f| f.entry.row_count).sum(),
        bytes: inputs.iter().map(|f| f.entry.size_bytes).sum(),
        outputs_estimate: 1,
        revived: 0,
        rows_revived: 0,
        bytes_revived: 0,
        output_path,
        inputs,
    }
}
