//! Archive cold windows out of a node as plain Hive-partitioned Parquet, and restore them.
//!
//! An archive directory holds `node=<node>/db=<db>/table=<table>/date=YYYY-MM-DD/*.parquet`
//! (merged, deduplicated, sorted, self-describing like compacted files) and kompactor's own
//! records under `_kompactor/`: `ARCHIVE.json` (what makes a directory an archive), one
//! manifest per run in `manifests/`, and the files a restore took back in `restored/<run>/`.
//! Windows leave a node only after their archived files are verified and the manifest is
//! durable, through the same journaled commit as compaction.

use crate::commands::{ArchiveArgs, RestoreArgs};
use crate::pipeline::commit::{prepare_node, Change};
use crate::pipeline::discover::{check_hosts, discover_all, LiveFile, Node, STATE_DIR};
use crate::error::{Error, Result};
use crate::durable::fsutil::{atomic_write, create_dir_all, fsync_dir, fsync_file, Batch};
use crate::durable::interlock::for_change;
use crate::durable::journal::{self, failpoint, ArchiveSide, Manifest, Move, RunDirs, RunState};
use crate::pipeline::merge::{merge_group, Engine, EngineOptions, Output};
use crate::format::parquet::{read_footer, sql_str};
use crate::pipeline::plan::Group;
use crate::commands::compact::{new_run_id, recover_first, EXIT_OK};
use crate::format::ids::{DbId, FileId, Nanos, TableId, TableKey};
use crate::pipeline::checksum::{checksum, Checksum};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DAY: Nanos = Nanos(86_400_000_000_000);
const META: &str = "_kompactor";

/// One archived file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// Relative to the archive dir.
    pub path: String,
    pub size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
}

/// A node file a window was made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    pub id: FileId,
    pub path: String,
    pub size_bytes: u64,
    pub row_count: u64,
}

/// One archived window (a UTC day of one table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Window {
    pub node: String,
    pub db_id: DbId,
    pub table_id: TableId,
    pub db: String,
    pub table: String,
    pub date: String,
    pub window_start: Nanos,
    pub window_end: Nanos,
    pub files: Vec<ArchivedFile>,
    pub checksum: Checksum,
    pub sources: Vec<Source>,
}

/// `_kompactor/manifests/<run-id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveManifest {
    pub run_id: String,
    pub created: String,
    pub data_dir: String,
    pub windows: Vec<Window>,
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(META).join("ARCHIVE.json")
}

/// Makes `dir` a kompactor archive, or checks that it is one.
fn open_archive(dir: &Path, create: bool) -> Result<()> {
    if marker(dir).is_file() {
        return Ok(());
    }
    if !create {
        return Err(Error::at(
            dir,
            "not a kompactor archive (no _kompactor/ARCHIVE.json)",
        ));
    }
    let doc = serde_json::json!({"format": "kompactor-archive", "version": 1});
    atomic_write(
        &marker(dir),
        &serde_json::to_vec_pretty(&doc).expect("json"),
        &dir.join(META).join("tmp"),
        None,
    )
}

/// Reads every manifest of an archive, oldest first.
fn manifests(dir: &Path) -> Result<Vec<ArchiveManifest>> {
    let mdir = dir.join(META).join("manifests");
    if !mdir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&mdir)
        .map_err(|e| Error::io(&mdir, "list", e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let bytes = fs::read(p).map_err(|e| Error::io(p, "read", e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::at(p, format!("not a valid archive manifest: {e}")))
        })
        .collect()
}

/// Parses `--older-than`: an RFC 3339 time, or a duration back from now.
fn parse_cutoff(s: &str) -> Result<Nanos> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t
            .timestamp_nanos_opt()
            .map(Nanos)
            .ok_or_else(|| Error::new(format!("`{s}` is out of range")));
    }
    let d = crate::units::parse_duration(s)
        .map_err(|e| Error::new(format!("--older-than: {e} (or give an RFC 3339 time)")))?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    Ok(Nanos(now - d.0))
}

