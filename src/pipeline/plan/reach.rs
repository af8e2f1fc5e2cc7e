//! How far back a table's writers still write, read from the metadata.
//!
//! A snapshot lists the files the server persisted since the one before; a file whose data
//! overlaps data the table already had (a retry, a correction, a replayed buffer, a history
//! rewritten) is a late write, and how far its window lies behind the newest data the node
//! had then is how far back the writers reached. Merging windows wider than the server's 10
//! minutes there would make the next such write a second row instead of an overwrite, so the
//! plan keeps those windows at 10 minutes ([`super`]).

use crate::format::ids::{DbId, FileId, Nanos, TableId, TableKey};
use crate::format::layout::STATE_DIR;
use crate::format::model::EntryRc;
use crate::pipeline::discover::Node;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How far back, in data time, recent snapshots are looked at: two weeks covers writers that
/// come back daily or weekly, and a one-off correction stops counting after it.
pub const HORIZON: Nanos = Nanos(14 * 86_400_000_000_000);

/// What the recent snapshots say of one table's writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// How far behind the newest data of its time the oldest late write landed (0: none).
    pub reach: Nanos,
    /// Recent files whose data overlaps other data of the table (late writes).
    pub late_files: usize,
    /// Of those, the ones that overlap a file of another chunk_time (an earlier merge wider
    /// than 10 minutes): the server returns their common points twice until they are merged.
    pub across_chunks: usize,
    /// The oldest window a late write landed in (`Nanos::MAX` for none).
    pub oldest_window: Nanos,
    /// The node's newest data time when these late writes were last seen (`Nanos::MIN` for
    /// none): a run remembers them ([`SeenWriters`]), since merging their files erases them.
    pub seen_at: Nanos,
}

impl Default for Reach {
    /// No late write seen.
    fn default() -> Reach {
        Reach {
            reach: Nanos(0),
            late_files: 0,
            across_chunks: 0,
            oldest_window: Nanos::MAX,
            seen_at: Nanos::MIN,
        }
    }
}

/// A file is in a snapshot because the server wrote it then, not because kompactor listed it
/// again or merged it: its id is one the server handed out after the snapshot before.
fn written_by_server(f: &EntryRc, first_new_id: FileId) -> bool {
    f.id >= first_new_id
        && !f.path.with_str(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("kompactor-"))
        })
}

/// Each table's writers' reach over the snapshots of the last [`HORIZON`] (in data time),
/// and what earlier runs saw in that time (`seen`: their files are merged by now).
pub fn writer_reach(node: &Node, seen: &SeenWriters) -> BTreeMap<TableKey, Reach> {
    // The newest data the node had at each snapshot: its "now" when the snapshot was taken.
    let mut now = Nanos::MIN;
    let mut at: Vec<Nanos> = Vec::with_capacity(node.snapshots.len());
    for s in &node.snapshots {
        now = now.max(s.doc.value.max_time);
        at.push(now);
    }
    let mut out: BTreeMap<TableKey, Reach> = BTreeMap::new();
    let since = Nanos(now.0.saturating_sub(HORIZON.0));
    let overlaps = Overlaps::of(node);
    let mut prev_next = FileId(0);
    for (s, &now_then) in node.snapshots.iter().zip(&at) {
        let first_new = prev_next;
        prev_next = prev_next.max(s.doc.value.next_file_id);
        if now_then < since {
            continue;
        }
        for (db, table, f) in s.doc.value.databases.iter() {
            if !written_by_server(f, first_new) {
                continue;
            }
            let key = TableKey { db, table };
            let Some(kind) = overlaps.of_file(key, f) else {
                continue;
            };
            let r = out.entry(key).or_default();
            r.late_files += 1;
            r.across_chunks += usize::from(kind == Overlap::OtherChunk);
            r.reach = r
                .reach
                .max(Nanos(now_then.0.saturating_sub(f.chunk_time.0)));
            r.oldest_window = r.oldest_window.min(f.chunk_time);
            r.seen_at = now;
        }
    }
    for (key, old) in seen.of_node(&node.id) {
        if old.seen_at < since {
            continue;
        }
        let r = out.entry(key).or_default();
        if old.reach > r.reach {
            r.reach = old.reach;
            r.seen_at = r.seen_at.max(old.seen_at);
        }
        r.late_files = r.late_files.max(old.late_files);
        r.across_chunks = r.across_chunks.max(old.across_chunks);
        r.oldest_window = r.oldest_window.min(old.oldest_window);
    }
    out
}

