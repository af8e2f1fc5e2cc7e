//! Prepared windows: merged and verified while the server runs (`kompactor prepare`), kept
//! under `.kompactor/prepared/<id>/` with a record of exactly what they replace, and used by
//! the next compaction for every window whose inputs are still exactly those.
//!
//! Beside them, under `meta/<node>/`, the snapshot and checkpoint files as committing those
//! windows would rewrite them: the commit takes one instead of writing it only when its
//! bytes are exactly those the commit computed.

use crate::durable::fsutil::{atomic_write, create_dir_all, Batch};
use crate::error::{Error, Result};
use crate::format::ids::{FileId, Nanos, TableKey};
use crate::format::layout::{tmp_name, STATE_DIR};
use crate::json;
use crate::pipeline::checksum::Checksum;
use crate::pipeline::merge::{output_paths, precedence, Merged, Output};
use crate::pipeline::plan::Group;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One input a prepared window replaces, as it was when it was merged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedInput {
    pub id: FileId,
    pub path: String,
    pub size_bytes: u64,
}

/// One merged file of a prepared window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedFile {
    /// Relative to the prepared run's directory.
    pub file: String,
    pub size_bytes: u64,
    pub row_count: u64,
    pub min_time: Nanos,
    pub max_time: Nanos,
    /// CRC-32 of the file's bytes, taken once its rows were verified.
    pub crc32: u32,
    /// The start of its window (the `chunk_time` its entry gets); absent in manifests
    /// written before windows could be joined, where it is the group's window start.
    #[serde(default)]
    pub chunk_time: Option<Nanos>,
}

/// One prepared window: its inputs, its verified outputs and their checksum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedWindow {
    pub node: String,
    pub table: TableKey,
    pub window_start: Nanos,
    pub window_end: Nanos,
    pub inputs: Vec<PreparedInput>,
    pub outputs: Vec<PreparedFile>,
    /// Rows read from the inputs, and rows written (duplicates removed).
    pub rows_in: u64,
    pub rows_out: u64,
    /// The rows' checksum, as the merge verified it.
    pub checksum: Checksum,
    /// The inputs' ids in the order their versions of a point took precedence
    /// ([`precedence`]): a window whose files the server now orders otherwise is merged
    /// again. Empty in manifests written before it was recorded (never taken).
    #[serde(default)]
    pub precedence: Vec<FileId>,
    /// Points its inputs held in files of different chunk_time, combined by the merge.
    #[serde(default)]
    pub cross_chunk_points: u64,
}

/// `.kompactor/prepared/<id>/prepared.json`: what one `prepare` run left ready.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedManifest {
    pub format_version: u32,
    pub prepare_id: String,
    /// RFC 3339.
    pub created: String,
    pub windows: Vec<PreparedWindow>,
}

/// CRC-32 of a file's bytes.
fn crc32(path: &Path) -> std::io::Result<u32> {
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finalize()),
            n => h.update(&buf[..n]),
        }
    }
}

/// The directory holding every prepared run.
pub fn prepared_root(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_DIR).join("prepared")
}