/// Database and table names: from `name-id` paths (up to 3.5), a names file, or ids.
struct Names(BTreeMap<TableKey, (String, String)>);

impl Names {
    fn load(data_dir: &Path, given: Option<&Path>) -> Result<Names> {
        let path = given
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join(STATE_DIR).join("names.json"));
        let mut out = BTreeMap::new();
        if path.is_file() {
            let v: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).map_err(|e| Error::io(&path, "read", e))?)
                    .map_err(|e| Error::at(&path, format!("not a valid names file: {e}")))?;
            for (db, d) in v["databases"].as_object().into_iter().flatten() {
                let Some(db_id) = d["id"].as_u64() else {
                    continue;
                };
                for (table, t) in d["tables"].as_object().into_iter().flatten() {
                    if let Some(tid) = t["id"].as_u64() {
                        out.insert(
                            TableKey {
                                db: DbId(db_id),
                                table: TableId(tid),
                            },
                            (db.clone(), table.clone()),
                        );
                    }
                }
            }
        } else if given.is_some() {
            return Err(Error::at(&path, "names file not found"));
        }
        Ok(Names(out))
    }

    fn of(&self, node: &Node, key: TableKey) -> (String, String) {
        if let Some(n) = self.0.get(&key) {
            return n.clone();
        }
        let label = node.table_label(key);
        match label.split_once('.') {
            Some((db, t)) if !label.contains('/') => (db.to_string(), t.to_string()),
            _ => (key.db.to_string(), key.table.to_string()),
        }
    }
}

