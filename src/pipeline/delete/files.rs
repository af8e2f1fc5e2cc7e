//! A table's files as a delete sees them: live and hidden, each ranked as the server ranks
//! it, and the sets of overlapping files that are rewritten together.

use super::Selection;
use crate::error::Result;
use crate::format::ids::{FileId, FileIdMap, LoadPos, Nanos, TableKey};
use crate::format::model::EntryRc;
use crate::format::parquet::{read_footers, Footer};
use crate::pipeline::discover::{LiveFile, Node};
use crate::pipeline::merge::{precedence, TableSchema};
use std::collections::BTreeMap;
use std::path::Path;

/// A table's files, live and hidden, with the rank the server gives each.
pub(super) struct TableFiles<'a> {
    node: &'a Node,
    table: TableKey,
    /// Every file, and whether it is hidden.
    pub(super) all: Vec<(&'a EntryRc, bool)>,
    /// Where the server would load each file if it read every snapshot; only when some are
    /// hidden.
    unbounded: Option<FileIdMap<LoadPos>>,
}

impl<'a> TableFiles<'a> {
    pub(super) fn of(node: &'a Node, table: TableKey) -> Self {
        let all: Vec<(&EntryRc, bool)> = node
            .live
            .get(&table)
            .into_iter()
            .flatten()
            .map(|f| (f, false))
            .chain(
                node.hidden
                    .get(&table)
                    .into_iter()
                    .flatten()
                    .map(|f| (f, true)),
            )
            .collect();
        // Hidden files (included, or they would come back later) rank as the server would
        // rank them if it read everything; live ones as it does.
        let unbounded = all
            .iter()
            .any(|(_, h)| *h)
            .then(|| node.unbounded_load_positions());
        TableFiles {
            node,
            table,
            all,
            unbounded,
        }
    }

    pub(super) fn file(&self, f: &EntryRc, hidden: bool) -> LiveFile {
        let pos = match (&self.unbounded, hidden) {
            (Some(all), true) => all.get(f.id).copied(),
            _ => self.node.load_pos.get(f.id).copied(),
        };
        LiveFile {
            table: self.table,
            entry: EntryRc::clone(f),
            load_pos: pos.unwrap_or(LoadPos(u32::MAX)),
        }
    }

    /// The columns of every file together.
    pub(super) fn schema(&self, data_dir: &Path) -> Result<TableSchema> {
        let paths: Vec<_> = self
            .all
            .iter()
            .map(|(f, _)| f.path.under(data_dir))
            .collect();
        let footers = read_footers(&paths)?;
        let pairs: Vec<(FileId, &Footer)> = self
            .all
            .iter()
            .map(|(f, _)| f.id)
            .zip(footers.iter())
            .collect();
        TableSchema::union(&pairs)
    }

    /// The files that can hold a row of `sel`: the live ones ranked as the server ranks them,
    /// then (from the index returned) the hidden ones, apart, each set combined on its own as
    /// the server would see it.
    pub(super) fn ranked(&self, sel: &Selection) -> (Vec<LiveFile>, usize) {
        let (mut shown, mut unseen) = (Vec::new(), Vec::new());
        for (f, h) in &self.all {
            if sel.touches(f.min_time, f.max_time) {
                let set = if *h { &mut unseen } else { &mut shown };
                set.push(self.file(f, *h));
            }
        }
        let mut ranked: Vec<LiveFile> = precedence(&shown.iter().collect::<Vec<_>>())
            .into_iter()
            .cloned()
            .collect();
        let split = ranked.len();
        ranked.extend(
            precedence(&unseen.iter().collect::<Vec<_>>())
                .into_iter()
                .cloned(),
        );
        (ranked, split)
    }
}

/// The sets of files of one `chunk_time` (live or hidden) whose time ranges overlap, one
/// after another, that hold a file `touched` accepts.
pub(super) fn clusters<'a>(
    files: &[(&'a EntryRc, bool)],
    touched: impl Fn(&EntryRc) -> bool,
) -> Vec<Vec<(&'a EntryRc, bool)>> {
    // Live and hidden files apart: the server never combines them, and an output takes the
    // place of one of its inputs (visible or hidden as it was).
    let mut by_chunk: BTreeMap<(Nanos, bool), Vec<(&EntryRc, bool)>> = BTreeMap::new();
    for (f, h) in files {
        by_chunk
            .entry((f.chunk_time, *h))
            .or_default()
            .push((*f, *h));
    }
    let mut out = Vec::new();
    for (_, mut fs) in by_chunk {
        fs.sort_by_key(|(f, _)| (f.min_time, f.id));
        let mut current: Vec<(&EntryRc, bool)> = Vec::new();
        let mut end = Nanos::MIN;
        for (f, h) in fs {
            if !current.is_empty() && f.min_time > end {
                if current.iter().any(|(f, _)| touched(f)) {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
            end = if current.is_empty() {
                f.max_time
            } else {
                end.max(f.max_time)
            };
            current.push((f, h));
        }
        if current.iter().any(|(f, _)| touched(f)) {
            out.push(current);
        }
    }
    out
}