/// The directory of every prepared run, oldest first.
pub fn prepared_dirs(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = prepared_root(data_dir);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .map_err(|e| Error::io(&root, "list", e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A prepared run's manifest; `None` for a prepare that did not finish.
pub fn read_manifest(dir: &Path) -> Option<PreparedManifest> {
    let bytes = fs::read(dir.join("prepared.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The ids of a group's inputs in the order their versions take precedence.
fn precedence_of(g: &Group) -> Vec<FileId> {
    let inputs: Vec<_> = g.inputs.iter().collect();
    precedence(&inputs).iter().map(|f| f.entry.id).collect()
}

fn inputs_of(g: &Group) -> Vec<PreparedInput> {
    g.inputs
        .iter()
        .map(|f| PreparedInput {
            id: f.entry.id,
            path: f.entry.path.to_string(),
            size_bytes: f.entry.size_bytes,
        })
        .collect()
}

/// Files a prepare run keeps: each merged window's outputs moved under its directory, and
/// the manifest written last, once they are durable.
pub struct PreparedWriter {
    dir: PathBuf,
    manifest: PreparedManifest,
    batch: Batch,
}

impl PreparedWriter {
    /// Starts `.kompactor/prepared/<id>/`.
    pub fn new(data_dir: &Path, prepare_id: &str) -> Result<PreparedWriter> {
        let dir = prepared_root(data_dir).join(prepare_id);
        create_dir_all(&dir.join("out"))?;
        Ok(PreparedWriter {
            dir,
            manifest: PreparedManifest {
                format_version: json::FORMAT_VERSION,
                prepare_id: prepare_id.to_string(),
                created: chrono::Utc::now().to_rfc3339(),
                windows: Vec::new(),
            },
            batch: Batch::default(),
        })
    }

    /// Keeps one merged window.
    pub fn add(&mut self, g: &Group, m: Merged) -> Result<()> {
        let mut outputs = Vec::new();
        for o in m.outputs {
            let file = format!("out/{}", tmp_name(&o.final_path));
            let dest = self.dir.join(&file);
            self.batch.rename(&o.tmp_path, &dest)?;
            self.batch.adopt(&dest);
            outputs.push(PreparedFile {
                file,
                size_bytes: o.size_bytes,
                row_count: o.row_count,
                min_time: o.min_time,
                max_time: o.max_time,
                crc32: crc32(&dest).map_err(|e| Error::io(&dest, "read", e))?,
                chunk_time: Some(o.chunk_time),
            });
        }
        self.manifest.windows.push(PreparedWindow {
            node: g.node.clone(),
            table: g.table,
            window_start: g.window_start,
            window_end: g.window_end,
            inputs: inputs_of(g),
            outputs,
            rows_in: m.rows_in,
            rows_out: m.rows_out,
            checksum: m.checksum,
            precedence: precedence_of(g),
            cross_chunk_points: m.cross_chunk_points,
        });
        Ok(())
    }

    /// Keeps a snapshot or checkpoint file as the commit of the prepared windows would
    /// rewrite it (`in_node`: its path in the node's directory), with the modification time
    /// it keeps, so that the commit need not write and flush it while the server is stopped.
    pub fn add_metadata(
        &mut self,
        node: &str,
        in_node: &str,
        bytes: &[u8],
        mtime: Option<SystemTime>,
    ) -> Result<()> {
        let dest = self.dir.join("meta").join(node).join(in_node);
        self.batch.write(&dest, bytes, mtime)
    }

    /// Makes the outputs durable, then records them; returns the manifest.
    pub fn finish(mut self) -> Result<PreparedManifest> {
        self.batch.finish()?;
        atomic_write(
            &self.dir.join("prepared.json"),
            json::to_string(&self.manifest).as_bytes(),
            &self.dir,
            None,
        )?;
        Ok(self.manifest)
    }
}

/// The prepared windows found at the start of a compaction.
pub struct Prepared {
    /// Each prepared run's directory and manifest, oldest first.
    runs: Vec<(PathBuf, PreparedManifest)>,
}

/// Why a prepared window was not used.
#[derive(Clone, Debug, Serialize)]
pub struct NotUsed {
    pub node: String,
    pub table: TableKey,
    pub window_start: Nanos,
    pub reason: String,
}

impl Prepared {
    /// Reads every prepared run; one whose manifest is missing (a prepare that did not
    /// finish) or unreadable is left out, and removed by [`Prepared::remove_all`].
    pub fn load(data_dir: &Path) -> Result<Prepared> {
        let mut runs = Vec::new();
        for d in prepared_dirs(data_dir)? {
            match read_manifest(&d) {
                Some(manifest) => runs.push((d, manifest)),
                None => log::info!("{}: an unfinished prepare, not used", d.display()),
            }
        }
        Ok(Prepared { runs })
    }

    /// Whether nothing is prepared.
    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|(_, m)| m.windows.is_empty())
    }

    /// The prepared window for a planned group, if one was prepared for exactly its inputs.
    fn find(&self, g: &Group) -> Option<(&Path, &PreparedWindow)> {
        let want = inputs_of(g);
        let order = precedence_of(g);
        self.runs.iter().rev().find_map(|(dir, m)| {
            m.windows
                .iter()
                .find(|w| {
                    w.node == g.node
                        && w.table == g.table
                        && w.window_start == g.window_start
                        && w.window_end == g.window_end
                        && w.inputs == want
                        && w.precedence == order
                })
                .map(|w| (dir.as_path(), w))
        })
    }

    /// Takes the prepared outputs of a planned group into `out_dir`, as a merge would have
    /// left them, after checking that every byte is as prepared (the rows were verified
    /// then); `None` when nothing usable was prepared for exactly these inputs (with why,
    /// when something was).
    pub fn take(&self, g: &Group, out_dir: &Path) -> std::result::Result<Option<Merged>, String> {
        let Some((dir, w)) = self.find(g) else {
            return Ok(None);
        };
        let chunk_times: Vec<Nanos> = w
            .outputs
            .iter()
            .map(|f| f.chunk_time.unwrap_or(g.window_start))
            .collect();
        let paths = output_paths(g, &chunk_times);
        let mut outputs = Vec::new();
        for ((f, final_path), chunk_time) in w.outputs.iter().zip(paths).zip(chunk_times) {
            let p = dir.join(&f.file);
            let size = fs::metadata(&p)
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if size != f.size_bytes {
                return Err(format!(
                    "{} is {size} bytes, {} were prepared",
                    p.display(),
                    f.size_bytes
                ));
            }
            if crc32(&p).map_err(|e| format!("{}: {e}", p.display()))? != f.crc32 {
                return Err(format!(
                    "{} changed since it was prepared (its CRC-32 differs)",
                    p.display()
                ));
            }
            outputs.push((p, final_path, chunk_time, f));
        }
        let mut moved = Vec::new();
        for (p, final_path, chunk_time, f) in outputs {
            let tmp_path = out_dir.join(tmp_name(&final_path));
            fs::rename(&p, &tmp_path).map_err(|e| format!("{}: {e}", p.display()))?;
            moved.push(Output {
                tmp_path,
                final_path,
                chunk_time,
                size_bytes: f.size_bytes,
                row_count: f.row_count,
                min_time: f.min_time,
                max_time: f.max_time,
            });
        }
        Ok(Some(Merged {
            outputs: moved,
            rows_in: w.rows_in,
            rows_out: w.rows_out,
            checksum: w.checksum,
            cross_chunk_points: w.cross_chunk_points,
        }))
    }

    /// A metadata file `prepare` kept (see [`PreparedWriter::add_metadata`]) with exactly
    /// these bytes and this modification time, if there is one.
    pub fn metadata_file(
        &self,
        node: &str,
        in_node: &str,
        bytes: &[u8],
        mtime: Option<SystemTime>,
    ) -> Option<PathBuf> {
        self.runs
            .iter()
            .rev()
            .map(|(dir, _)| dir.join("meta").join(node).join(in_node))
            .find(|p| {
                fs::metadata(p)
                    .is_ok_and(|m| m.len() == bytes.len() as u64 && m.modified().ok() == mtime)
                    && fs::read(p).is_ok_and(|b| b == bytes)
            })
    }

    /// The prepared windows no planned group matches, with why.
    pub fn unused(&self, groups: &[&Group], used: &[bool]) -> Vec<NotUsed> {
        let mut out = Vec::new();
        for (_, m) in &self.runs {
            for w in &m.windows {
                let matched = groups.iter().zip(used).any(|(g, u)| {
                    *u && g.node == w.node
                        && g.table == w.table
                        && g.window_start == w.window_start
                        && g.window_end == w.window_end
                });
                if !matched {
                    out.push(NotUsed {
                        node: w.node.clone(),
                        table: w.table,
                        window_start: w.window_start,
                        reason: "its window changed since it was prepared (new, purged or rewritten files, or the server now orders its files otherwise), or is not planned with these options".into(),
                    });
                }
            }
        }
        out
    }

    /// Removes every prepared run: after a compaction they are used or stale.
    pub fn remove_all(data_dir: &Path) -> Result<()> {
        let root = prepared_root(data_dir);
        if root.exists() {
            fs::remove_dir_all(&root).map_err(|e| Error::io(&root, "remove", e))?;
        }
        Ok(())
    }
}