/// `.kompactor/writers.json`: the writers' reach each table showed, as the runs that merged
/// the late files saw it, so that the next runs still know it for [`HORIZON`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeenWriters {
    pub format_version: u32,
    /// Per node, per table (`db_id/table_id`).
    pub nodes: BTreeMap<String, BTreeMap<String, Reach>>,
}

impl SeenWriters {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(STATE_DIR).join("writers.json")
    }

    /// What earlier runs saw; nothing when they saw nothing (or the file cannot be read:
    /// it only ever widens the 10-minute windows, so losing it loses no data).
    pub fn load(data_dir: &Path) -> SeenWriters {
        std::fs::read(Self::path(data_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn of_node(&self, node: &str) -> Vec<(TableKey, Reach)> {
        let parse = |k: &str| -> Option<TableKey> {
            let (db, t) = k.split_once('/')?;
            Some(TableKey {
                db: DbId(db.parse().ok()?),
                table: TableId(t.parse().ok()?),
            })
        };
        self.nodes
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|(k, r)| Some((parse(k)?, *r)))
            .collect()
    }

    /// Records the reach of every table of `node` that showed late writes.
    pub fn remember(&mut self, node: &str, reach: impl Iterator<Item = (TableKey, Reach)>) {
        let tables = self.nodes.entry(node.to_string()).or_default();
        for (k, r) in reach.filter(|(_, r)| r.late_files > 0) {
            tables.insert(format!("{}/{}", k.db, k.table), r);
        }
    }

    /// Writes it (atomically) under `.kompactor/`.
    pub fn save(&mut self, data_dir: &Path) -> crate::error::Result<()> {
        self.format_version = crate::json::FORMAT_VERSION;
        let dir = data_dir.join(STATE_DIR);
        crate::durable::fsutil::atomic_write(
            &Self::path(data_dir),
            crate::json::to_string(self).as_bytes(),
            &dir,
            None,
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overlap {
    SameChunk,
    OtherChunk,
}

/// Each table's live files by chunk_time, and the ones whose data reaches past their own
/// gen1 window (merged wider than 10 minutes), to tell whether a file's data overlaps
/// another's: a server-written file can overlap only files of its own chunk_time, or a wide
/// one.
struct Overlaps<'a> {
    by_chunk: BTreeMap<TableKey, Vec<&'a EntryRc>>,
    /// Per table, the wide files by `min_time`, with the latest `max_time` up to each.
    wide: BTreeMap<TableKey, (Vec<&'a EntryRc>, Vec<Nanos>)>,
}

impl<'a> Overlaps<'a> {
    fn of(node: &'a Node) -> Overlaps<'a> {
        let mut by_chunk = BTreeMap::new();
        let mut wide = BTreeMap::new();
        for (k, files) in &node.live {
            let mut v: Vec<&EntryRc> = files.iter().collect();
            v.sort_by_key(|f| (f.chunk_time, f.min_time));
            let mut w: Vec<&EntryRc> = files
                .iter()
                .filter(|f| f.max_time.0 >= f.chunk_time.0.saturating_add(GEN1_SPAN.0))
                .collect();
            w.sort_by_key(|f| f.min_time);
            let reach: Vec<Nanos> = w
                .iter()
                .scan(Nanos::MIN, |m, f| {
                    *m = (*m).max(f.max_time);
                    Some(*m)
                })
                .collect();
            by_chunk.insert(*k, v);
            wide.insert(*k, (w, reach));
        }
        Overlaps { by_chunk, wide }
    }

    /// Whether another live file of the table overlaps `f` in time, and if a wide one of
    /// another chunk_time does.
    fn of_file(&self, key: TableKey, f: &EntryRc) -> Option<Overlap> {
        let overlaps =
            |g: &EntryRc| g.id != f.id && g.min_time <= f.max_time && g.max_time >= f.min_time;
        if let Some((wide, reach)) = self.wide.get(&key) {
            // Wide files starting by f's end, the last of which reaching f's start.
            let end = wide.partition_point(|g| g.min_time <= f.max_time);
            if end > 0 && reach[end - 1] >= f.min_time {
                let other = wide[..end]
                    .iter()
                    .any(|g| overlaps(g) && g.chunk_time != f.chunk_time);
                if other {
                    return Some(Overlap::OtherChunk);
                }
            }
        }
        let files = self.by_chunk.get(&key)?;
        let from = files.partition_point(|g| g.chunk_time < f.chunk_time);
        files[from..]
            .iter()
            .take_while(|g| g.chunk_time == f.chunk_time)
            .any(|g| overlaps(g))
            .then_some(Overlap::SameChunk)
    }
}

/// The server's default gen1 duration: a file whose data reaches further than this past its
/// `chunk_time` was merged wider by kompactor.
const GEN1_SPAN: Nanos = Nanos(600_000_000_000);