fn hive_value(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn date_of(t: Nanos) -> String {
    chrono::DateTime::from_timestamp(t.0.div_euclid(1_000_000_000), 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// `kompactor archive`.
pub fn archive(a: &ArchiveArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    let cutoff = parse_cutoff(&a.older_than)?.floor_to(DAY);
    let names = Names::load(data_dir, a.names.as_deref())?;
    let _lock = for_change(data_dir, a.dry_run, a.engine.allow_running_server)?;
    recover_first(data_dir, a.dry_run, quiet)?;
    if !marker(&a.to).is_file() {
        let empty = !a.to.exists()
            || fs::read_dir(&a.to)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::at(&a.to, "this directory is not empty and is not a kompactor archive (no _kompactor/ARCHIVE.json)")
                .hint("give an empty or new directory, or one kompactor archived to before"));
        }
    }
    let run_id = new_run_id();
    let nodes = discover_all(data_dir, &a.hosts.hosts)?;

    // The windows to archive: every live file whose UTC day ends at or before the cutoff day.
    let mut groups: Vec<(usize, Group, (String, String))> = Vec::new();
    for (ni, node) in nodes.iter().enumerate() {
        let blocked: BTreeMap<FileId, String> = node
            .findings
            .iter()
            .filter_map(|f| f.blocks_file().map(|id| (id, f.describe())))
            .collect();
        for (key, files) in &node.live {
            let mut days: BTreeMap<Nanos, Vec<LiveFile>> = BTreeMap::new();
            for f in files.iter().filter(|f| f.entry.chunk_time < cutoff) {
                days.entry(f.entry.chunk_time.floor_to(DAY))
                    .or_default()
                    .push(f.clone());
            }
            for (start, inputs) in days {
                if let Some(f) = inputs.iter().find(|f| f.entry.max_time >= cutoff) {
                    return Err(Error::new(format!(
                        "node {} table {}: file {} holds data after the cutoff day ({}); pick a cutoff after {}",
                        node.id, node.table_label(*key), f.entry.path, cutoff.to_rfc3339(), f.entry.max_time.to_rfc3339()
                    )));
                }
                if let Some(why) = inputs.iter().find_map(|f| blocked.get(&f.entry.id)) {
                    return Err(Error::new(format!(
                        "node {} table {}: cannot archive {}: {why}",
                        node.id,
                        node.table_label(*key),
                        date_of(start)
                    )));
                }
                let (db, table) = names.of(node, *key);
                let dir = format!(
                    "node={}/db={}/table={}/date={}",
                    hive_value(&node.id),
                    hive_value(&db),
                    hive_value(&table),
                    date_of(start)
                );
                let rows = inputs.iter().map(|f| f.entry.row_count).sum();
                let bytes = inputs.iter().map(|f| f.entry.size_bytes).sum();
                groups.push((
                    ni,
                    Group {
                        node: node.id.clone(),
                        table: *key,
                        window_start: start,
                        window_end: Nanos(start.0 + DAY.0),
                        inputs,
                        rows,
                        bytes,
                        output_path: format!("{dir}/kompactor-{run_id}.parquet"),
                        outputs_estimate: 1,
                    },
                    (db, table),
                ));
            }
        }
    }
    if groups.is_empty() {
        return Err(Error::new(format!(
            "the cutoff {} selects nothing: no live file of {} lies entirely before that day",
            cutoff.to_rfc3339(),
            a.hosts.hosts.join(", ")
        ))
        .hint("give an earlier --older-than, or check the nodes with `kompactor status`"));
    }
    if a.dry_run {
        println!(
            "kompactor archive dry run: {} window(s) before {} would move to {}",
            groups.len(),
            cutoff.to_rfc3339(),
            a.to.display()
        );
        for (_, g, _) in &groups {
            println!(
                "  {} ({} files, {} rows)",
                g.output_path.rsplit_once('/').map_or("", |x| x.0),
                g.inputs.len(),
                g.rows
            );
        }
        return Ok(ExitCode::from(EXIT_OK));
    }

    open_archive(&a.to, true)?;
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    let archive_tmp = a.to.join(META).join("tmp").join(&run_id);
    create_dir_all(&archive_tmp)?;
    let spill = dirs.tmp().join("spill");
    create_dir_all(&spill)?;
    let engine = Engine::new(&a.engine.engine_options(spill))?;
    let manifest_rel = format!("{META}/manifests/{run_id}.json");
    // Recorded before the first archived file is written, so that recovery knows every file
    // this run may leave in the archive (a rolled-back run removes them).
    let planned: Vec<String> = groups
        .iter()
        .map(|(_, g, _)| g.output_path.clone())
        .collect();
    let side = ArchiveSide {
        dir: a.to.display().to_string(),
        files: planned,
        manifest: manifest_rel.clone(),
        restore_moves: Vec::new(),
    };
    let mut manifest = Manifest {
        nodes: Vec::new(),
        archive: Some(side),
    };
    dirs.write_manifest(&manifest)?;
    let mut windows = Vec::new();
    let mut merged = Vec::new();
    // The archived files are durable (contents and directories) before the manifest names
    // them; merge_group leaves its outputs unsynced.
    let mut placed = Batch::default();
    for (ni, g, (db, table)) in &groups {
        let m = match merge_group(&engine, data_dir, g, &archive_tmp, u64::MAX) {
            Ok(m) => m,
            Err(e) => {
                journal::recover(data_dir, false)?;
                return Err(e);
            }
        };
        let mut files = Vec::new();
        for o in &m.outputs {
            let dest = a.to.join(&o.final_path);
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
        windows.push(Window {
            node: g.node.clone(),
            db_id: g.table.db,
            table_id: g.table.table,
            db: db.clone(),
            table: table.clone(),
            date: date_of(g.window_start),
            window_start: g.window_start,
            window_end: g.window_end,
            files,
            checksum: m.checksum,
            sources: g
                .inputs
                .iter()
                .map(|f| Source {
                    id: f.entry.id,
                    path: f.entry.path.clone(),
                    size_bytes: f.entry.size_bytes,
                    row_count: f.entry.row_count,
                })
                .collect(),
        });
        merged.push((*ni, g));
        failpoint("after-archive-window")?;
    }
    placed.finish()?;
    drop(engine);
    // The archive's manifest is durable before any node changes.
    let doc = ArchiveManifest {
        run_id: run_id.clone(),
        created: chrono::Utc::now().to_rfc3339(),
        data_dir: data_dir.display().to_string(),
        windows,
    };
    atomic_write(
        &a.to.join(&manifest_rel),
        &serde_json::to_vec_pretty(&doc).expect("json"),
        &archive_tmp,
        None,
    )?;
    failpoint("after-archive-manifest")?;
    for (ni, node) in nodes.iter().enumerate() {
        let changes: Vec<Change> = merged
            .iter()
            .filter(|(i, _)| *i == ni)
            .map(|(_, g)| Change {
                table: g.table,
                chunk_time: g.window_start,
                removes: &g.inputs,
                adds: &[],
            })
            .collect();
        if !changes.is_empty() {
            manifest.nodes.push(prepare_node(node, &changes, &dirs)?.0);
        }
    }
    journal::apply_or_recover(&dirs, &manifest)?;
    let _ = fs::remove_dir_all(&archive_tmp);
    let rows: u64 = doc.windows.iter().map(|w| w.checksum.rows).sum();
    if !quiet {
        println!(
            "kompactor archive run {run_id}: {} window(s), {rows} rows, moved to {}; their {} node file(s) are in {}/.kompactor/trash/{run_id}/",
            doc.windows.len(),
            a.to.display(),
            doc.windows.iter().map(|w| w.sources.len()).sum::<usize>(),
            data_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `kompactor restore`.
pub fn restore(a: &RestoreArgs, quiet: bool) -> Result<ExitCode> {
    let data_dir = a.data_dir.as_path();
    check_hosts(data_dir, &a.hosts.hosts)?;
    open_archive(&a.archive_dir, false)?;
    let from = a
        .from
        .as_deref()
        .map(parse_cutoff)
        .transpose()?
        .unwrap_or(Nanos::MIN);
    let to =
        a.to.as_deref()
            .map(parse_cutoff)
            .transpose()?
            .unwrap_or(Nanos::MAX);
    let _lock = for_change(data_dir, a.dry_run, a.allow_running_server)?;
    recover_first(data_dir, a.dry_run, quiet)?;
    let nodes = discover_all(data_dir, &a.hosts.hosts)?;

    // Windows still in the archive (not restored since), in the requested range.
    let mut selected: Vec<Window> = Vec::new();
    for m in manifests(&a.archive_dir)? {
        for w in m.windows {
            let present = w
                .files
                .iter()
                .all(|f| a.archive_dir.join(&f.path).is_file());
            if a.hosts.hosts.contains(&w.node)
                && w.window_start >= from
                && w.window_end <= to
                && present
            {
                selected.push(w);
            }
        }
    }
    if selected.is_empty() {
        return Err(Error::at(
            &a.archive_dir,
            "no archived window of these nodes lies in the requested range",
        ));
    }
    let conn = duckdb::Connection::open_in_memory()?;
    for w in &selected {
        let node = nodes
            .iter()
            .find(|n| n.id == w.node)
            .expect("selected by host");
        let key = TableKey {
            db: w.db_id,
            table: w.table_id,
        };
        if let Some(live) = node.live.get(&key).and_then(|fs| {
            fs.iter()
                .find(|f| f.entry.max_time >= w.window_start && f.entry.min_time < w.window_end)
        }) {
            return Err(Error::new(format!(
                "node {} table {}.{} {}: the window is live in the node (file {}); restoring it would duplicate its rows",
                w.node, w.db, w.table, w.date, live.entry.path
            ))
            .hint("restore only windows that were archived and not written again (--from/--to)"));
        }
        let mut sum = Checksum::empty();
        for f in &w.files {
            let p = a.archive_dir.join(&f.path);
            let footer = read_footer(&p)?;
            sum = sum
                + checksum(
                    &conn,
                    &footer.columns,
                    &format!("read_parquet({})", sql_str(&p.to_string_lossy())),
                )?;
        }
        if sum != w.checksum {
            return Err(Error::at(&a.archive_dir, format!(
                "the archived files of {}.{} {} do not match their manifest (rows {} vs {}, checksum {} vs {})",
                w.db, w.table, w.date, sum.rows, w.checksum.rows, sum.hash_sum, w.checksum.hash_sum
            ))
            .hint("the archive was changed or damaged; nothing was restored"));
        }
    }
    if a.dry_run {
        println!(
            "kompactor restore dry run: {} window(s) would come back:",
            selected.len()
        );
        for w in &selected {
            println!(
                "  node {} {}.{} {} ({} rows)",
                w.node, w.db, w.table, w.date, w.checksum.rows
            );
        }
        return Ok(ExitCode::from(EXIT_OK));
    }

    let run_id = new_run_id();
    let dirs = RunDirs::new(data_dir, &run_id);
    dirs.set_state(RunState::Merging)?;
    let out_dir = dirs.tmp().join("out");
    create_dir_all(&out_dir)?;
    let mut adds: Vec<(String, TableKey, Nanos, Vec<Output>)> = Vec::new();
    let mut restore_moves = Vec::new();
    for w in &selected {
        let segs: Vec<&str> = w
            .sources
            .first()
            .map(|s| s.path.split('/').collect())
            .unwrap_or_default();
        let (dbseg, tseg) = match (segs.get(2), segs.get(3)) {
            (Some(d), Some(t)) => (d.to_string(), t.to_string()),
            _ => (w.db_id.to_string(), w.table_id.to_string()),
        };
        let mut outs = Vec::new();
        for (i, f) in w.files.iter().enumerate() {
            let src = a.archive_dir.join(&f.path);
            let suffix = if w.files.len() > 1 {
                format!("-{}", i + 1)
            } else {
                String::new()
            };
            let final_path = format!(
                "{}/dbs/{dbseg}/{tseg}/{}/00-00/kompactor-restored-{run_id}{suffix}.parquet",
                w.node, w.date
            );
            let tmp_path = out_dir.join(format!("{}.tmp", final_path.replace('/', "__")));
            fs::copy(&src, &tmp_path)
                .map_err(|e| Error::io(&src, &format!("copy to {}", tmp_path.display()), e))?;
            fsync_file(&tmp_path)?;
            let size = fs::metadata(&tmp_path)
                .map_err(|e| Error::io(&tmp_path, "stat", e))?
                .len();
            if size != f.size_bytes {
                return Err(Error::at(&src, "the copy's size differs from the manifest"));
            }
            outs.push(Output {
                tmp_path,
                final_path,
                size_bytes: size,
                row_count: f.row_count,
                min_time: f.min_time,
                max_time: f.max_time,
            });
            // Renamed off *.parquet, so that a query over the archive no longer reads them.
            restore_moves.push(Move {
                from: f.path.clone(),
                to: format!("{META}/restored/{run_id}/{}.restored", f.path),
            });
        }
        adds.push((
            w.node.clone(),
            TableKey {
                db: w.db_id,
                table: w.table_id,
            },
            w.window_start,
            outs,
        ));
        failpoint("after-restore-window")?;
    }
    fsync_dir(&out_dir)?;
    let mut manifest = Manifest {
        nodes: Vec::new(),
        archive: Some(ArchiveSide {
            dir: a.archive_dir.display().to_string(),
            files: Vec::new(),
            manifest: String::new(),
            restore_moves,
        }),
    };
    for node in &nodes {
        let changes: Vec<Change> = adds
            .iter()
            .filter(|(n, ..)| *n == node.id)
            .map(|(_, k, start, outs)| Change {
                table: *k,
                chunk_time: *start,
                removes: &[],
                adds: outs,
            })
            .collect();
        if !changes.is_empty() {
            manifest.nodes.push(prepare_node(node, &changes, &dirs)?.0);
        }
    }
    journal::apply_or_recover(&dirs, &manifest)?;
    if !quiet {
        println!(
            "kompactor restore run {run_id}: {} window(s), {} rows back in the node(s); the archive's copies are in {}/{META}/restored/{run_id}/",
            selected.len(),
            selected.iter().map(|w| w.checksum.rows).sum::<u64>(),
            a.archive_dir.display()
        );
    }
    Ok(ExitCode::from(EXIT_OK))
}
