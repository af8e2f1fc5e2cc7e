//! Archiving planned days: each merged into the archive and checked by kompactor's own
//! digest, the archive's manifest made durable, then the days' files taken out of the nodes
//! through the journaled commit.

use super::plan::DayGroup;
use super::{tmp_rel, undone_rel, ArchiveManifest, ArchivedFile, Source, Window, META};
use crate::durable::apply::recover;
use crate::durable::failpoint::failpoint;
use crate::durable::fsutil::{atomic_write, create_dir_all, Batch};
use crate::durable::journal::{ArchiveSide, Manifest, RunDirs};
use crate::error::Result;
use crate::format::layout::date_of;
use crate::json;
use crate::pipeline::commit::{commit_nodes, Change};
use crate::pipeline::discover::Node;
use crate::pipeline::merge::{merge_group, Engine, EngineOptions, MergeRules};
use crate::pipeline::row_digest::digest_files;
use std::fs;
use std::path::Path;

/// An archived day is one file, whatever its rows; points repeated across chunk_times are
/// combined, as a compaction does.
const ARCHIVE_RULES: MergeRules = MergeRules {
    max_rows: u64::MAX,
    keep_duplicates: false,
    drop_keys: false,
};

/// Where a run archives to, and with what.
pub struct ArchiveRun<'a> {
    pub data_dir: &'a Path,
    /// The archive directory.
    pub to: &'a Path,
    pub run_id: &'a str,
    pub dirs: &'a RunDirs,
}

/// Archives `days` and takes their files out of `nodes`: the archive's manifest, once it is
/// durable and the node files are in the trash.
pub fn archive_days(
    run: &ArchiveRun,
    nodes: &[Node],
    days: &[DayGroup],
    engine: EngineOptions,
) -> Result<ArchiveManifest> {
    let archive_tmp = run.to.join(tmp_rel(run.run_id));
    create_dir_all(&archive_tmp)?;
    let engine = Engine::new(&engine)?;
    let manifest_rel = format!("{META}/manifests/{}.json", run.run_id);
    // Recorded before the first archived file is written, so that recovery knows every file
    // this run may leave in the archive (a rolled-back run removes them).
    let manifest = Manifest {
        format_version: json::FORMAT_VERSION,
        nodes: Vec::new(),
        archive: Some(ArchiveSide {
            dir: run.to.display().to_string(),
            tmp: tmp_rel(run.run_id),
            undone: undone_rel(run.run_id),
            files: days.iter().map(|d| d.group.output_path.clone()).collect(),
            manifest: manifest_rel.clone(),
            restore_moves: Vec::new(),
        }),
    };
    run.dirs.write_manifest(&manifest)?;
    // For the archive's own digest of what it holds, apart from the merges' engine.
    let conn = duckdb::Connection::open_in_memory()?;
    // The archived files are durable (contents and directories) before the manifest names
    // them; merge_group leaves its outputs unsynced.
    let mut placed = Batch::default();
    let mut windows = Vec::new();
    for d in days {
        match archive_day(run, &engine, &conn, d, &archive_tmp, &mut placed) {
            Ok(w) => windows.push(w),
            Err(e) => {
                recover(run.data_dir, false)?;
                return Err(e);
            }
        }
        failpoint("after-archive-window")?;
    }
    placed.finish()?;
    drop(engine);
    // The archive's manifest is durable before any node changes.
    let doc = ArchiveManifest {
        format_version: json::FORMAT_VERSION,
        run_id: run.run_id.to_string(),
        created: chrono::Utc::now().to_rfc3339(),
        data_dir: run.data_dir.display().to_string(),
        windows,
    };
    atomic_write(
        &run.to.join(&manifest_rel),
        json::to_string(&doc).as_bytes(),
        &archive_tmp,
        None,
    )?;
    failpoint("after-archive-manifest")?;
    let changes: Vec<(usize, Vec<Change>)> = (0..nodes.len())
        .map(|ni| {
            let of_node = days.iter().filter(|d| d.node_index == ni);
            let changes = of_node.map(|d| Change {
                table: d.group.table,
                removes: &d.group.inputs,
                adds: &[],
                in_place: false,
            });
            (ni, changes.collect())
        })
        .collect();
    commit_nodes(nodes, &changes, run.dirs, manifest)?;
    let _ = fs::remove_dir_all(&archive_tmp);
    Ok(doc)
}

/// One day merged into the archive (placed, not yet synced) and its manifest entry.
fn archive_day(
    run: &ArchiveRun,
    engine: &Engine,
    conn: &duckdb::Connection,
    d: &DayGroup,
    archive_tmp: &Path,
    placed: &mut Batch,
) -> Result<Window> {
    let g = &d.group;
    let m = merge_group(engine, run.data_dir, g, archive_tmp, ARCHIVE_RULES)?;
    let tmp_paths: Vec<_> = m.outputs.iter().map(|o| o.tmp_path.clone()).collect();
    let digest = digest_files(conn, &tmp_paths)?;
    let mut files = Vec::new();
    for o in &m.outputs {
        let dest = run.to.join(&o.final_path);
        placed.rename(&o.tmp_path, &dest)?;
        placed.adopt(&dest);
        files.push(ArchivedFile {
            path: o.final_path.clone(),
            size_bytes: o.size_bytes,
            row_count: o.row_count,
            min_time: o.min_time,
            max_time: o.max_time,
        });
    }
    Ok(Window {
        node: g.node.clone(),
        db_id: g.table.db,
        table_id: g.table.table,
        db: d.db.clone(),
        table: d.table.clone(),
        date: date_of(g.window_start),
        window_start: g.window_start,
        window_end: g.window_end,
        files,
        checksum: m.checksum,
        digest: Some(digest),
        sources: g
            .inputs
            .iter()
            .map(|f| Source {
                id: f.entry.id,
                path: f.entry.path.to_string(),
                size_bytes: f.entry.size_bytes,
                row_count: f.entry.row_count,
            })
            .collect(),
    })
}
